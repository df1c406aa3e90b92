"""What the control plane knows about a compute job, whatever tier runs it.

Every backend (Azure ML, Azure Batch, VM over SSH, simulated) speaks these types, so the
orchestrations and the sweeper never see a tier's own vocabulary.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Tier(StrEnum):
    AZURE_ML = "azureml"
    BATCH = "batch"
    VM = "vm"


class JobState(StrEnum):
    """Normalized job states. Order matters: state only ever moves forward (see `rank`)."""

    SUBMITTED = "submitted"  # accepted by the backend, nothing allocated yet
    QUEUED = "queued"  # waiting for capacity
    PREPARING = "preparing"  # node provisioning, image pull, container setup
    RUNNING = "running"  # the container started (first heartbeat or backend says so)
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def is_terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


_RANK = {
    JobState.SUBMITTED: 0,
    JobState.QUEUED: 1,
    JobState.PREPARING: 2,
    JobState.RUNNING: 3,
    JobState.COMPLETED: 4,
    JobState.FAILED: 4,
    JobState.CANCELLED: 4,
}


class FailureKind(StrEnum):
    """Why a job or a submission failed, as far as the retry/failover policy cares."""

    TRANSIENT = "transient"  # throttling, 5xx, network: retry the same tier
    PERMANENT_FOR_TIER = "permanent_for_tier"  # quota, no nested virt, bad image, auth: fail over
    JOB_FAILED = "job_failed"  # the job itself failed; the tier may still be healthy


class JobSpec(BaseModel):
    """Everything a backend needs to run one shard attempt. JSON-serializable on purpose:
    it travels through activity inputs."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    evaluation_id: str
    shard_index: int
    attempt: int
    tier: Tier
    task_ids: list[str]
    vm_size: str
    spot: bool = False
    image: str
    # Cloud-side kill switch: the backend must stop the job after this, even if the control
    # plane is gone.
    timeout_seconds: int
    heartbeat_url: str
    heartbeat_token: str
    environment: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    experiment_name: str = ""
    # Secrets never travel in a job definition (a workspace reader sees it): the job reads them
    # itself at start with its managed identity from this Key Vault.
    secrets_vault_url: str = ""
    # Environment variable name -> Key Vault secret name (e.g. OPENAI_API_KEY -> openai-api-key).
    secret_env: dict[str, str] = Field(default_factory=dict)
    # The Key Vault secret holding this attempt's heartbeat token ("" when there is no vault):
    # Azure ML and Batch then pass its name instead of the token.
    heartbeat_token_secret: str = ""
    # Queue distribution (issue 10): `task_ids` is empty and the job asks the heartbeat
    # endpoint for each next task (`MessageKind.NEXT_TASK`); `expected_tasks` is how many it
    # is expected to run (its share of the queue), for estimates and the simulator's draws.
    queue: bool = False
    expected_tasks: int = 0


class CapacitySpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    evaluation_id: str
    tier: Tier
    vm_size: str
    max_nodes: int
    spot: bool = False
    idle_seconds_before_scale_down: int = 600
    image: str = ""


class CapacityReport(BaseModel):
    tier: Tier
    resource_name: str
    created: bool = False
    updated: bool = False
    # False while the capacity is still being made usable (a cluster being created, a pool
    # allocating nodes, VMs pulling the image): `capacity_status` then says when it is.
    ready: bool = True
    detail: str = ""


class SubmitResult(BaseModel):
    job_name: str
    backend_job_id: str
    created: bool  # False when the job already existed (idempotent re-submit)


class JobStatus(BaseModel):
    job_name: str
    state: JobState
    raw_status: str = ""
    # The service's own error text, kept for the record.
    detail: str = ""
    failure_kind: FailureKind | None = None


class BackendError(Exception):
    """A backend call failed. `kind` tells the policy what to do about it."""

    def __init__(self, message: str, kind: FailureKind, *, code: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code

    @property
    def is_transient(self) -> bool:
        return self.kind is FailureKind.TRANSIENT


class TransientBackendError(BackendError):
    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message, FailureKind.TRANSIENT, code=code)


class PermanentTierError(BackendError):
    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message, FailureKind.PERMANENT_FOR_TIER, code=code)


class JobNotFoundError(Exception):
    def __init__(self, job_name: str) -> None:
        super().__init__(f"job {job_name!r} not found")
        self.job_name = job_name


class ContainerOptions(BaseModel):
    """The container options WAA's own launchers use (DESIGN.md, "WAA's launch contract", from
    microsoft/WindowsAgentArena scripts/run.sh and scripts/run_azure.py): the host's KVM device
    for QEMU, NET_ADMIN for QEMU's tap network to the Windows VM at 20.20.20.21, and 16 GB of
    shared memory (WAA's Azure run sets shm_size 16g). Each tier passes them through its SDK's
    own fields."""

    model_config = ConfigDict(frozen=True)

    devices: tuple[str, ...] = ("/dev/kvm",)
    cap_add: tuple[str, ...] = ("NET_ADMIN",)
    shm_size: str = Field(default="16g", pattern=r"^[1-9][0-9]*[bkmg]$")

    def docker_args(self) -> list[str]:
        """`docker run` options other than the shared memory, one option per item."""
        return [*(f"--device={d}" for d in self.devices), *(f"--cap-add={c}" for c in self.cap_add)]

    def run_options(self) -> list[str]:
        """All of them as `docker run` options, shared memory included."""
        return [*self.docker_args(), f"--shm-size={self.shm_size}"]
