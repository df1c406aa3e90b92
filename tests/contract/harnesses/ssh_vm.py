"""Contract harness: SshVmBackend through paramiko against a real sshd on loopback, whose
sessions find the stand-in `docker` (tests/support/fake_docker.py) first on their PATH."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.compute.ssh_vm import SshVmBackend, VmHost, load_private_key
from domain.jobs import CapacitySpec, JobSpec, JobState, Tier
from tests.contract.harnesses import FaultKind
from tests.support.sshd import Sshd, SshdUnavailable, start_sshd

TOKEN = "hb-token-ssh-contract-0123456789"


@dataclass
class SshVmHarness:
    sshd: Sshd
    backend: SshVmBackend
    sdk_retries: int = 0  # paramiko does not retry; the orchestration's retry policy does

    def job_spec(self, job_name: str) -> JobSpec:
        return JobSpec(
            job_name=job_name,
            evaluation_id="ev1",
            shard_index=0,
            attempt=1,
            tier=Tier.VM,
            task_ids=["t1", "t2"],
            vm_size="Standard_D4s_v5",
            image="windowsarena/winarena:latest",
            timeout_seconds=7200,
            heartbeat_url="https://app.example/api/heartbeats",
            heartbeat_token=TOKEN,
            environment={
                "WAA_TASK_IDS": "t1,t2",
                "WAA_JOB_NAME": job_name,
                "WAA_HEARTBEAT_URL": "https://app.example/api/heartbeats",
            },
        )

    def capacity_spec(self) -> CapacitySpec:
        return CapacitySpec(
            evaluation_id="ev1", tier=Tier.VM, vm_size="Standard_D4s_v5", max_nodes=1
        )

    def start(self, job_name: str) -> None:
        self.sshd.set_container_state(job_name, Status="running")

    def finish(self, job_name: str, state: JobState) -> None:
        code = {JobState.COMPLETED: 0, JobState.FAILED: 1}[state]
        self.sshd.set_container_state(job_name, Status="exited", ExitCode=code)

    def fail_next(self, kind: FaultKind, count: int = 1) -> None:
        self.sshd.fail_next_runs(kind, count)

    def jobs_named(self, job_name: str) -> int:
        return self.sshd.containers_created().count(job_name)


@contextlib.contextmanager
def open_harness() -> Iterator[SshVmHarness]:
    with tempfile.TemporaryDirectory(prefix="ssh-contract-") as tmp:
        workdir = Path(tmp)
        try:
            sshd = start_sshd(workdir / "sshd")
        except SshdUnavailable as err:
            pytest.skip(str(err))
        try:
            # Docker's "created" until the harness starts it, as the contract expects a job
            # not to be RUNNING right after submission.
            sshd.hold_new_containers_created()
            vm = VmHost(host="127.0.0.1", port=sshd.port, user=sshd.user, host_key=sshd.host_key)
            backend = SshVmBackend(
                [vm],
                key=load_private_key(sshd.user_private_key),
                kvm_device="/dev/null",  # a character device every machine has
                golden_image_dir=str(workdir),  # a folder that exists
                runner_remote_dir=str(workdir / "runner"),
                connect_timeout=5,
            )
            yield SshVmHarness(sshd=sshd, backend=backend)
        finally:
            sshd.stop()
