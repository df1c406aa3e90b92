"""Contract harness: BatchBackend through the real azure-batch client against FakeBatch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential

from adapters.compute.batch import BatchBackend
from domain.jobs import CapacitySpec, JobSpec, JobState, Tier
from tests.contract.harnesses import FaultKind, _specs
from tests.fakes.batch_server import FakeBatch

SDK_RETRIES = 2
TOKEN = "hb-token-batch-contract-0123456789"


def make_client(
    fake: FakeBatch, *, retries: int = SDK_RETRIES, key: str | None = None
) -> BatchClient:
    return BatchClient(
        fake.url,
        AzureNamedKeyCredential(fake.account_name, key or fake.account_key),
        retry_total=retries,
        retry_backoff_factor=0,
    )


def job_spec(job_name: str, **overrides: object) -> JobSpec:
    fields = {"tier": Tier.BATCH, "heartbeat_token": TOKEN, **overrides}
    return _specs.job_spec(job_name, **fields)


def capacity_spec(**overrides: object) -> CapacitySpec:
    fields: dict[str, object] = {
        "evaluation_id": "ev1",
        "tier": Tier.BATCH,
        "vm_size": "Standard_D4s_v5",
        "max_nodes": 3,
        "image": "waaregistry.azurecr.io/winarena:1",
    }
    fields.update(overrides)
    return CapacitySpec.model_validate(fields)


@dataclass
class BatchHarness:
    fake: FakeBatch
    backend: BatchBackend
    sdk_retries: int = SDK_RETRIES

    def job_spec(self, job_name: str) -> JobSpec:
        return job_spec(job_name)

    def capacity_spec(self) -> CapacitySpec:
        return capacity_spec()

    def start(self, job_name: str) -> None:
        self.fake.start_task(job_name)

    def finish(self, job_name: str, state: JobState) -> None:
        self.fake.complete_task(job_name, {JobState.COMPLETED: 0, JobState.FAILED: 1}[state])

    def fail_next(self, kind: FaultKind, count: int = 1) -> None:
        if kind == "transient":
            self.fake.fail_next("throttle", count=count, retry_after="0")
        else:
            self.fake.fail_next("auth", count=count)

    def jobs_named(self, job_name: str) -> int:
        return self.fake.task_creates.count(job_name)


@contextlib.contextmanager
def open_harness() -> Iterator[BatchHarness]:
    with FakeBatch() as fake:
        yield BatchHarness(fake=fake, backend=BatchBackend(make_client(fake), pool_id="waa-pool"))
