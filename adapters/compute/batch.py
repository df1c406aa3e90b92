"""The Azure Batch tier: a container pool, one Batch job per evaluation, one task per attempt.

Everything goes through `azure-batch` 15.x's BatchClient; its retry policy retries throttling
(honouring Retry-After) and 5xx before an error reaches this module. The pool prefetches the WAA
image onto every node and runs a start task that fails on nodes without /dev/kvm, so a node
that cannot run WAA shows up as `starttaskfailed` instead of hanging a shard. Tasks carry the
kill switch (`max_wall_clock_time`) and never retry on their own: the control plane retries.

A pool that pulls from a private registry and mounts the golden image with a managed identity
is declared in infra/app/batch.bicep, not created here: the Batch data plane (azure-batch 15.x)
cannot give a pool an identity (`BatchPool.identity` is read-only there, and
`BatchPoolCreateOptions` has no such field), only ARM can. With WAA_COMPUTE_IDENTITY_ID set the
app only references that pool (resizes it, checks it mounts and pulls what the jobs need).

Batch jobs stay active until terminated and count against the account's quota of active jobs
and job schedules (a per-account limit; "ActiveJobAndScheduleQuotaReached" once it is full):
`end_evaluation` terminates the evaluation's job when it ends or is cancelled, and the sweeper
terminates those of evaluations that ended without it (`evaluations_holding_jobs`).
"""

from __future__ import annotations

import datetime
import logging
import re
import shlex
from typing import TYPE_CHECKING, Any

from azure.batch import BatchClient
from azure.batch import models as bm
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from adapters.compute import runner_exit_codes
from adapters.compute._azure_errors import (
    ErrorClassifier,
    Refusal,
    service_code,
    status_code,
)
from adapters.compute.golden import CONTAINER_STORAGE_DIR, GoldenImage, parse_golden_image_url
from adapters.compute.job_env import job_secrets, runner_environment
from adapters.logs import redact
from domain import bounds
from domain.job_state import batch_node_failure, from_batch_task
from domain.jobs import (
    BackendError,
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
from domain.naming import parse_job_name

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from adapters.settings import AppSettings

log = logging.getLogger(__name__)

DEFAULT_COMMAND = "python -m shard_runner"
# Without a user identity a Batch task runs as a non-admin user mapped into the container, which
# cannot open /dev/kvm nor set up QEMU's network: the runner would then report "no nested
# virtualization" and close the tier. The pool-scope admin auto-user is how a container task
# gets root (DESIGN.md, the Azure Batch facts).
ADMIN_AUTO_USER = bm.UserIdentity(
    auto_user=bm.AutoUserSpecification(
        scope=bm.AutoUserScope.POOL, elevation_level=bm.ElevationLevel.ADMIN
    )
)
# A Batch-supported Ubuntu image with a container runtime (Moby) preinstalled.
DEFAULT_VM_IMAGE = bm.BatchVmImageReference(
    publisher="microsoft-dsvm", offer="ubuntu-hpc", sku="2204", version="latest"
)
DEFAULT_NODE_AGENT = "batch.node.ubuntu 22.04"
# Fails the node (state starttaskfailed) when the VM size or security type gives no nested
# virtualization: WAA could never boot there.
KVM_CHECK_COMMAND = "/bin/sh -c 'test -c /dev/kvm'"
# Failure code Batch records on a task ended by a terminate request (our cancel).
TERMINATED_CODE = "taskended"
# Batch error codes that mean "already there" on create.
EXISTS_CODES = frozenset({"taskexists", "jobexists", "poolexists"})
QUOTA_HINT = re.compile(r"quota", re.IGNORECASE)
_BATCH_ID = re.compile(r"[^A-Za-z0-9_-]")
# Node states in which a node runs (or is ready to run) our tasks: the start task passed and
# the pool's container images are on the node.
USABLE_NODE_STATES = frozenset({"idle", "running"})
FALLBACK_BATCH_JOB = "waa-jobs"
# Batch error codes of a terminate request for a job that is already ending or ended.
ENDED_JOB_CODES = frozenset({"jobcompleted", "jobbeingterminated", "jobbeingdeleted"})
# The golden image's blob container is mounted on every node at
# $AZ_BATCH_NODE_MOUNTS_DIR/<GOLDEN_MOUNT> ("All file systems are mounted relative to the Batch
# mounts directory, accessible via the AZ_BATCH_NODE_MOUNTS_DIR environment variable",
# azure-batch 15 AzureBlobFileSystemConfiguration.relative_mount_path). Read-only by blobfuse's
# own option; allow_other lets the task's user (not the mounting one) read it.
GOLDEN_MOUNT = "waa-golden"
BLOBFUSE_OPTIONS = "-o ro -o allow_other -o attr_timeout=240 -o entry_timeout=240"
# What a container task sees of the node: the Batch mounts directory read-only (the golden image)
# and its own task directory. Without this list a Linux container task gets all of
# AZ_BATCH_NODE_ROOT_DIR read-write, mounts included; with it, only these, at the same paths
# as on the host (learn.microsoft.com/azure/batch/batch-container-isolation-task;
# azure-batch 15 BatchTaskContainerSettings.container_host_batch_bind_mounts). This is the
# service's own field for a read-only bind mount: a `-v` in containerRunOptions would need the
# mounts directory's path on the node, which Batch only gives as an environment variable (and
# its docs do not say that containerRunOptions expands variables).
GOLDEN_BIND_MOUNTS = [
    bm.ContainerHostBatchBindMountEntry(
        source=bm.ContainerHostDataPath.VFS_MOUNTS, is_read_only=True
    ),
    bm.ContainerHostBatchBindMountEntry(source=bm.ContainerHostDataPath.TASK, is_read_only=False),
]
_AZURE_REGISTRY = re.compile(r"^[a-z0-9]+\.azurecr\.io$", re.IGNORECASE)

ERRORS = ErrorClassifier(
    service="Azure Batch",
    auth_hint="Check BATCH_ACCOUNT_NAME/BATCH_ACCOUNT_KEY, or grant the function app's managed "
    "identity the 'Azure Batch Data Contributor' role on the Batch account",
    refusals=(
        Refusal(
            matches=lambda code, text: bool(QUOTA_HINT.search(code) or QUOTA_HINT.search(text)),
            what="quota reached",
            hint="Raise the Batch account's quota (cores, pools, active jobs) or delete finished "
            "jobs",
            default_code="QuotaExceeded",
        ),
        Refusal(
            matches=lambda code, _text: code.lower().startswith("container"),
            what="cannot run the container",
            hint="Check WAA_IMAGE and the pool's container configuration",
            # Unreachable (the code starts with "container"), but a refusal always names one.
            default_code="ContainerFailed",
        ),
    ),
)


def _text(value: Any) -> str:
    """Enum members come back as Enum objects; their wire value is what the mappings know."""
    return str(getattr(value, "value", value) or "")


def batch_job_id(job_name: str) -> str:
    """The Batch job (one per evaluation) that holds the task `job_name`, derived from the name
    alone so that status and cancel find it without any stored mapping."""
    parsed = parse_job_name(job_name)
    if parsed is None:
        return FALLBACK_BATCH_JOB
    return evaluation_job_id(parsed[0])


def evaluation_job_id(evaluation_id: str) -> str:
    """The Batch job of one evaluation."""
    return _BATCH_ID.sub("-", f"waa-{evaluation_id}")[:64]


def registry_of(image: str) -> str:
    """The registry host of an image reference, as Docker reads it: the first path component
    when it looks like a host (has a dot or a port, or is localhost), else Docker Hub."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return "docker.io"


# Passed to the BatchClient's azure-core pipeline: its retry policy honours Retry-After on
# 429/503, and `timeout` ends one operation with all its retries within
# bounds.BATCH_OPERATION_SECONDS, so an activity gives up in time and the orchestration's
# backoff takes over.
CLIENT_OPTIONS: dict[str, Any] = {
    "connection_timeout": bounds.BATCH_CONNECTION_TIMEOUT,
    "read_timeout": bounds.BATCH_READ_TIMEOUT,
    "retry_total": bounds.BATCH_RETRY_TOTAL,
    "retry_backoff_factor": 1.0,
    "retry_backoff_max": bounds.BATCH_RETRY_BACKOFF_MAX,
    "timeout": bounds.BATCH_RETRY_TIMEOUT,
}


class BatchBackend:
    tier = Tier.BATCH

    def __init__(
        self,
        client: BatchClient,
        *,
        pool_id: str,
        command: str = DEFAULT_COMMAND,
        container: ContainerOptions | None = None,
        vm_image: bm.BatchVmImageReference = DEFAULT_VM_IMAGE,
        node_agent_sku_id: str = DEFAULT_NODE_AGENT,
        golden_image_url: str | None = None,
        pool_identity_id: str | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._client = client
        self._pool_id = pool_id
        self._command = command
        # The task's container run options are `docker create` options, one string.
        self._run_options = " ".join((container or ContainerOptions()).run_options())
        self._golden: GoldenImage | None = (
            parse_golden_image_url(golden_image_url) if golden_image_url else None
        )
        if self._golden is not None and not pool_identity_id:
            raise PermanentTierError(
                "the Batch pool mounts the golden image (WAA_GOLDEN_IMAGE_URL) with its managed "
                "identity: set WAA_COMPUTE_IDENTITY_ID (the pool declared in "
                "infra/app/batch.bicep)",
                code="MissingSettings",
            )
        self._identity = pool_identity_id or None
        self._vm_image = vm_image
        self._node_agent = node_agent_sku_id
        # Values (e.g. the account key) that must never appear in an error message.
        self._secrets = secrets

    @classmethod
    def from_settings(
        cls, settings: AppSettings, credential: TokenCredential | None = None
    ) -> BatchBackend:
        if not settings.batch_account_url:
            raise PermanentTierError(
                "the Azure Batch tier needs the app setting BATCH_ACCOUNT_URL",
                code="MissingSettings",
            )
        key = settings.batch_account_key.get_secret_value() if settings.batch_account_key else ""
        batch_credential: Any
        if settings.batch_account_name and key:
            batch_credential = AzureNamedKeyCredential(settings.batch_account_name, key)
        elif credential is not None:
            batch_credential = credential
        else:
            from azure.identity import DefaultAzureCredential

            batch_credential = DefaultAzureCredential(
                managed_identity_client_id=settings.azure_client_id
            )
        client = BatchClient(settings.batch_account_url, batch_credential, **CLIENT_OPTIONS)
        return cls(
            client,
            pool_id=settings.batch_pool_id,
            container=settings.container_options,
            golden_image_url=settings.waa_golden_image_url,
            pool_identity_id=settings.compute_identity_id,
            secrets=(key,) if key else (),
        )

    # --- capacity ----------------------------------------------------------------------------
    def ensure_capacity(self, spec: CapacitySpec) -> CapacityReport:
        try:
            pool = self._client.get_pool(self._pool_id)
        except ResourceNotFoundError:
            pool = None
        except Exception as err:
            raise self._classify(err, f"reading pool {self._pool_id!r}") from None

        if pool is None and self._identity:
            raise PermanentTierError(
                f"Batch pool {self._pool_id!r} does not exist. A pool with a managed identity "
                "(WAA_COMPUTE_IDENTITY_ID) is declared in infra/app/batch.bicep, since the Batch "
                "data plane cannot give a pool an identity: deploy it (azd provision) or set "
                "BATCH_POOL_ID to the pool's id",
                code="PoolNotDeployed",
            )
        if pool is None:
            # Returns at once: Batch allocates the nodes and prefetches the image in the
            # background, and the shard orchestration polls `capacity_status` meanwhile.
            self._create_pool(spec)
            return CapacityReport(
                tier=self.tier,
                resource_name=self._pool_id,
                created=True,
                ready=False,
                detail=f"created {spec.vm_size} pool with {spec.max_nodes} "
                f"{'low-priority' if spec.spot else 'dedicated'} nodes, image prefetched",
            )

        if (pool.vm_size or "").lower() != spec.vm_size.lower():
            raise PermanentTierError(
                f"Batch pool {self._pool_id!r} has VM size {pool.vm_size}, the evaluation needs "
                f"{spec.vm_size}; a pool's VM size cannot change: delete the pool or set "
                "BATCH_POOL_ID to a new name",
                code="PoolSizeMismatch",
            )
        problems = self._pool_problems(pool, spec.image)
        if problems:
            raise PermanentTierError(
                f"Batch pool {self._pool_id!r} " + "; ".join(problems) + ". Its mounts, "
                "registries and identity are fixed when it is created: redeploy it from "
                "infra/app/batch.bicep (delete it first) or set BATCH_POOL_ID to one that has them",
                code="PoolMisconfigured",
            )
        notes = []
        prefetched = []
        vm_config = pool.virtual_machine_configuration
        if vm_config is not None and vm_config.container_configuration is not None:
            prefetched = vm_config.container_configuration.container_image_names or []
        if spec.image and spec.image not in prefetched:
            # The container configuration of an existing pool is immutable; tasks still pull.
            notes.append(f"image {spec.image} is not prefetched by this pool")
        current = (
            pool.target_low_priority_nodes if spec.spot else pool.target_dedicated_nodes
        ) or 0
        if current >= spec.max_nodes:
            report = self.capacity_status(spec)
            return report.model_copy(
                update={"detail": "; ".join([f"{current} target nodes, {report.detail}", *notes])}
            )
        if _text(pool.allocation_state).lower() != "steady":
            # A resize is already under way; the next ensure_capacity retries.
            raise TransientBackendError(
                f"Batch pool {self._pool_id!r} is {_text(pool.allocation_state)}; "
                "cannot resize now",
                code="PoolNotSteady",
            )
        resize = (
            bm.BatchPoolResizeOptions(target_low_priority_nodes=spec.max_nodes)
            if spec.spot
            else bm.BatchPoolResizeOptions(target_dedicated_nodes=spec.max_nodes)
        )
        # Node allocation takes minutes: started, not waited for (the SDK's poller watches for
        # a steady pool on its own daemon thread; nothing waits on it), like a new pool.
        self._call(
            lambda: self._client.begin_resize_pool(self._pool_id, resize, polling_interval=30),
            f"resizing pool {self._pool_id!r}",
        )
        log.info("batch pool resized from %d to %d nodes", current, spec.max_nodes)
        return CapacityReport(
            tier=self.tier,
            resource_name=self._pool_id,
            updated=True,
            ready=False,
            detail="; ".join([f"resizing from {current} to {spec.max_nodes} nodes", *notes]),
        )

    def capacity_status(self, spec: CapacitySpec) -> CapacityReport:
        """Ready once a node has passed its start task (the /dev/kvm check) with the image
        prefetched; a permanent error when no node ever will (allocation failed, every node
        unusable)."""
        found = self._pool_and_nodes()
        if found is None:
            raise PermanentTierError(self._missing_pool(), code="PoolNotFound")
        pool, nodes = found
        blocked = _blocker(self._pool_id, pool, nodes)
        if blocked is not None:
            raise PermanentTierError(blocked, code="PoolUnusable")
        states = [_text(n.state).lower() for n in nodes]
        usable = sum(state in USABLE_NODE_STATES for state in states)
        waiting = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states))) or "no nodes"
        return CapacityReport(
            tier=self.tier,
            resource_name=self._pool_id,
            ready=usable > 0,
            detail=f"pool {_text(pool.allocation_state).lower() or 'unknown'}: {waiting}",
        )

    def _pool_problems(self, pool: Any, image: str) -> list[str]:
        """What an existing pool lacks for this backend's jobs: the identity, the golden image
        mount made with it, the image's Azure registry pulled with it."""
        if not self._identity:
            return []
        want = self._identity.lower()
        problems = []
        identity = getattr(pool, "identity", None)
        held = {
            (u.resource_id or "").lower()
            for u in (getattr(identity, "user_assigned_identities", None) or [])
        }
        if want not in held:
            problems.append(
                f"does not carry the identity {self._identity} (WAA_COMPUTE_IDENTITY_ID)"
            )

        def by_identity(ref: Any) -> bool:
            return ref is not None and (ref.resource_id or "").lower() == want

        if self._golden is not None:
            blobs = [
                m.azure_blob_file_system_configuration
                for m in pool.mount_configuration or []
                if m.azure_blob_file_system_configuration is not None
            ]
            if not any(
                b.account_name == self._golden.account
                and b.container_name == self._golden.container
                and b.relative_mount_path == GOLDEN_MOUNT
                and by_identity(b.identity_reference)
                for b in blobs
            ):
                problems.append(
                    f"does not mount blob container {self._golden.account}/"
                    f"{self._golden.container} at {GOLDEN_MOUNT} with that identity "
                    "(WAA_GOLDEN_IMAGE_URL)"
                )
        registry = registry_of(image) if image else ""
        if _AZURE_REGISTRY.match(registry):
            vm = pool.virtual_machine_configuration
            containers = vm.container_configuration if vm is not None else None
            registries = (containers.container_registries if containers is not None else None) or []
            if not any(
                (r.registry_server or "").lower() == registry and by_identity(r.identity_reference)
                for r in registries
            ):
                problems.append(f"does not pull from {registry} with that identity (WAA_IMAGE)")
        return problems

    def pool_mounts(self) -> list[bm.MountConfiguration]:
        """The mount configuration the pool needs (what infra/app/batch.bicep declares)."""
        if self._golden is None:
            return []
        return [
            bm.MountConfiguration(
                azure_blob_file_system_configuration=bm.AzureBlobFileSystemConfiguration(
                    account_name=self._golden.account,
                    container_name=self._golden.container,
                    relative_mount_path=GOLDEN_MOUNT,
                    blobfuse_options=BLOBFUSE_OPTIONS,
                    identity_reference=bm.BatchNodeIdentityReference(resource_id=self._identity),
                )
            )
        ]

    def pool_registries(self, image: str) -> list[bm.ContainerRegistryReference]:
        """The private registry the pool pulls `image` from with its identity (bicep too)."""
        registry = registry_of(image)
        if not self._identity or not _AZURE_REGISTRY.match(registry):
            return []
        return [
            bm.ContainerRegistryReference(
                registry_server=registry,
                identity_reference=bm.BatchNodeIdentityReference(resource_id=self._identity),
            )
        ]

    def _create_pool(self, spec: CapacitySpec) -> None:
        nodes = {
            ("target_low_priority_nodes" if spec.spot else "target_dedicated_nodes"): spec.max_nodes
        }
        options = bm.BatchPoolCreateOptions(
            id=self._pool_id,
            vm_size=spec.vm_size,
            virtual_machine_configuration=bm.VirtualMachineConfiguration(
                image_reference=self._vm_image,
                node_agent_sku_id=self._node_agent,
                container_configuration=bm.BatchContainerConfiguration(
                    type=bm.ContainerType.DOCKER_COMPATIBLE,
                    container_image_names=[spec.image] if spec.image else None,
                ),
            ),
            start_task=bm.BatchStartTask(command_line=KVM_CHECK_COMMAND, wait_for_success=True),
            task_slots_per_node=1,
            resize_timeout=datetime.timedelta(minutes=30),
            **nodes,
        )
        try:
            self._client.create_pool(options)
        except HttpResponseError as err:
            if _exists(err):
                return
            raise self._classify(err, f"creating pool {self._pool_id!r}") from None
        except Exception as err:
            raise self._classify(err, f"creating pool {self._pool_id!r}") from None
        log.info("batch pool created", extra={"tier": self.tier.value})

    # --- jobs --------------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> SubmitResult:
        secrets = (*job_secrets(spec), *self._secrets)
        job_id = batch_job_id(spec.job_name)
        environment = runner_environment(spec)
        command_line = self._command
        bind_mounts = None
        if self._golden is not None:
            # Batch runs a task's command line without a shell; the container's /bin/sh expands
            # AZ_BATCH_NODE_MOUNTS_DIR, which Batch maps into the container with the task's
            # other environment variables.
            source = "/".join(
                p for p in ("$AZ_BATCH_NODE_MOUNTS_DIR", GOLDEN_MOUNT, self._golden.path) if p
            )
            script = f'WAA_STORAGE_SOURCE="{source}" exec {self._command}'
            command_line = f"/bin/sh -c {shlex.quote(script)}"
            environment.setdefault("WAA_STORAGE_DIR", CONTAINER_STORAGE_DIR)
            bind_mounts = GOLDEN_BIND_MOUNTS
        task = bm.BatchTaskCreateOptions(
            id=spec.job_name,
            display_name=f"{spec.evaluation_id} shard {spec.shard_index} attempt {spec.attempt}",
            command_line=command_line,
            container_settings=bm.BatchTaskContainerSettings(
                image_name=spec.image,
                container_run_options=self._run_options or None,
                container_host_batch_bind_mounts=bind_mounts,
            ),
            user_identity=ADMIN_AUTO_USER,
            environment_settings=[
                bm.EnvironmentSetting(name=k, value=v) for k, v in sorted(environment.items())
            ],
            constraints=bm.BatchTaskConstraints(
                max_wall_clock_time=datetime.timedelta(seconds=spec.timeout_seconds),
                max_task_retry_count=0,
            ),
        )
        action = f"submitting task {spec.job_name!r}"
        for first_try in (True, False):
            try:
                self._client.create_task(job_id, task)
                break
            except HttpResponseError as err:
                if _exists(err):
                    return SubmitResult(
                        job_name=spec.job_name,
                        backend_job_id=f"{job_id}/{spec.job_name}",
                        created=False,
                    )
                if first_try and service_code(err).lower() == "jobnotfound":
                    self._ensure_job(job_id, spec.evaluation_id, secrets)
                    continue
                raise self._classify(err, action, secrets) from None
            except Exception as err:
                raise self._classify(err, action, secrets) from None
        log.info(
            "batch task submitted",
            extra={"job_name": spec.job_name, "tier": self.tier.value, "attempt": spec.attempt},
        )
        return SubmitResult(
            job_name=spec.job_name, backend_job_id=f"{job_id}/{spec.job_name}", created=True
        )

    def _ensure_job(self, job_id: str, evaluation_id: str, secrets: tuple[str, ...]) -> None:
        job = bm.BatchJobCreateOptions(
            id=job_id,
            display_name=f"WAA evaluation {evaluation_id}",
            pool_info=bm.BatchPoolInfo(pool_id=self._pool_id),
            metadata=[bm.BatchMetadataItem(name="waa_evaluation", value=evaluation_id)],
        )
        try:
            self._client.create_job(job)
        except HttpResponseError as err:
            if not _exists(err):
                raise self._classify(err, f"creating job {job_id!r}", secrets) from None
        except Exception as err:
            raise self._classify(err, f"creating job {job_id!r}", secrets) from None

    def status(self, job_name: str) -> JobStatus:
        job_id = batch_job_id(job_name)
        try:
            task = self._client.get_task(job_id, job_name)
        except ResourceNotFoundError:
            raise JobNotFoundError(job_name) from None
        except Exception as err:
            raise self._classify(err, f"reading task {job_name!r}") from None
        raw = _text(task.state)
        info = task.execution_info
        failure = info.failure_info if info is not None else None
        code = (failure.code or "") if failure is not None else ""
        if raw.lower() == "completed" and code.lower() == TERMINATED_CODE:
            return JobStatus(
                job_name=job_name,
                state=JobState.CANCELLED,
                raw_status=f"{raw}/{code}",
                detail=failure.message or "" if failure is not None else "",
            )
        state, kind = from_batch_task(
            raw,
            info.exit_code if info is not None else None,
            _text(failure.category) if failure is not None else None,
            code or None,
        )
        exit_code = info.exit_code if info is not None else None
        if state is JobState.FAILED and exit_code == runner_exit_codes.NO_KVM:
            # The shard runner's own verdict: this node gives the container no /dev/kvm.
            kind = FailureKind.PERMANENT_FOR_TIER
        detail = ""
        if failure is not None:
            detail = f"{code}: {failure.message or ''}".strip()
            if info is not None and info.exit_code is not None:
                detail += f" (exit code {info.exit_code})"
        if raw.lower() == "active":
            blocked = self._pool_blocker()
            if blocked is not None:
                return JobStatus(
                    job_name=job_name,
                    state=JobState.FAILED,
                    raw_status=raw,
                    detail=blocked,
                    failure_kind=FailureKind.PERMANENT_FOR_TIER,
                )
        return JobStatus(
            job_name=job_name,
            state=state,
            raw_status=f"{raw}/{code}" if code else raw,
            detail=redact(detail, self._secrets),
            failure_kind=kind,
        )

    def _pool_blocker(self) -> str | None:
        """Why a waiting task can never start on this pool, if that is the case."""
        found = self._pool_and_nodes()
        if found is None:
            return self._missing_pool()
        return _blocker(self._pool_id, *found)

    def _pool_and_nodes(self) -> tuple[Any, list[Any]] | None:
        """The pool and its nodes (two reads), None when the pool does not exist."""
        try:
            pool = self._client.get_pool(self._pool_id)
            nodes = list(self._client.list_nodes(self._pool_id))
        except ResourceNotFoundError:
            return None
        except Exception as err:
            raise self._classify(err, f"reading pool {self._pool_id!r}") from None
        return pool, nodes

    def _missing_pool(self) -> str:
        return f"Batch pool {self._pool_id!r} does not exist: run ensure_capacity"

    def cancel(self, job_name: str) -> None:
        job_id = batch_job_id(job_name)
        try:
            self._client.terminate_task(job_id, job_name)
        except ResourceNotFoundError:
            return
        except HttpResponseError as err:
            # Terminating a task that already completed is fine.
            if status_code(err) == 409:
                try:
                    if self.status(job_name).state.is_terminal:
                        return
                except (JobNotFoundError, BackendError):
                    pass
            raise self._classify(err, f"terminating task {job_name!r}") from None
        except Exception as err:
            raise self._classify(err, f"terminating task {job_name!r}") from None
        log.info("batch task terminated", extra={"job_name": job_name})

    def end_evaluation(self, evaluation_id: str) -> None:
        """Terminates the evaluation's Batch job (its tasks end with it): started, not waited
        for (the SDK's poller follows it on its own daemon thread). A job that is already
        ending or ended, or that never existed, is fine."""
        job_id = evaluation_job_id(evaluation_id)
        action = f"terminating job {job_id!r}"
        try:
            # The options as their wire JSON: azure-batch 15.1 does not export the
            # BatchJobTerminateOptions model (models/_models.py only), and without options it
            # fails before sending (_terminate_job_internal sets content_type None, which its
            # header serializer refuses).
            self._client.begin_terminate_job(
                job_id,
                {"terminateReason": "WAA evaluation ended"},  # type: ignore[arg-type]
                polling_interval=30,
            )
        except ResourceNotFoundError:
            return
        except HttpResponseError as err:
            if status_code(err) == 404 or (
                status_code(err) == 409 and service_code(err).lower() in ENDED_JOB_CODES
            ):
                return
            raise self._classify(err, action) from None
        except Exception as err:
            raise self._classify(err, action) from None
        log.info("batch job terminated", extra={"evaluation_id": evaluation_id})

    def evaluations_holding_jobs(self) -> list[str]:
        """Evaluations whose Batch job is still active (for the sweeper, which ends those of
        evaluations that are over): one listing of the account's active jobs."""
        try:
            jobs = list(
                self._client.list_jobs(filter="state eq 'active'", select=["id", "metadata"])
            )
        except Exception as err:
            raise self._classify(err, "listing active jobs") from None
        found = []
        for job in jobs:
            for item in job.metadata or []:
                if item.name == "waa_evaluation" and item.value:
                    found.append(item.value)
        return sorted(set(found))

    # --- helpers -----------------------------------------------------------------------------
    def _call(self, fn: Any, action: str) -> Any:
        try:
            return fn()
        except Exception as err:
            raise self._classify(err, action) from None

    def _classify(
        self, err: BaseException, action: str, secrets: tuple[str, ...] = ()
    ) -> BackendError:
        return ERRORS.classify(err, action, (*secrets, *self._secrets))


def _blocker(pool_id: str, pool: Any, nodes: list[Any]) -> str | None:
    """Why no task can ever start on this pool, if that is the case: allocation failed (quota)
    and left no nodes, or every node is unusable / failed its start task."""
    if not nodes and pool.resize_errors:
        errors = "; ".join(f"{e.code}: {e.message}" for e in pool.resize_errors)
        hint = (
            " Request a core quota increase for the Batch account."
            if QUOTA_HINT.search(errors)
            else ""
        )
        return f"Batch pool {pool_id!r} could not allocate nodes: {errors}.{hint}"
    failing = [
        n for n in nodes if batch_node_failure(_text(n.state)) is FailureKind.PERMANENT_FOR_TIER
    ]
    if nodes and len(failing) == len(nodes):
        errors = "; ".join(
            f"{n.id} {_text(n.state)}"
            + "".join(f" ({e.code}: {e.message})" for e in n.errors or [])
            for n in failing
        )
        return (
            f"every node of Batch pool {pool_id!r} is unusable: {errors}. The start "
            "task checks /dev/kvm: use a VM size with nested virtualization"
        )
    return None


def _exists(err: HttpResponseError) -> bool:
    return status_code(err) == 409 and service_code(err).lower() in EXISTS_CODES
