"""Contract harness: AzureMLBackend through the real azure-ai-ml client against FakeAzureML."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from azure.ai.ml import MLClient

from adapters.compute.azureml import AzureMLBackend
from domain.jobs import CapacitySpec, JobSpec, JobState, Tier
from tests.contract.harnesses import FaultKind, _specs
from tests.fakes.azureml_server import FakeAzureML
from tests.fakes.credentials import StaticTokenCredential

SDK_RETRIES = 2
TOKEN = "hb-token-azureml-contract-0123456789"


def make_client(fake: FakeAzureML, *, retries: int = SDK_RETRIES) -> MLClient:
    """An MLClient aimed at the fake: AZUREML_DEV_URL_MFE is read when the client is built."""
    assert fake.ca_file is not None
    previous = os.environ.get("AZUREML_DEV_URL_MFE")
    os.environ["AZUREML_DEV_URL_MFE"] = fake.url
    try:
        return MLClient(
            StaticTokenCredential(),
            "00000000-0000-0000-0000-000000000000",
            "rg-waa",
            "ws-waa",
            connection_verify=fake.ca_file,
            enable_telemetry=False,
            retry_total=retries,
            retry_backoff_factor=0,
        )
    finally:
        if previous is None:
            os.environ.pop("AZUREML_DEV_URL_MFE", None)
        else:
            os.environ["AZUREML_DEV_URL_MFE"] = previous


def job_spec(job_name: str, **overrides: object) -> JobSpec:
    fields = {"tier": Tier.AZURE_ML, "heartbeat_token": TOKEN, **overrides}
    return _specs.job_spec(job_name, **fields)


@dataclass
class AzureMLHarness:
    fake: FakeAzureML
    backend: AzureMLBackend
    sdk_retries: int = SDK_RETRIES

    def job_spec(self, job_name: str) -> JobSpec:
        return job_spec(job_name)

    def capacity_spec(self) -> CapacitySpec:
        return CapacitySpec(
            evaluation_id="ev1", tier=Tier.AZURE_ML, vm_size="Standard_D4s_v5", max_nodes=4
        )

    def start(self, job_name: str) -> None:
        for status in ("Queued", "Preparing", "Running"):
            self.fake.set_job_status(job_name, status)

    def finish(self, job_name: str, state: JobState) -> None:
        statuses = {JobState.COMPLETED: "Completed", JobState.FAILED: "Failed"}
        self.fake.set_job_status(job_name, statuses[state])

    def fail_next(self, kind: FaultKind, count: int = 1) -> None:
        if kind == "transient":
            self.fake.fail_next("throttle", count=count, retry_after="0")
        else:
            self.fake.fail_next("quota", count=count)

    def jobs_named(self, job_name: str) -> int:
        return self.fake.job_creates.count(job_name)


@contextlib.contextmanager
def open_harness() -> Iterator[AzureMLHarness]:
    with FakeAzureML() as fake:
        backend = AzureMLBackend(make_client(fake), compute_name="waa-cluster")
        yield AzureMLHarness(fake=fake, backend=backend)
