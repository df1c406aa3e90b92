"""The VM tier: plain VMs with Docker and nested virtualization, driven over SSH (paramiko).

Each VM runs at most one WAA container at a time. A job is a container named after the job,
started with `docker run -d`, whose command is the shard runner wrapped in `timeout`: the kill
switch that stops the job even if the control plane is gone. The runner is a single stdlib file
(`shard_runner/runner.py`) uploaded to the VM over SFTP and mounted read-only, so the stock
`windowsarena/winarena` image works unchanged.

Safety rules this module keeps:
- Host keys come from configuration and are never learned: paramiko's `RejectPolicy` refuses an
  unknown key, and a different key raises `BadHostKeyException`; that VM leaves the pool.
- Every remote command is an argv list joined with `shlex.join`, so no argument (task ids,
  environment values) is ever interpreted by the remote shell.
- The heartbeat token never appears on a command line (where `ps` on the VM and Docker's
  container config would show it) nor in a log or an error message: each attempt gets a 0600
  file written over SFTP (WAA_HEARTBEAT_TOKEN=...), mounted read-only into its container, whose
  path the runner finds in WAA_SECRETS_FILE (CONTRACT.md).
- The golden image (WAA's prepared `storage` folder) is a host folder mounted read-only at
  /golden; the runner copies it to the container's own writable /storage, so every attempt
  starts from a pristine disk and nothing writes back.
- Every call ends within bounds.SSH_CALL_SECONDS whatever the pool does: paramiko's connect,
  banner, auth and channel timeouts and a channel timeout per command bound each step, a
  deadline per call bounds the sequence of steps over the pool, and `docker run` runs under
  GNU `timeout` on the VM (an image pull can print progress for much longer than any channel
  timeout notices). The image is prefetched by a detached `docker pull` whose progress
  `capacity_status` reads, so no call waits for a 5 GB download.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shlex
import threading
import time
from base64 import b64decode
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import paramiko

from adapters.compute import runner_exit_codes
from adapters.compute.golden import CONTAINER_GOLDEN_DIR, CONTAINER_STORAGE_DIR
from adapters.logs import redact
from adapters.settings import AppSettings, VmHost
from domain import bounds
from domain.job_state import from_docker
from domain.jobs import (
    CapacityReport,
    CapacitySpec,
    ContainerOptions,
    FailureKind,
    JobNotFoundError,
    JobSpec,
    JobState,
    JobStatus,
    PermanentTierError,
    SubmitResult,
    Tier,
    TransientBackendError,
)

__all__ = ["SshVmBackend", "VmHost", "load_private_key", "parse_host_key"]

log = logging.getLogger(__name__)

RUNNER_FILE = Path(__file__).resolve().parents[2] / "shard_runner" / "runner.py"
# Relative to the SSH user's home directory on the VM.
REMOTE_RUNNER_DIR = ".waa-shard-runner"
CONTAINER_RUNNER_DIR = "/opt/waa-shard-runner"
MANAGED_LABEL = "waa.managed=1"
# Besides the container options (ContainerOptions: devices, capabilities, shared memory): a
# graceful Windows shutdown on stop (see the WAA repository's run scripts).
DEFAULT_DOCKER_ARGS: tuple[str, ...] = ("--stop-timeout", "120")
# The prepared Windows golden image lives here on each VM (app setting VM_GOLDEN_IMAGE_DIR).
DEFAULT_GOLDEN_IMAGE_DIR = "/srv/waa/storage"
# Each attempt's secrets file on the VM: <runner dir>/secrets/<evaluation>/<job>.env, and where
# its container sees it.
SECRETS_DIR = "secrets"
CONTAINER_SECRETS_FILE = "/run/waa/secrets.env"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
# Docker container names: the job names of the control plane always fit.
_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
# Exit code of GNU `timeout` when it stopped the command (137 when it had to SIGKILL).
_TIMEOUT_EXIT_CODES = {124, 137}

_INVALID_IMAGE = re.compile(
    r"pull access denied|manifest unknown|not found: manifest|invalid reference format|"
    r"repository does not exist|unauthorized",
    re.IGNORECASE,
)
_NAME_CONFLICT = re.compile(r"Conflict\. The container name", re.IGNORECASE)
# A VM is busy while one of our containers exists and has not ended.
_BUSY_STATUSES = ("created", "running", "restarting", "paused")
_BUSY_ARGV = [
    "docker", "ps", "-a", "--filter", f"label={MANAGED_LABEL}",
    *[arg for st in _BUSY_STATUSES for arg in ("--filter", f"status={st}")],
    "--format", "{{.Names}}",
]  # fmt: skip
_CHECK_SCRIPT = (
    "v=$(docker version --format '{{.Server.Version}}' 2>&1) || { echo \"$v\" >&2; exit 10; }\n"
    'test -c "$1" || exit 11\n'
    'test -z "$2" || test -d "$2" || exit 12\n'
    'echo "$v"\n'
)
_NO_SUCH = re.compile(r"no such (container|object)", re.IGNORECASE)
# $1: the image, $2: its state file. Marks the pull as under way, then pulls detached; the
# pull's exit status replaces the mark when it ends, its output goes to "$2.log". Constant
# text: the image and the path arrive as arguments, never spliced into the script.
_PREFETCH_SCRIPT = (
    'mkdir -p "$(dirname "$2")" && echo pulling >"$2" && '
    'nohup sh -c \'docker pull "$1" >"$2.log" 2>&1; echo $? >"$2"\' sh "$1" "$2" '
    ">/dev/null 2>&1 &"
)
_PULL_STATE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
# Seconds `timeout` waits after its TERM before it KILLs a `docker run` that would not stop.
RUN_KILL_AFTER_SECONDS = 5


def parse_host_key(text: str) -> paramiko.PKey:
    """A public key in known_hosts / `.pub` form ("ssh-ed25519 AAAA... comment")."""
    parts = text.split()
    if len(parts) < 2:
        raise ValueError("host key must look like 'ssh-ed25519 AAAA...'")
    try:
        return paramiko.PKey.from_type_string(parts[0], b64decode(parts[1]))
    except (paramiko.SSHException, ValueError) as err:
        raise ValueError(f"unreadable host key of type {parts[0]!r}: {err}") from None


def load_private_key(text: str) -> paramiko.PKey:
    """A private key from its text (OpenSSH or PEM; Ed25519, ECDSA or RSA)."""
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    # Deliberately no detail: the parser's messages could quote key material.
    raise ValueError("VM_SSH_PRIVATE_KEY is not a readable unencrypted Ed25519, ECDSA or RSA key")


class _VmDown(Exception):
    """The VM cannot be used right now (unreachable, wrong host key, no Docker, no KVM)."""


class _OutOfTime(Exception):
    """The call's time budget ran out: no verdict on the VM it was talking to."""


class _Deadline:
    """The end of one backend call's time budget (bounds.SSH_CALL_SECONDS)."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def cap(self, timeout: float) -> tuple[float, bool]:
        """`timeout` cut to what is left, and whether the budget cut it; _OutOfTime when
        nothing is left."""
        left = self.remaining()
        if left <= 0:
            raise _OutOfTime()
        return (left, True) if left < timeout else (timeout, False)

    def require(self, seconds: float) -> None:
        """_OutOfTime unless a step that may take `seconds` still fits."""
        if self.remaining() < seconds:
            raise _OutOfTime()


@dataclass(frozen=True)
class _Result:
    code: int
    out: str
    err: str


class _Remote:
    def __init__(
        self, vm: VmHost, client: paramiko.SSHClient, timeout: float, deadline: _Deadline
    ) -> None:
        self.vm = vm
        self._client = client
        self._timeout = timeout
        self._deadline = deadline

    def time_left(self) -> float:
        return self._deadline.remaining()

    def run(self, argv: Sequence[str], *, timeout: float | None = None) -> _Result:
        command = shlex.join(argv)
        limit, cut = self._deadline.cap(timeout or self._timeout)
        try:
            # The channel timeout: opening the channel, and each read of its output.
            _, stdout, stderr = self._client.exec_command(command, timeout=limit)
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            code = stdout.channel.recv_exit_status()
        except (TimeoutError, paramiko.SSHException, OSError) as exc:
            if cut and isinstance(exc, TimeoutError):
                raise _OutOfTime() from None
            raise _VmDown(f"{self.vm.label}: `{argv[0]}` did not answer ({exc})") from None
        return _Result(code, out, err)

    def upload(self, local: Path, remote_dir: str) -> str:
        """Copy `local` into `remote_dir` (relative to the home directory unless absolute);
        returns the absolute directory."""
        limit, _ = self._deadline.cap(self._timeout)
        try:
            with self._client.open_sftp() as sftp:
                sftp.get_channel().settimeout(limit)
                home = sftp.normalize(".")
                target = str(PurePosixPath(home) / remote_dir)
                try:
                    sftp.stat(target)
                except FileNotFoundError:
                    sftp.mkdir(target, mode=0o755)
                sftp.put(str(local), f"{target}/{local.name}")
                sftp.chmod(f"{target}/{local.name}", 0o644)
        except (paramiko.SSHException, OSError) as exc:
            raise _VmDown(f"{self.vm.label}: upload of the shard runner failed ({exc})") from None
        return target

    def write_private(self, remote_path: str, content: str) -> str:
        """Write `content` to `remote_path` (relative to the home directory unless absolute)
        readable by its owner only: the file is created empty and made 0600 before a byte of
        `content` is written, in directories made 0700. Returns the absolute path."""
        limit, _ = self._deadline.cap(self._timeout)
        try:
            with self._client.open_sftp() as sftp:
                sftp.get_channel().settimeout(limit)
                path = PurePosixPath(sftp.normalize(".")) / remote_path
                missing = []
                parent = path.parent
                while True:
                    try:
                        sftp.stat(str(parent))
                        break
                    except FileNotFoundError:
                        missing.append(parent)
                        parent = parent.parent
                for directory in reversed(missing):
                    sftp.mkdir(str(directory), mode=0o700)
                with sftp.open(str(path), "w") as f:
                    sftp.chmod(str(path), 0o600)
                    f.write(content.encode())
        except (paramiko.SSHException, OSError) as exc:
            # Never the content in the message: it is a secret.
            raise _VmDown(
                f"{self.vm.label}: writing the job's secrets file failed ({exc})"
            ) from None
        return str(path)

    def remove_tree(self, remote_path: str) -> None:
        self.run(["rm", "-rf", "--", remote_path])


class SshVmBackend:
    """`ComputeBackend` for a fixed pool of VMs reached over SSH."""

    tier = Tier.VM

    def __init__(
        self,
        pool: Sequence[VmHost],
        *,
        key: paramiko.PKey,
        container: ContainerOptions | None = None,
        docker_args: Sequence[str] = DEFAULT_DOCKER_ARGS,
        golden_image_dir: str | None = DEFAULT_GOLDEN_IMAGE_DIR,
        kvm_device: str = "/dev/kvm",
        runner_file: Path = RUNNER_FILE,
        runner_remote_dir: str = REMOTE_RUNNER_DIR,
        container_python: str = "python",
        kill_after_seconds: int = 60,
        connect_timeout: float = bounds.SSH_CONNECT_TIMEOUT,
        command_timeout: float = bounds.SSH_COMMAND_TIMEOUT,
        run_timeout: float = bounds.SSH_DOCKER_RUN_TIMEOUT,
        call_budget_seconds: float = bounds.SSH_CALL_SECONDS,
        recheck_after_seconds: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not pool:
            raise ValueError("the VM pool is empty (app setting VM_POOL)")
        labels = [vm.label for vm in pool]
        if len(set(labels)) != len(labels):
            raise ValueError("the VM pool lists a VM twice")
        self._pool = list(pool)
        self._host_keys = {vm.label: parse_host_key(vm.host_key) for vm in pool}
        self._key = key
        self._container = container or ContainerOptions()
        self._docker_args = tuple(docker_args)
        self._golden_dir = golden_image_dir
        self._kvm_device = kvm_device
        self._runner_file = runner_file
        self._runner_remote_dir = runner_remote_dir
        self._container_python = container_python
        self._kill_after = kill_after_seconds
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        # `docker run -d` pulls a missing image before it returns: cut by `timeout` on the VM.
        self._run_timeout = run_timeout
        self._call_budget = call_budget_seconds
        self._lock = threading.Lock()
        self._submit_lock = threading.Lock()
        # VM label -> (why it left the pool, when): submit skips it for `recheck_after`
        # seconds; ensure_capacity always checks it again.
        self._down: dict[str, tuple[str, float]] = {}
        self._recheck_after = recheck_after_seconds
        self._clock = clock
        self._where: dict[str, VmHost] = {}  # job name -> VM, a cache only

    @classmethod
    def from_settings(cls, settings: AppSettings, **kwargs: Any) -> SshVmBackend:
        if not settings.vm_pool:
            raise PermanentTierError("the VM tier is not configured: app setting VM_POOL is empty")
        if settings.vm_ssh_private_key is None:
            raise PermanentTierError(
                "the VM tier is not configured: app setting VM_SSH_PRIVATE_KEY is missing"
            )
        try:
            key = load_private_key(settings.vm_ssh_private_key.get_secret_value())
        except ValueError as err:
            raise PermanentTierError(str(err)) from None
        kwargs.setdefault("container", settings.container_options)
        kwargs.setdefault("golden_image_dir", settings.vm_golden_image_dir)
        return cls(settings.vm_pool, key=key, **kwargs)

    # --- pool state -------------------------------------------------------------------------

    def down_vms(self) -> dict[str, str]:
        """VMs currently out of the pool, with the reason."""
        with self._lock:
            return {label: why for label, (why, _) in self._down.items()}

    def _mark_down(self, vm: VmHost, reason: str) -> None:
        with self._lock:
            previous = self._down.get(vm.label)
            if previous is None or previous[0] != reason:
                log.warning("VM %s leaves the pool: %s", vm.label, reason)
            self._down[vm.label] = (reason, self._clock())

    def _mark_up(self, vm: VmHost) -> None:
        with self._lock:
            if self._down.pop(vm.label, None) is not None:
                log.info("VM %s is back in the pool", vm.label)

    def _resting(self, vm: VmHost) -> str | None:
        """Why a VM that recently failed its checks is not worth another try yet."""
        with self._lock:
            down = self._down.get(vm.label)
        if down is not None and self._clock() - down[1] < self._recheck_after:
            return down[0]
        return None

    # --- SSH --------------------------------------------------------------------------------

    def _deadline(self) -> _Deadline:
        return _Deadline(self._call_budget)

    @contextlib.contextmanager
    def _connect(self, vm: VmHost, deadline: _Deadline) -> Iterator[_Remote]:
        # Connect with negotiation, banner and auth run one after another, each under its own
        # timeout: only a connect that fits whole is started (a failed one says nothing about
        # the budget, and cutting its timeouts to what is left would never use the budget up).
        deadline.require(3 * self._connect_timeout)
        step = self._connect_timeout  # each of: TCP connect + negotiation, banner, auth
        client = paramiko.SSHClient()
        expected = self._host_keys[vm.label]
        known_name = vm.host if vm.port == 22 else f"[{vm.host}]:{vm.port}"
        client.get_host_keys().add(known_name, expected.get_name(), expected)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                vm.host,
                port=vm.port,
                username=vm.user,
                pkey=self._key,
                # `timeout` bounds the TCP connect and the SSH negotiation, `channel_timeout`
                # the opening of every channel (paramiko's default is an hour), as SFTP's.
                timeout=step,
                banner_timeout=step,
                auth_timeout=step,
                channel_timeout=step,
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise _VmDown(
                f"{vm.label}: host key mismatch, refusing to connect (expected "
                f"{expected.get_name()} {expected.fingerprint}, the VM offered "
                f"{exc.key.get_name()} {exc.key.fingerprint})"
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise _VmDown(f"{vm.label}: SSH authentication failed for user {vm.user}") from None
        except (TimeoutError, paramiko.SSHException, OSError) as exc:
            client.close()
            raise _VmDown(f"{vm.label}: SSH connection failed ({exc})") from None
        try:
            yield _Remote(vm, client, self._command_timeout, deadline)
        finally:
            client.close()

    def _check(self, remote: _Remote) -> str:
        """Full health check of a VM in one round trip; returns the Docker server version."""
        # A constant script; the device path arrives as "$1", never spliced into the text.
        # And the golden image folder as "$2": a VM without it could run no attempt.
        res = remote.run(
            ["sh", "-c", _CHECK_SCRIPT, "sh", self._kvm_device, self._golden_dir or ""]
        )
        if res.code == 11:
            raise _VmDown(
                f"{remote.vm.label}: {self._kvm_device} is missing (no nested virtualization)"
            )
        if res.code == 12:
            raise _VmDown(
                f"{remote.vm.label}: the golden image folder {self._golden_dir} is missing "
                "(VM_GOLDEN_IMAGE_DIR: copy WAA's prepared storage folder there)"
            )
        if res.code != 0:
            raise _VmDown(f"{remote.vm.label}: docker does not answer ({_tail(res.err)})")
        return res.out.strip()

    def _inspect(self, remote: _Remote, job_name: str) -> dict[str, Any] | None:
        res = remote.run(
            ["docker", "inspect", "--type", "container", "--format", "{{json .State}}", job_name]
        )
        if res.code != 0:
            if _NO_SUCH.search(res.err):
                return None
            raise _VmDown(f"{remote.vm.label}: docker inspect failed ({_tail(res.err)})")
        try:
            state = json.loads(res.out)
        except json.JSONDecodeError:
            raise _VmDown(f"{remote.vm.label}: docker inspect answered no JSON") from None
        return state if isinstance(state, dict) else None

    def _ordered(self, job_name: str) -> list[VmHost]:
        with self._lock:
            first = self._where.get(job_name)
        return sorted(self._pool, key=lambda vm: vm is not first)

    # --- ComputeBackend ---------------------------------------------------------------------

    def ensure_capacity(self, spec: CapacitySpec) -> CapacityReport:
        """Checks every VM (Docker, /dev/kvm), uploads the shard runner and starts a detached
        pull of the image where it is missing; ready when every usable VM has the image."""
        deadline = self._deadline()
        usable: list[str] = []
        missing_image = 0
        notes: list[str] = []
        for index, vm in enumerate(self._pool):
            try:
                with self._connect(vm, deadline) as remote:
                    version = self._check(remote)
                    remote.upload(self._runner_file, self._runner_remote_dir)
                    present, image_note = (
                        self._prefetch(remote, spec.image) if spec.image else (True, "")
                    )
            except _VmDown as exc:
                self._mark_down(vm, str(exc))
                notes.append(str(exc))
                continue
            except _OutOfTime:
                notes.append(self._unchecked(self._pool[index:]))
                if not usable:
                    raise self._out_of_time("checking the VM pool", notes) from None
                break
            self._mark_up(vm)
            usable.append(vm.label)
            missing_image += not present
            notes.append(f"{vm.label}: usable (docker {version}){image_note}")
        if not usable:
            raise PermanentTierError(
                f"no usable VM in the pool of {len(self._pool)}: " + "; ".join(notes),
                code="NoUsableVm",
            )
        summary = f"{len(usable)} of {len(self._pool)} VMs usable"
        if spec.max_nodes > len(usable):
            summary += f" (fewer than the {spec.max_nodes} requested: shards will wait for a VM)"
        return CapacityReport(
            tier=Tier.VM,
            resource_name="vm-pool",
            ready=missing_image == 0,
            detail=summary + ". " + "; ".join(notes),
        )

    def capacity_status(self, spec: CapacitySpec) -> CapacityReport:
        """Ready when every usable VM has the image; a pull that failed is started again, one
        that can never succeed (no such image, no access) is a permanent error."""
        deadline = self._deadline()
        usable, pulling = 0, 0
        notes: list[str] = []
        for index, vm in enumerate(self._pool):
            resting = self._resting(vm)
            if resting is not None:
                notes.append(resting)
                continue
            try:
                with self._connect(vm, deadline) as remote:
                    present = self._image_ready(remote, spec.image) if spec.image else True
            except _VmDown as exc:
                self._mark_down(vm, str(exc))
                notes.append(str(exc))
                continue
            except _OutOfTime:
                notes.append(self._unchecked(self._pool[index:]))
                pulling += 1  # not known to be ready
                break
            usable += 1
            pulling += not present
            notes.append(f"{vm.label}: {'image present' if present else 'pulling the image'}")
        if not usable:
            if pulling:
                raise self._out_of_time("checking the VM pool", notes)
            raise PermanentTierError(
                f"no usable VM in the pool of {len(self._pool)}: " + "; ".join(notes),
                code="NoUsableVm",
            )
        return CapacityReport(
            tier=Tier.VM,
            resource_name="vm-pool",
            ready=pulling == 0,
            detail=f"{usable} of {len(self._pool)} VMs usable. " + "; ".join(notes),
        )

    def _pull_state(self, image: str) -> str:
        return f"{self._runner_remote_dir}/prefetch/{_PULL_STATE_NAME.sub('_', image)}"

    def _prefetch(self, remote: _Remote, image: str) -> tuple[bool, str]:
        """(whether the image is on the VM, a note); starts its pull when it is not."""
        present = remote.run(["docker", "image", "inspect", "--format", "{{.Id}}", image])
        if present.code == 0:
            return True, f", image {image} present"
        return False, self._start_pull(remote, image)

    def _start_pull(self, remote: _Remote, image: str) -> str:
        # Detached, so the 5 GB download overlaps with everything else and no call waits on it.
        started = remote.run(["sh", "-c", _PREFETCH_SCRIPT, "sh", image, self._pull_state(image)])
        if started.code != 0:
            return f", image pull of {image} could not start ({_tail(started.err)})"
        return f", pulling image {image}"

    def _image_ready(self, remote: _Remote, image: str) -> bool:
        """Whether the image is on the VM; False while its pull runs (started again when it
        failed or never started here)."""
        if remote.run(["docker", "image", "inspect", "--format", "{{.Id}}", image]).code == 0:
            return True
        state_file = self._pull_state(image)
        state = remote.run(["cat", state_file])
        mark = state.out.strip() if state.code == 0 else ""
        if mark == "pulling":
            return False
        if mark and mark != "0":
            log_tail = _tail(remote.run(["tail", "-c", "2000", f"{state_file}.log"]).out)
            if _INVALID_IMAGE.search(log_tail):
                raise PermanentTierError(
                    f"{remote.vm.label}: image {image} cannot be pulled ({log_tail})",
                    code="InvalidImage",
                )
            log.warning("image pull on VM %s failed, pulling again: %s", remote.vm.label, log_tail)
        self._start_pull(remote, image)
        return False

    def _unchecked(self, vms: Sequence[VmHost]) -> str:
        labels = ", ".join(vm.label for vm in vms)
        return f"not checked: {labels} (the call's {self._call_budget:g} s ran out)"

    def _out_of_time(self, doing: str, notes: Sequence[str]) -> TransientBackendError:
        return TransientBackendError(
            f"{doing} took longer than {self._call_budget:g} s: " + "; ".join(notes),
            code="CallBudget",
        )

    def submit(self, spec: JobSpec) -> SubmitResult:
        name = spec.job_name
        if not _CONTAINER_NAME.match(name):
            raise ValueError(f"job name {name!r} is not a valid container name")
        deadline = self._deadline()
        try:
            return self._submit(spec, deadline)
        except _OutOfTime:
            raise TransientBackendError(
                f"submitting {name} took longer than {self._call_budget:g} s; the retry "
                "finds the job if it started",
                code="CallBudget",
            ) from None

    def _submit(self, spec: JobSpec, deadline: _Deadline) -> SubmitResult:
        name = spec.job_name
        token = spec.heartbeat_token
        busy = 0
        # Picking a free VM and starting the container must not interleave with another submit
        # of this backend. (Two app instances can still race for one VM; the loser's container
        # then shares the VM until the orchestration's deadlines catch the slow shard.)
        # Waiting for another submit counts against this call's budget too.
        if not self._submit_lock.acquire(timeout=max(0.0, deadline.remaining())):
            raise _OutOfTime()
        with contextlib.ExitStack() as stack:
            stack.callback(self._submit_lock.release)
            reachable: list[_Remote] = []
            problems: list[str] = []
            # Idempotency first: the job may already run on any VM (a re-delivered activity).
            for vm in self._ordered(name):
                resting = self._resting(vm)
                if resting is not None:
                    # An unreachable VM costs a connect timeout per try: skip it for a while.
                    problems.append(resting)
                    continue
                try:
                    remote = stack.enter_context(self._connect(vm, deadline))
                    state = self._inspect(remote, name)
                except _VmDown as exc:
                    self._mark_down(vm, str(exc))
                    problems.append(str(exc))
                    continue
                reachable.append(remote)
                if state is not None:
                    with self._lock:
                        self._where[name] = vm
                    return SubmitResult(
                        job_name=name, backend_job_id=_job_id(vm, name), created=False
                    )
            for remote in reachable:
                vm = remote.vm
                try:
                    self._check(remote)
                    self._mark_up(vm)
                    running = remote.run(_BUSY_ARGV)
                    if running.code != 0:
                        raise _VmDown(f"{vm.label}: docker ps failed ({_tail(running.err)})")
                    if running.out.strip():
                        busy += 1
                        continue
                    runner_dir = remote.upload(self._runner_file, self._runner_remote_dir)
                    secrets_file = remote.write_private(
                        self._secrets_path(spec.evaluation_id, name), _secrets_text(spec)
                    )
                    created = self._run(remote, spec, runner_dir, secrets_file, token)
                except _VmDown as exc:
                    self._mark_down(vm, redact(str(exc), [token]))
                    problems.append(redact(str(exc), [token]))
                    continue
                with self._lock:
                    self._where[name] = vm
                log.info("job %s %s on VM %s", name, "started" if created else "found", vm.label)
                return SubmitResult(
                    job_name=name, backend_job_id=_job_id(vm, name), created=created
                )
        if busy:
            raise TransientBackendError(
                f"all {busy} usable VMs are busy with other jobs", code="NoFreeVm"
            )
        raise PermanentTierError(
            f"no usable VM in the pool of {len(self._pool)}: " + "; ".join(problems),
            code="NoUsableVm",
        )

    def _secrets_path(self, evaluation_id: str, job_name: str) -> str:
        if not _SAFE_NAME.match(evaluation_id):
            raise ValueError(f"evaluation id {evaluation_id!r} cannot name a folder")
        return f"{self._evaluation_secrets(evaluation_id)}/{job_name}.env"

    def _evaluation_secrets(self, evaluation_id: str) -> str:
        return f"{self._runner_remote_dir}/{SECRETS_DIR}/{evaluation_id}"

    def _docker_run_argv(self, spec: JobSpec, runner_dir: str, secrets_file: str) -> list[str]:
        env = dict(spec.environment)
        # Secrets reach the runner through the file only.
        for secret_name in ("WAA_HEARTBEAT_TOKEN", "WAA_HEARTBEAT_TOKEN_SECRET"):
            env.pop(secret_name, None)
        env.setdefault("WAA_JOB_NAME", spec.job_name)
        env.setdefault("WAA_TASK_IDS", ",".join(spec.task_ids))
        env.setdefault("WAA_HEARTBEAT_URL", spec.heartbeat_url)
        if spec.secrets_vault_url:
            env["WAA_SECRETS_VAULT_URL"] = spec.secrets_vault_url
        if spec.secret_env:
            env["WAA_SECRETS"] = ",".join(f"{k}={v}" for k, v in sorted(spec.secret_env.items()))
        if self._golden_dir:
            env["WAA_STORAGE_SOURCE"] = CONTAINER_GOLDEN_DIR
            env.setdefault("WAA_STORAGE_DIR", CONTAINER_STORAGE_DIR)
        env["WAA_SECRETS_FILE"] = CONTAINER_SECRETS_FILE
        devices = [
            f"{self._kvm_device}:/dev/kvm"
            if d == "/dev/kvm" and self._kvm_device != "/dev/kvm"
            else d
            for d in self._container.devices
        ]
        argv = ["docker", "run", "-d", "--name", spec.job_name]
        argv += ["--label", MANAGED_LABEL, "--label", f"waa.job={spec.job_name}"]
        argv += ["--label", f"waa.evaluation={spec.evaluation_id}"]
        argv += [
            "--label",
            f"waa.shard={spec.shard_index}",
            "--label",
            f"waa.attempt={spec.attempt}",
        ]
        for device in devices:
            argv += ["--device", device]
        for capability in self._container.cap_add:
            argv += ["--cap-add", capability]
        argv += ["--shm-size", self._container.shm_size, *self._docker_args]
        if self._golden_dir:
            # Read-only, and no shared writable /storage: the runner copies the image into the
            # container's own /storage, so each attempt starts from a pristine disk.
            argv += ["-v", f"{self._golden_dir}:{CONTAINER_GOLDEN_DIR}:ro"]
        argv += ["-v", f"{runner_dir}:{CONTAINER_RUNNER_DIR}:ro"]
        argv += ["-v", f"{secrets_file}:{CONTAINER_SECRETS_FILE}:ro"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        # The image's entrypoint is `bash -c`; replacing it with `timeout` keeps the command an
        # argv (nothing re-parsed by a shell) and makes the kill switch the container's PID 1.
        argv += ["--entrypoint", "timeout", spec.image]
        argv += [f"--kill-after={self._kill_after}", str(spec.timeout_seconds)]
        argv += [self._container_python, f"{CONTAINER_RUNNER_DIR}/{self._runner_file.name}"]
        return argv

    def _run(
        self, remote: _Remote, spec: JobSpec, runner_dir: str, secrets_file: str, token: str
    ) -> bool:
        argv = self._docker_run_argv(spec, runner_dir, secrets_file)
        # GNU `timeout` on the VM ends a `docker run` still pulling (its progress output would
        # keep any channel timeout from firing); the channel timeout is only the backstop.
        limit = min(self._run_timeout, remote.time_left() - RUN_KILL_AFTER_SECONDS - 1)
        if limit <= 0:
            raise _OutOfTime()
        bounded = ["timeout", f"--kill-after={RUN_KILL_AFTER_SECONDS}", f"{limit:g}", *argv]
        try:
            res = remote.run(bounded, timeout=limit + RUN_KILL_AFTER_SECONDS + 1)
        except _VmDown as exc:
            # Most likely a slow image pull, not a broken VM: keep the VM in the pool. A retry
            # finds the container if Docker went on to create it.
            raise TransientBackendError(
                f"{remote.vm.label}: docker run did not finish within {self._run_timeout:g} s "
                f"({redact(str(exc), [token])})",
                code="RunTimeout",
            ) from None
        if res.code == 0:
            return True
        err = redact(_tail(res.err), [token])
        if res.code in _TIMEOUT_EXIT_CODES:
            raise TransientBackendError(
                f"{remote.vm.label}: docker run did not finish within {limit:g} s (still pulling "
                f"the image? {err})",
                code="RunTimeout",
            )
        if _NAME_CONFLICT.search(res.err):
            return False
        if _INVALID_IMAGE.search(res.err):
            raise PermanentTierError(
                f"{remote.vm.label}: image {spec.image} cannot be pulled ({err})",
                code="InvalidImage",
            )
        raise TransientBackendError(f"{remote.vm.label}: docker run failed ({err})")

    def status(self, job_name: str) -> JobStatus:
        deadline = self._deadline()
        unreachable: list[str] = []
        for index, vm in enumerate(self._ordered(job_name)):
            try:
                with self._connect(vm, deadline) as remote:
                    state = self._inspect(remote, job_name)
                    cancelled = state is None and self._has_tombstone(remote, job_name)
            except _VmDown as exc:
                unreachable.append(str(exc))
                continue
            except _OutOfTime:
                unreachable.append(self._unchecked(self._ordered(job_name)[index:]))
                break
            if state is not None:
                with self._lock:
                    self._where[job_name] = vm
                return _status_from_docker(job_name, state)
            if cancelled:
                return JobStatus(
                    job_name=job_name, state=JobState.CANCELLED, raw_status="removed by cancel"
                )
        if unreachable:
            raise TransientBackendError(
                f"job {job_name} not found on the reachable VMs and some are unreachable: "
                + "; ".join(unreachable)
            )
        raise JobNotFoundError(job_name)

    def cancel(self, job_name: str) -> None:
        """Removes a container that has not ended (`docker rm -f`) and leaves a tombstone on its
        VM, so that `status` reports CANCELLED from any app instance afterwards. A container
        that already ended is left as it is: its outcome stays readable."""
        deadline = self._deadline()
        for vm in self._ordered(job_name):
            try:
                with self._connect(vm, deadline) as remote:
                    state = self._inspect(remote, job_name)
                    if state is None:
                        continue
                    if from_docker(state).is_terminal:
                        return
                    self._write_tombstone(remote, job_name)
                    res = remote.run(["docker", "rm", "-f", job_name])
            except _VmDown as exc:
                # A container on an unreachable VM still dies by its own `timeout`.
                log.warning("cancel %s: skipped %s", job_name, exc)
                continue
            except _OutOfTime:
                # Not every VM was asked: the caller tries again (the job may still run).
                raise TransientBackendError(
                    f"cancelling {job_name} took longer than {self._call_budget:g} s",
                    code="CallBudget",
                ) from None
            if res.code != 0 and not _NO_SUCH.search(res.err):
                raise TransientBackendError(
                    f"{vm.label}: docker rm -f {job_name} failed ({_tail(res.err)})"
                )
            log.info("job %s cancelled on VM %s", job_name, vm.label)
            return

    def end_evaluation(self, evaluation_id: str) -> None:
        """Nothing runs per evaluation here (each container ends by itself or by `cancel`);
        what is left is cleanup: the evaluation's secrets files are removed from every VM that
        answers. A VM that does not keeps files whose tokens expire with their jobs' deadlines;
        a later call removes them."""
        if not _SAFE_NAME.match(evaluation_id):
            return  # no folder was ever made for it
        deadline = self._deadline()
        for vm in self._pool:
            if self._resting(vm) is not None:
                continue
            try:
                with self._connect(vm, deadline) as remote:
                    remote.remove_tree(self._evaluation_secrets(evaluation_id))
            except _VmDown as exc:
                log.warning("end of evaluation %s: skipped %s", evaluation_id, exc)
            except _OutOfTime:
                log.warning("end of evaluation %s: the call's budget ran out", evaluation_id)
                return

    def _tombstone(self, job_name: str) -> str:
        return f"{self._runner_remote_dir}/cancelled/{job_name}"

    def _write_tombstone(self, remote: _Remote, job_name: str) -> None:
        path = self._tombstone(job_name)
        made = remote.run(["mkdir", "-p", str(PurePosixPath(path).parent)])
        touched = remote.run(["touch", path]) if made.code == 0 else made
        if touched.code != 0:
            raise TransientBackendError(
                f"{remote.vm.label}: cannot record the cancellation ({_tail(touched.err)})"
            )

    def _has_tombstone(self, remote: _Remote, job_name: str) -> bool:
        return remote.run(["test", "-e", self._tombstone(job_name)]).code == 0


def _status_from_docker(job_name: str, state: dict[str, Any]) -> JobStatus:
    normalized = from_docker(state)
    raw = str(state.get("Status", "")).lower()
    exit_code = state.get("ExitCode")
    raw_status = f"{raw} (exit {exit_code})" if raw in ("exited", "dead") else raw
    if normalized is not JobState.FAILED:
        return JobStatus(job_name=job_name, state=normalized, raw_status=raw_status)
    kind = FailureKind.JOB_FAILED
    if exit_code in _TIMEOUT_EXIT_CODES:
        detail = f"the container hit its timeout (kill switch), exit code {exit_code}"
    elif exit_code == runner_exit_codes.NO_KVM:
        detail = "no nested virtualization in the container (/dev/kvm missing)"
        kind = FailureKind.PERMANENT_FOR_TIER
    else:
        detail = f"the container exited with code {exit_code}"
    if state.get("OOMKilled"):
        detail += "; killed for lack of memory"
    if state.get("Error"):
        detail += f"; docker: {state['Error']}"
    return JobStatus(
        job_name=job_name,
        state=JobState.FAILED,
        raw_status=raw_status,
        detail=detail,
        failure_kind=kind,
    )


def _secrets_text(spec: JobSpec) -> str:
    """The attempt's secrets file: KEY=VALUE lines (CONTRACT.md, WAA_SECRETS_FILE)."""
    if "\n" in spec.heartbeat_token or "\r" in spec.heartbeat_token:
        raise ValueError("the heartbeat token must be one line")
    return f"WAA_HEARTBEAT_TOKEN={spec.heartbeat_token}\n"


def _job_id(vm: VmHost, job_name: str) -> str:
    return f"{vm.label}/{job_name}"


def _tail(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text[-limit:] if text else "no error output"
