"""The SSH VM tier against a real sshd on loopback with a stand-in `docker` on its PATH."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import Any

import paramiko
import pytest

from adapters.compute.base import ComputeBackend
from adapters.compute.ssh_vm import RUNNER_FILE, SshVmBackend, VmHost, load_private_key
from adapters.settings import AppSettings
from domain.jobs import (
    CapacitySpec,
    ContainerOptions,
    FailureKind,
    JobNotFoundError,
    JobSpec,
    JobState,
    PermanentTierError,
    Tier,
    TransientBackendError,
)
from tests.support.sshd import Sshd, generate_public_key

pytestmark = pytest.mark.sshd

TOKEN = "tok-3f9a1c0e5b7d2a4c6e8f0a1b2c3d4e5f"


def _vm(sshd: Sshd, host_key: str | None = None) -> VmHost:
    return VmHost(
        host="127.0.0.1", port=sshd.port, user=sshd.user, host_key=host_key or sshd.host_key
    )


def _backend(sshd: Sshd, tmp_path: Path, pool: list[VmHost] | None = None, **kw) -> SshVmBackend:
    # /dev/null stands in for /dev/kvm: a character device present on every test machine.
    kw.setdefault("kvm_device", "/dev/null")
    # The golden image folder on the "VM" (a real folder: the health check looks for it).
    golden = tmp_path / "golden"
    golden.mkdir(exist_ok=True)
    kw.setdefault("golden_image_dir", str(golden))
    return SshVmBackend(
        pool or [_vm(sshd)],
        key=load_private_key(sshd.user_private_key),
        runner_remote_dir=str(tmp_path / "remote-runner"),
        connect_timeout=5,
        **kw,
    )


def _spec(name: str = "eval1-s0-a1", task_ids: list[str] | None = None, **kw) -> JobSpec:
    tasks = task_ids or ["notepad-1", "chrome-2"]
    env = {
        "WAA_TASK_IDS": ",".join(tasks),
        "WAA_JOB_NAME": name,
        "WAA_HEARTBEAT_URL": "http://127.0.0.1:7071/api/heartbeats",
        "WAA_MAX_STEPS": "15",
        "WAA_AGENT": "navi",
        "WAA_MODEL": "gpt-4o",
    }
    fields = {
        "job_name": name,
        "evaluation_id": "eval1",
        "shard_index": 0,
        "attempt": 1,
        "tier": Tier.VM,
        "task_ids": tasks,
        "vm_size": "Standard_D4s_v5",
        "image": "windowsarena/winarena:latest",
        "timeout_seconds": 7200,
        "heartbeat_url": "http://127.0.0.1:7071/api/heartbeats",
        "heartbeat_token": TOKEN,
        "environment": env,
    }
    fields.update(kw)
    return JobSpec(**fields)


def _capacity(**kw) -> CapacitySpec:
    fields = {
        "evaluation_id": "eval1",
        "tier": Tier.VM,
        "vm_size": "Standard_D4s_v5",
        "max_nodes": 1,
    }
    fields.update(kw)
    return CapacitySpec(**fields)


def _runs(sshd: Sshd) -> list[list[str]]:
    return [c for c in sshd.docker_calls() if c[:1] == ["run"]]


def test_is_a_compute_backend(vm_sshd: Sshd, tmp_path: Path) -> None:
    assert isinstance(_backend(vm_sshd, tmp_path), ComputeBackend)


def test_submit_runs_exact_quoted_argv_and_nothing_is_interpreted(
    vm_sshd: Sshd, tmp_path: Path
) -> None:
    pwned = tmp_path / "pwned"
    nasty = (
        f"a;b$(touch {pwned})'\"`touch {pwned}`|touch {pwned}&& touch {pwned} >x <y * ? ~ "
        "\\ # {} [] ! %s\n$HOME"
    )
    backend = _backend(vm_sshd, tmp_path)
    result = backend.submit(_spec(task_ids=[nasty, "ok-1"]))

    assert result.created is True
    assert result.job_name == "eval1-s0-a1"
    assert not pwned.exists()
    [run] = _runs(vm_sshd)
    runner_dir = str(tmp_path / "remote-runner")
    assert run == [
        "run", "-d", "--name", "eval1-s0-a1",
        "--label", "waa.managed=1", "--label", "waa.job=eval1-s0-a1",
        "--label", "waa.evaluation=eval1", "--label", "waa.shard=0", "--label", "waa.attempt=1",
        "--device", "/dev/null:/dev/kvm",
        "--cap-add", "NET_ADMIN", "--shm-size", "16g", "--stop-timeout", "120",
        # The golden image read-only, and no shared writable /storage: the runner copies it.
        "-v", f"{tmp_path / 'golden'}:/golden:ro",
        "-v", f"{runner_dir}:/opt/waa-shard-runner:ro",
        "-v", f"{runner_dir}/secrets/eval1/eval1-s0-a1.env:/run/waa/secrets.env:ro",
        "-e", f"WAA_TASK_IDS={nasty},ok-1",
        "-e", "WAA_JOB_NAME=eval1-s0-a1",
        "-e", "WAA_HEARTBEAT_URL=http://127.0.0.1:7071/api/heartbeats",
        "-e", "WAA_MAX_STEPS=15",
        "-e", "WAA_AGENT=navi",
        "-e", "WAA_MODEL=gpt-4o",
        "-e", "WAA_STORAGE_SOURCE=/golden",
        "-e", "WAA_STORAGE_DIR=/storage",
        "-e", "WAA_SECRETS_FILE=/run/waa/secrets.env",
        "--entrypoint", "timeout", "windowsarena/winarena:latest",
        "--kill-after=60", "7200", "python", "/opt/waa-shard-runner/runner.py",
    ]  # fmt: skip
    # The runner the container mounts is this repository's single-file shard runner.
    assert (tmp_path / "remote-runner" / "runner.py").read_bytes() == RUNNER_FILE.read_bytes()


def test_default_device_is_dev_kvm(vm_sshd: Sshd, tmp_path: Path) -> None:
    argv = _backend(vm_sshd, tmp_path, kvm_device="/dev/kvm")._docker_run_argv(
        _spec(), "/home/u/.waa-shard-runner", "/home/u/.waa-shard-runner/secrets/e/j.env"
    )
    assert argv[argv.index("--device") + 1] == "/dev/kvm"


def test_submit_is_idempotent_on_the_job_name(vm_sshd: Sshd, tmp_path: Path) -> None:
    backend = _backend(vm_sshd, tmp_path)
    first = backend.submit(_spec())
    # A fresh backend (another app instance) finds the container by asking the VMs.
    second = _backend(vm_sshd, tmp_path).submit(_spec())

    assert first.created is True
    assert second.created is False
    assert second.backend_job_id == first.backend_job_id
    assert len(_runs(vm_sshd)) == 1


def test_one_job_per_vm_busy_pool_is_transient(vm_sshd: Sshd, tmp_path: Path) -> None:
    backend = _backend(vm_sshd, tmp_path)
    backend.submit(_spec("eval1-s0-a1"))

    with pytest.raises(TransientBackendError) as err:
        backend.submit(_spec("eval1-s1-a1", shard_index=1))
    assert err.value.kind is FailureKind.TRANSIENT
    assert len(_runs(vm_sshd)) == 1

    vm_sshd.set_container_state("eval1-s0-a1", Status="exited", ExitCode=0)
    assert backend.submit(_spec("eval1-s1-a1", shard_index=1)).created is True


def test_status_maps_docker_states(vm_sshd: Sshd, tmp_path: Path) -> None:
    backend = _backend(vm_sshd, tmp_path)
    backend.submit(_spec())
    name = "eval1-s0-a1"

    assert backend.status(name).state is JobState.RUNNING

    vm_sshd.set_container_state(name, Status="created")
    assert backend.status(name).state is JobState.PREPARING

    vm_sshd.set_container_state(name, Status="exited", ExitCode=0)
    done = backend.status(name)
    assert (done.state, done.failure_kind) == (JobState.COMPLETED, None)

    vm_sshd.set_container_state(name, Status="exited", ExitCode=124)
    timed_out = backend.status(name)
    assert timed_out.state is JobState.FAILED
    assert timed_out.failure_kind is FailureKind.JOB_FAILED
    assert "timeout" in timed_out.detail
    assert timed_out.raw_status == "exited (exit 124)"

    vm_sshd.set_container_state(name, Status="exited", ExitCode=3)
    no_kvm = backend.status(name)
    assert no_kvm.failure_kind is FailureKind.PERMANENT_FOR_TIER

    vm_sshd.set_container_state(name, Status="dead", ExitCode=1, Error="oci runtime error")
    dead = backend.status(name)
    assert dead.state is JobState.FAILED
    assert "oci runtime error" in dead.detail


def test_status_of_unknown_job_raises_not_found(vm_sshd: Sshd, tmp_path: Path) -> None:
    with pytest.raises(JobNotFoundError):
        _backend(vm_sshd, tmp_path).status("never-submitted")


def test_cancel_removes_and_is_idempotent(vm_sshd: Sshd, tmp_path: Path) -> None:
    backend = _backend(vm_sshd, tmp_path)
    backend.submit(_spec())

    backend.cancel("eval1-s0-a1")
    backend.cancel("eval1-s0-a1")
    backend.cancel("never-submitted")

    assert vm_sshd.docker_calls().count(["rm", "-f", "eval1-s0-a1"]) == 1
    assert not (vm_sshd.docker_state / "containers" / "eval1-s0-a1.json").exists()
    # Any app instance sees the cancellation (a tombstone on the VM), not a vanished job.
    cancelled = _backend(vm_sshd, tmp_path).status("eval1-s0-a1")
    assert cancelled.state is JobState.CANCELLED
    with pytest.raises(JobNotFoundError):
        backend.status("never-submitted")
    # The VM is free again.
    assert backend.submit(_spec("eval1-s0-a2", attempt=2)).created is True


def test_cancel_leaves_an_ended_job_readable(vm_sshd: Sshd, tmp_path: Path) -> None:
    backend = _backend(vm_sshd, tmp_path)
    backend.submit(_spec())
    vm_sshd.set_container_state("eval1-s0-a1", Status="exited", ExitCode=0)

    backend.cancel("eval1-s0-a1")

    assert backend.status("eval1-s0-a1").state is JobState.COMPLETED
    assert not any(c[:1] == ["rm"] for c in vm_sshd.docker_calls())


def test_a_created_container_keeps_its_vm_busy(vm_sshd: Sshd, tmp_path: Path) -> None:
    vm_sshd.hold_new_containers_created()
    backend = _backend(vm_sshd, tmp_path)
    backend.submit(_spec())
    assert backend.status("eval1-s0-a1").state is JobState.PREPARING
    with pytest.raises(TransientBackendError):
        backend.submit(_spec("eval1-s1-a1", shard_index=1))


def test_registry_rate_limit_is_transient(vm_sshd: Sshd, tmp_path: Path) -> None:
    vm_sshd.fail_next_runs("transient")
    backend = _backend(vm_sshd, tmp_path)
    with pytest.raises(TransientBackendError, match="toomanyrequests"):
        backend.submit(_spec())
    assert backend.submit(_spec()).created is True


def test_wrong_host_key_is_refused_and_the_vm_leaves_the_pool(
    vm_sshd: Sshd, tmp_path: Path
) -> None:
    wrong = generate_public_key(tmp_path, "other_host_key")
    backend = _backend(vm_sshd, tmp_path, pool=[_vm(vm_sshd, host_key=wrong)])

    with pytest.raises(PermanentTierError) as err:
        backend.ensure_capacity(_capacity())
    assert "host key mismatch" in str(err.value)
    assert _vm(vm_sshd).label in backend.down_vms()

    with pytest.raises(PermanentTierError):
        backend.submit(_spec())
    # Refused before any command ran on the VM.
    assert vm_sshd.docker_calls() == []


def test_unknown_key_type_is_not_auto_accepted(vm_sshd: Sshd, tmp_path: Path) -> None:
    # The configured key is of another type than the server's ed25519 key: paramiko must not
    # fall back to accepting whatever key the server offers.
    from paramiko import ECDSAKey

    ecdsa = ECDSAKey.generate()
    backend = _backend(
        vm_sshd, tmp_path, pool=[_vm(vm_sshd, host_key=f"{ecdsa.get_name()} {ecdsa.get_base64()}")]
    )
    with pytest.raises(PermanentTierError):
        backend.ensure_capacity(_capacity())
    assert vm_sshd.docker_calls() == []


def test_bad_vm_is_skipped_and_good_vm_used(vm_sshd: Sshd, tmp_path: Path) -> None:
    wrong = generate_public_key(tmp_path, "other_host_key")
    bad = VmHost(host="localhost", port=vm_sshd.port, user=vm_sshd.user, host_key=wrong)
    backend = _backend(vm_sshd, tmp_path, pool=[bad, _vm(vm_sshd)])

    report = backend.ensure_capacity(_capacity(max_nodes=2))
    assert report.tier is Tier.VM
    assert "1 of 2 VMs usable" in report.detail
    assert "host key mismatch" in report.detail

    result = backend.submit(_spec())
    assert result.created is True
    assert result.backend_job_id.startswith(_vm(vm_sshd).label)


def test_failed_checks_leave_the_pool_until_they_pass_again(vm_sshd: Sshd, tmp_path: Path) -> None:
    backend = _backend(vm_sshd, tmp_path)
    vm_sshd.set_daemon_down(True)
    with pytest.raises(PermanentTierError) as err:
        backend.ensure_capacity(_capacity())
    assert "docker does not answer" in str(err.value)
    assert _vm(vm_sshd).label in backend.down_vms()

    vm_sshd.set_daemon_down(False)
    assert "1 of 1 VMs usable" in backend.ensure_capacity(_capacity()).detail
    assert backend.down_vms() == {}


def test_a_failed_vm_rests_before_submit_tries_it_again(vm_sshd: Sshd, tmp_path: Path) -> None:
    now = [1000.0]
    backend = _backend(vm_sshd, tmp_path, recheck_after_seconds=120, clock=lambda: now[0])
    vm_sshd.set_daemon_down(True)
    with pytest.raises(PermanentTierError):
        backend.submit(_spec())
    vm_sshd.set_daemon_down(False)
    calls = len(vm_sshd.docker_calls())

    now[0] += 60
    with pytest.raises(PermanentTierError, match="Cannot connect to the Docker daemon"):
        backend.submit(_spec())
    assert len(vm_sshd.docker_calls()) == calls  # not even contacted

    now[0] += 61
    assert backend.submit(_spec()).created is True
    assert backend.down_vms() == {}


def test_missing_kvm_makes_the_vm_unusable(vm_sshd: Sshd, tmp_path: Path) -> None:
    backend = _backend(vm_sshd, tmp_path, kvm_device=str(tmp_path / "no-kvm"))
    with pytest.raises(PermanentTierError) as err:
        backend.ensure_capacity(_capacity())
    assert "nested virtualization" in str(err.value)
    with pytest.raises(PermanentTierError):
        backend.submit(_spec())
    assert _runs(vm_sshd) == []


def test_ensure_capacity_prefetches_a_missing_image(vm_sshd: Sshd, tmp_path: Path) -> None:
    report = _backend(vm_sshd, tmp_path).ensure_capacity(_capacity(image="registry/waa:1"))
    assert "pulling image registry/waa:1" in report.detail
    # The pull runs detached on the VM; it lands shortly after.
    pulled = vm_sshd.docker_state / "pulled"
    for _ in range(200):
        if pulled.exists() and pulled.read_text():
            break
        import time

        time.sleep(0.05)
    assert pulled.read_text() == "registry/waa:1"


def test_unreachable_vm_is_permanent_when_alone(vm_sshd: Sshd, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    vm = VmHost(host="127.0.0.1", port=closed_port, user="root", host_key=vm_sshd.host_key)
    backend = _backend(vm_sshd, tmp_path, pool=[vm])
    with pytest.raises(PermanentTierError) as err:
        backend.submit(_spec())
    assert "SSH connection failed" in str(err.value)


def test_invalid_image_is_permanent(vm_sshd: Sshd, tmp_path: Path) -> None:
    with pytest.raises(PermanentTierError) as err:
        _backend(vm_sshd, tmp_path).submit(_spec(image="nobody/doesnotexist:1"))
    assert err.value.code == "InvalidImage"


def test_slow_docker_run_is_transient_and_keeps_the_vm(vm_sshd: Sshd, tmp_path: Path) -> None:
    backend = _backend(vm_sshd, tmp_path, run_timeout=0.5)
    with pytest.raises(TransientBackendError) as err:
        backend.submit(_spec(image="example/slowpull:1"))
    assert err.value.code == "RunTimeout"
    assert TOKEN not in str(err.value)
    assert backend.down_vms() == {}


def test_token_never_in_errors_or_logs(
    vm_sshd: Sshd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend = _backend(vm_sshd, tmp_path)
    # The stand-in docker echoes its whole argv into its error output: there is no token in it.
    with pytest.raises(TransientBackendError) as err:
        backend.submit(_spec(image="example/echoargs:1"))
    assert "docker run failed" in str(err.value)
    assert TOKEN not in str(err.value) and "WAA_HEARTBEAT_TOKEN" not in str(err.value)
    backend.submit(_spec())
    assert TOKEN not in caplog.text
    # It reached the container through its secrets file, never a command line.
    secrets = tmp_path / "remote-runner" / "secrets" / "eval1" / "eval1-s0-a1.env"
    assert secrets.read_text() == f"WAA_HEARTBEAT_TOKEN={TOKEN}\n"
    assert TOKEN not in json.dumps(vm_sshd.docker_calls())


def test_each_attempt_gets_a_private_secrets_file_and_no_token_on_any_command_line(
    vm_sshd: Sshd, tmp_path: Path
) -> None:
    backend = _backend(vm_sshd, tmp_path)
    spec = _spec(
        secrets_vault_url="https://kv-waa.vault.azure.net",
        secret_env={"OPENAI_API_KEY": "openai-api-key"},
        environment={**_spec().environment, "WAA_HEARTBEAT_TOKEN": TOKEN},
    )
    backend.submit(spec)
    secrets = tmp_path / "remote-runner" / "secrets" / "eval1" / "eval1-s0-a1.env"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets.parent.stat().st_mode) == 0o700
    assert secrets.read_text() == f"WAA_HEARTBEAT_TOKEN={TOKEN}\n"
    [run] = _runs(vm_sshd)
    assert f"{secrets}:/run/waa/secrets.env:ro" in run
    env = [run[i + 1] for i, a in enumerate(run) if a == "-e"]
    # Names of the Key Vault and its secrets travel; values never.
    assert "WAA_SECRETS_VAULT_URL=https://kv-waa.vault.azure.net" in env
    assert "WAA_SECRETS=OPENAI_API_KEY=openai-api-key" in env
    # Neither the fake docker's recorded argv nor any command the SSH server ran shows it.
    assert TOKEN not in json.dumps(vm_sshd.docker_calls())
    assert TOKEN not in vm_sshd.log.read_text()
    # A second attempt gets its own file; ending the evaluation removes them all.
    backend.cancel("eval1-s0-a1")
    backend.submit(_spec("eval1-s0-a2", attempt=2))
    assert (secrets.parent / "eval1-s0-a2.env").exists()
    backend.end_evaluation("eval1")
    assert not secrets.parent.exists()
    backend.end_evaluation("eval1")  # idempotent


def test_every_attempt_mounts_the_golden_image_read_only_and_no_shared_storage(
    vm_sshd: Sshd, tmp_path: Path
) -> None:
    golden = tmp_path / "waa-golden"
    golden.mkdir()
    backend = _backend(
        vm_sshd,
        tmp_path,
        golden_image_dir=str(golden),
        container=ContainerOptions(cap_add=("NET_ADMIN", "SYS_NICE"), shm_size="8g"),
    )
    backend.submit(_spec())
    backend.cancel("eval1-s0-a1")
    backend.submit(_spec("eval1-s0-a2", attempt=2))
    for run in _runs(vm_sshd):
        volumes = [run[i + 1] for i, a in enumerate(run) if a == "-v"]
        assert f"{golden}:/golden:ro" in volumes
        assert all(":/storage" not in v for v in volumes)  # each copy is the container's own
        assert all(v.endswith(":ro") for v in volumes)
        assert run[run.index("--shm-size") + 1] == "8g"
        caps = [run[i + 1] for i, a in enumerate(run) if a == "--cap-add"]
        assert caps == ["NET_ADMIN", "SYS_NICE"]


def test_from_settings(vm_sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("HEARTBEAT_SECRET", "0123456789abcdef0123")
    monkeypatch.setenv(
        "VM_POOL",
        json.dumps(
            [
                {
                    "host": "127.0.0.1",
                    "port": vm_sshd.port,
                    "user": vm_sshd.user,
                    "host_key": vm_sshd.host_key,
                }
            ]
        ),
    )
    monkeypatch.setenv("VM_SSH_PRIVATE_KEY", vm_sshd.user_private_key)
    golden = tmp_path / "golden-from-settings"
    golden.mkdir()
    monkeypatch.setenv("VM_GOLDEN_IMAGE_DIR", str(golden))
    monkeypatch.setenv("WAA_CONTAINER_SHM_SIZE", "24g")
    settings = AppSettings()  # type: ignore[call-arg]
    assert "PRIVATE KEY" not in repr(settings)

    backend = SshVmBackend.from_settings(
        settings, kvm_device="/dev/null", runner_remote_dir=str(tmp_path / "r")
    )
    assert "1 of 1 VMs usable" in backend.ensure_capacity(_capacity()).detail
    backend.submit(_spec())
    [run] = _runs(vm_sshd)
    assert f"{golden}:/golden:ro" in run
    assert run[run.index("--shm-size") + 1] == "24g"


def test_from_settings_without_pool_is_a_permanent_tier_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("HEARTBEAT_SECRET", "0123456789abcdef0123")
    monkeypatch.delenv("VM_POOL", raising=False)
    with pytest.raises(PermanentTierError, match="VM_POOL"):
        SshVmBackend.from_settings(AppSettings())  # type: ignore[call-arg]


def test_unreadable_private_key_message_has_no_key_material() -> None:
    with pytest.raises(ValueError) as err:
        load_private_key("-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n")
    assert "c2VjcmV0" not in str(err.value)


# --- capacity that takes minutes, and bounded calls ----------------------------------------------
def _wait_ready(backend: SshVmBackend, spec: CapacitySpec) -> bool:
    # The pull runs detached on the VM and lands shortly after: look a bounded number of times.
    import time

    for _ in range(200):
        if backend.capacity_status(spec).ready:
            return True
        time.sleep(0.05)
    return False


def test_a_missing_image_is_pulled_detached_and_polled(vm_sshd: Sshd, tmp_path: Path) -> None:
    backend = _backend(vm_sshd, tmp_path)
    spec = _capacity(image="registry/waa:2")
    report = backend.ensure_capacity(spec)
    # Returned at once: no call waits for a 5 GB download.
    assert not report.ready and "pulling image registry/waa:2" in report.detail
    assert _wait_ready(backend, spec)
    # Once there, ensuring again finds it present.
    again = backend.ensure_capacity(spec)
    assert again.ready and "image registry/waa:2 present" in again.detail


def test_a_vm_that_never_started_the_pull_gets_it_started(vm_sshd: Sshd, tmp_path: Path) -> None:
    # No ensure_capacity on this VM (it was down then): the status check starts the pull.
    backend = _backend(vm_sshd, tmp_path)
    spec = _capacity(image="registry/waa:3")
    assert not backend.capacity_status(spec).ready
    assert _wait_ready(backend, spec)


def test_an_image_that_cannot_be_pulled_is_permanent_for_the_tier(
    vm_sshd: Sshd, tmp_path: Path
) -> None:
    import time

    backend = _backend(vm_sshd, tmp_path)
    spec = _capacity(image="nobody/doesnotexist:1")
    assert not backend.ensure_capacity(spec).ready
    caught: PermanentTierError | None = None
    for _ in range(200):  # until the detached pull has failed
        try:
            backend.capacity_status(spec)
        except PermanentTierError as err:
            caught = err
            break
        time.sleep(0.05)
    assert caught is not None and caught.code == "InvalidImage"
    assert "pull access denied" in str(caught)


def test_a_pool_of_silent_vms_ends_the_call_within_its_budget(
    vm_sshd: Sshd, tmp_path: Path
) -> None:
    import socket

    # Listening sockets that never answer: TCP connects, the SSH banner never comes. Walking
    # all six VMs would end in "no usable VM" (permanent) after up to 6 x 3 x connect_timeout;
    # the call's budget ends it first, as transient: nothing is known about the VMs not tried.
    silent = []
    for _ in range(6):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        silent.append(s)
    try:
        pool = [
            VmHost(
                host="127.0.0.1", port=s.getsockname()[1], user="root", host_key=vm_sshd.host_key
            )
            for s in silent
        ]
        backend = SshVmBackend(
            pool,
            key=load_private_key(vm_sshd.user_private_key),
            runner_remote_dir=str(tmp_path / "remote-runner"),
            connect_timeout=0.5,
            call_budget_seconds=2.0,
        )
        with pytest.raises(TransientBackendError) as err:
            backend.submit(_spec())
        assert err.value.code == "CallBudget"
        with pytest.raises(TransientBackendError) as err:
            backend.capacity_status(_capacity(image="registry/waa:1"))
        assert err.value.code == "CallBudget" and "not checked" in str(err.value)
    finally:
        for s in silent:
            s.close()


def test_a_vm_without_the_golden_image_folder_leaves_the_pool_naming_it(
    vm_sshd: Sshd, tmp_path: Path
) -> None:
    backend = _backend(vm_sshd, tmp_path, golden_image_dir=str(tmp_path / "not-there"))
    with pytest.raises(PermanentTierError) as err:
        backend.ensure_capacity(_capacity())
    assert "not-there is missing" in str(err.value) and "VM_GOLDEN_IMAGE_DIR" in str(err.value)
    with pytest.raises(PermanentTierError):
        backend.submit(_spec())
    assert _runs(vm_sshd) == []


def test_no_command_sent_over_ssh_carries_the_token(
    vm_sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    original = paramiko.SSHClient.exec_command

    def spy(self: paramiko.SSHClient, command: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(command)
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(paramiko.SSHClient, "exec_command", spy)
    backend = _backend(vm_sshd, tmp_path)
    backend.ensure_capacity(_capacity())
    backend.submit(_spec())
    backend.status("eval1-s0-a1")
    backend.cancel("eval1-s0-a1")
    backend.end_evaluation("eval1")
    assert any("docker run" in c for c in sent)
    assert all(TOKEN not in c for c in sent)
