"""The Azure ML tier: an AmlCompute cluster and one command job per shard attempt.

Everything goes through `azure-ai-ml`'s MLClient; its ARM pipeline retries throttling (honouring
Retry-After) and 5xx before an error reaches this module, which then only classifies what is
left. Secrets never travel in the job (a workspace reader sees its definition): with a Key Vault
the job gets the names of its secrets and reads them itself at start (adapters/compute/job_env.py);
without one the per-attempt heartbeat token is an environment variable of the job, redacted from
every message this module produces.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from azure.ai.ml import Input, MLClient, command
from azure.ai.ml.entities import (
    AmlCompute,
    Environment,
    IdentityConfiguration,
    ManagedIdentityConfiguration,
)
from azure.ai.ml.exceptions import MlException
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from adapters.compute._azure_errors import (
    ErrorClassifier,
    Refusal,
    redact,
    service_message,
    status_code,
)
from adapters.compute.golden import CONTAINER_STORAGE_DIR, parse_golden_image_url
from adapters.compute.job_env import job_secrets, runner_environment
from domain import bounds
from domain.job_state import from_azureml
from domain.jobs import (
    BackendError,
    CapacityReport,
    CapacitySpec,
    ContainerOptions,
    FailureKind,
    JobNotFoundError,
    JobSpec,
    JobStatus,
    PermanentTierError,
    SubmitResult,
    Tier,
    TransientBackendError,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from adapters.settings import AppSettings

log = logging.getLogger(__name__)

# The shard runner is baked into the job image (see docs/azure-setup.md), so the job needs no
# code upload.
DEFAULT_COMMAND = "python -m shard_runner"
# The golden image is the job's input of this name, mounted read-only (Input mode "ro_mount").
STORAGE_INPUT = "storage"
# The runner learns the mount's path from the command line, not from an environment variable:
# azure-ai-ml resolves and checks `${{inputs.<name>}}` references only in `command`
# (entities/_job/_input_output_helpers.py validate_inputs_for_command, called from
# CommandJob._validate at entities/_job/command_job.py:343) and sends environment_variables
# verbatim; its AZURE_ML_INPUT_ prefix for input environment variables is marked "no reference
# found. leave it for future use" (entities/_job/parameterized_command.py). `env` sets the
# variable for the runner whether or not the service runs the command through a shell.
STORAGE_COMMAND_PREFIX = f"env WAA_STORAGE_SOURCE=${{{{inputs.{STORAGE_INPUT}}}}}"

# ARM provisioning states of a compute resource: usable, never going to be, on its way.
_READY_STATES = frozenset({"succeeded"})
_BROKEN_STATES = frozenset({"failed", "canceled", "deleting"})

# Azure ML reports no failure category; a failed job is the job's own failure until the
# shard runner's messages or the policy say otherwise.
_FAILURE_KINDS = {"failed": FailureKind.JOB_FAILED}

QUOTA_CODES = frozenset(
    {
        "quotaexceeded",
        "clustercorequotareached",
        "corequotaexceeded",
        "totalcorequotareached",
        "lowprioritycorequotareached",
    }
)
IMAGE_CODES = frozenset({"invalidimage", "imagenotfound", "imagepullfailed", "invalidimagename"})

ERRORS = ErrorClassifier(
    service="Azure ML",
    auth_hint="Grant the function app's managed identity the 'AzureML Data Scientist' role on "
    "the workspace (and 'AcrPull' on the image registry), or check AZURE_CLIENT_ID",
    refusals=(
        Refusal(
            matches=lambda code, text: code.lower() in QUOTA_CODES or "quota" in text.lower(),
            what="quota exhausted",
            hint="Request a quota increase for this VM family in the workspace's region, or "
            "use a smaller VM size, fewer workers or the other (dedicated/low priority) tier",
            default_code="QuotaExceeded",
        ),
        Refusal(
            matches=lambda code, text: code.lower() in IMAGE_CODES or "image" in text.lower(),
            what="cannot use the job image",
            hint="Check WAA_IMAGE and that the workspace can pull it (AcrPull on the registry)",
            default_code="InvalidImage",
        ),
    ),
)


def _quiet_sdk_activity_logs() -> None:
    """azure-ai-ml logs every operation's outcome through per-module loggers under
    `azure.ai.ml._telemetry` (an expected 404, such as the idempotency lookup before each
    submit, as ERROR) with the service's error text verbatim, and attaches the root's handlers
    to them itself, so propagation settings don't contain them. This module classifies, redacts
    and logs those outcomes itself; the SDK's copies are switched off."""
    prefix = "azure.ai.ml._telemetry."
    for name, sdk_logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith(prefix) and isinstance(sdk_logger, logging.Logger):
            sdk_logger.disabled = True


# Passed by MLClient to every service client's azure-core pipeline: the ARM retry policy
# honours Retry-After on throttling and 5xx, and `timeout` ends one operation with all its
# retries within bounds.AZUREML_OPERATION_SECONDS, so an activity gives up in time and the
# orchestration's own backoff takes over.
CLIENT_OPTIONS: dict[str, Any] = {
    "connection_timeout": bounds.AZUREML_CONNECTION_TIMEOUT,
    "read_timeout": bounds.AZUREML_READ_TIMEOUT,
    "retry_total": bounds.AZUREML_RETRY_TOTAL,
    "retry_backoff_factor": 1.0,
    "retry_backoff_max": bounds.AZUREML_RETRY_BACKOFF_MAX,
    "timeout": bounds.AZUREML_RETRY_TIMEOUT,
}


class AzureMLBackend:
    tier = Tier.AZURE_ML

    def __init__(
        self,
        ml_client: MLClient,
        *,
        compute_name: str,
        command: str = DEFAULT_COMMAND,
        container: ContainerOptions | None = None,
        golden_image_url: str | None = None,
        compute_identity_id: str | None = None,
        cancel_wait_seconds: float = bounds.AZUREML_CANCEL_WAIT_SECONDS,
    ) -> None:
        _quiet_sdk_activity_logs()
        self._ml = ml_client
        self._compute_name = compute_name
        self._command = command
        self._container = container or ContainerOptions()
        # Checked here too: a malformed URL fails at construction, not in every submit.
        self._golden = parse_golden_image_url(golden_image_url).url if golden_image_url else None
        # The compute's user-assigned identity: the cluster carries it and each job runs as it
        # (mounts its input, reads its Key Vault secrets); None: the service's defaults.
        self._identity = compute_identity_id or None
        self._cancel_wait = cancel_wait_seconds

    @classmethod
    def from_settings(
        cls, settings: AppSettings, credential: TokenCredential | None = None
    ) -> AzureMLBackend:
        missing = [
            name
            for name, value in (
                ("AZURE_SUBSCRIPTION_ID", settings.azure_subscription_id),
                ("AZURE_RESOURCE_GROUP", settings.azure_resource_group),
                ("AZUREML_WORKSPACE", settings.azureml_workspace),
            )
            if not value
        ]
        if missing:
            raise PermanentTierError(
                f"the Azure ML tier needs the app settings {', '.join(missing)}",
                code="MissingSettings",
            )
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)
        client = MLClient(
            credential,
            settings.azure_subscription_id,
            settings.azure_resource_group,
            settings.azureml_workspace,
            enable_telemetry=False,
            **CLIENT_OPTIONS,
        )
        return cls(
            client,
            compute_name=settings.azureml_compute_name,
            container=settings.container_options,
            golden_image_url=settings.waa_golden_image_url,
            compute_identity_id=settings.compute_identity_id,
        )

    # --- capacity ----------------------------------------------------------------------------
    def ensure_capacity(self, spec: CapacitySpec) -> CapacityReport:
        want_tier = "low_priority" if spec.spot else "dedicated"
        try:
            existing = self._ml.compute.get(self._compute_name)
        except ResourceNotFoundError:
            existing = None
        except Exception as err:
            raise self._classify(err, f"reading compute cluster {self._compute_name!r}") from None

        if existing is None:
            cluster = AmlCompute(
                name=self._compute_name,
                size=spec.vm_size,
                min_instances=0,
                max_instances=spec.max_nodes,
                idle_time_before_scale_down=spec.idle_seconds_before_scale_down,
                tier=want_tier,
                identity=self._cluster_identity(),
            )
            # Started, not waited for: creating a cluster takes minutes, and the shard
            # orchestration polls `capacity_status` with durable timers instead. (The SDK's
            # poller keeps polling on its own daemon thread; nothing waits on it.)
            self._call(
                lambda: self._ml.compute.begin_create_or_update(cluster),
                f"creating compute cluster {self._compute_name!r}",
            )
            log.info("azureml cluster creation started", extra={"tier": self.tier.value})
            return CapacityReport(
                tier=self.tier,
                resource_name=self._compute_name,
                created=True,
                ready=False,
                detail=f"creating {spec.vm_size} {want_tier} cluster, 0..{spec.max_nodes} nodes",
            )

        if not isinstance(existing, AmlCompute):
            raise PermanentTierError(
                f"compute {self._compute_name!r} exists but is a {existing.type}, not an "
                "AmlCompute cluster: set AZUREML_COMPUTE_NAME to another name",
                code="WrongComputeType",
            )
        if (existing.size or "").lower() != spec.vm_size.lower():
            raise PermanentTierError(
                f"compute cluster {self._compute_name!r} has VM size {existing.size}, the "
                f"evaluation needs {spec.vm_size}; Azure ML cannot change the VM size of an "
                "existing cluster: delete the cluster or set AZUREML_COMPUTE_NAME to a new name",
                code="ClusterSizeMismatch",
            )
        if (existing.tier or "").lower().replace("_", "") != want_tier.replace("_", ""):
            raise PermanentTierError(
                f"compute cluster {self._compute_name!r} is {existing.tier}, the evaluation asks "
                f"for {want_tier}; the priority of an existing cluster cannot change: delete "
                "the cluster or set AZUREML_COMPUTE_NAME to a new name",
                code="ClusterPriorityMismatch",
            )
        state = self._provisioning_state(existing)
        changes = []
        if (existing.max_instances or 0) < spec.max_nodes:
            changes.append(f"max nodes {existing.max_instances} -> {spec.max_nodes}")
            existing.max_instances = spec.max_nodes
        if existing.min_instances:
            # Idle nodes of an evaluation cluster only burn money.
            changes.append(f"min nodes {existing.min_instances} -> 0")
            existing.min_instances = 0
        if self._lacks_identity(existing):
            # Jobs run as the compute identity: the cluster must carry it (an update may add
            # an identity to an existing cluster).
            changes.append("adding the compute identity (WAA_COMPUTE_IDENTITY_ID)")
            existing.identity = self._cluster_identity()
        if not changes:
            ready = state in _READY_STATES
            return CapacityReport(
                tier=self.tier,
                resource_name=self._compute_name,
                ready=ready,
                detail=f"cluster {'ready' if ready else state or 'provisioning'}: "
                f"{existing.size}, 0..{existing.max_instances} nodes",
            )
        # Started, not waited for (see above).
        self._call(
            lambda: self._ml.compute.begin_update(existing),
            f"updating compute cluster {self._compute_name!r}",
        )
        log.info("azureml cluster update started: %s", "; ".join(changes))
        return CapacityReport(
            tier=self.tier,
            resource_name=self._compute_name,
            updated=True,
            ready=False,
            detail="updating " + "; ".join(changes),
        )

    def _cluster_identity(self) -> IdentityConfiguration | None:
        if self._identity is None:
            return None
        return IdentityConfiguration(
            type="user_assigned",
            user_assigned_identities=[ManagedIdentityConfiguration(resource_id=self._identity)],
        )

    def _job_identity(self) -> ManagedIdentityConfiguration | None:
        # A command job's `identity` is what it reaches data (the ro_mount input) and Azure
        # with; a managed identity of the compute, named by resource id (azure-ai-ml
        # ManagedIdentityConfiguration(resource_id=...), the wire's identity.resourceId).
        return ManagedIdentityConfiguration(resource_id=self._identity) if self._identity else None

    def _lacks_identity(self, cluster: AmlCompute) -> bool:
        if self._identity is None:
            return False
        held = getattr(cluster.identity, "user_assigned_identities", None) or []
        return self._identity.lower() not in {(i.resource_id or "").lower() for i in held}

    def capacity_status(self, spec: CapacitySpec) -> CapacityReport:
        """One read of the cluster: ready once its provisioning succeeded."""
        try:
            cluster = self._ml.compute.get(self._compute_name)
        except ResourceNotFoundError:
            raise PermanentTierError(
                f"compute cluster {self._compute_name!r} does not exist (deleted meanwhile?)",
                code="ClusterNotFound",
            ) from None
        except Exception as err:
            raise self._classify(err, f"reading compute cluster {self._compute_name!r}") from None
        state = self._provisioning_state(cluster)
        return CapacityReport(
            tier=self.tier,
            resource_name=self._compute_name,
            ready=state in _READY_STATES,
            detail=f"cluster {state or 'provisioning'}",
        )

    def _provisioning_state(self, cluster: Any) -> str:
        """The cluster's provisioning state, lower case; a cluster that will never be usable
        is a permanent error for the tier, with the service's error code."""
        # The SDK hands back an Enum for known states and a str for new ones.
        raw = getattr(cluster, "provisioning_state", None)
        state = str(getattr(raw, "value", raw) or "").lower()
        if state in _BROKEN_STATES:
            errors = getattr(cluster, "provisioning_errors", None)
            raise PermanentTierError(
                f"compute cluster {self._compute_name!r} is {state}"
                + (f" ({errors})" if errors else "")
                + ": delete it or set AZUREML_COMPUTE_NAME to a new name",
                code="ClusterProvisioningFailed",
            )
        return state

    # --- jobs --------------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> SubmitResult:
        secrets = job_secrets(spec)
        found = self._find(spec.job_name, secrets)
        if found is not None:
            return SubmitResult(job_name=spec.job_name, backend_job_id=found, created=False)

        environment = runner_environment(spec)
        inputs: dict[str, Input] = {}
        job_command = self._command
        if self._golden is not None:
            # Read-only: the runner copies it to its own writable WAA_STORAGE_DIR, so every
            # attempt starts from a pristine image and nothing writes back.
            inputs[STORAGE_INPUT] = Input(type="uri_folder", path=self._golden, mode="ro_mount")
            job_command = f"{STORAGE_COMMAND_PREFIX} {self._command}"
            environment.setdefault("WAA_STORAGE_DIR", CONTAINER_STORAGE_DIR)
        job = command(
            name=spec.job_name,
            display_name=spec.job_name,
            command=job_command,
            inputs=inputs or None,
            environment=Environment(image=spec.image),
            environment_variables=environment,
            tags={
                **spec.tags,
                "waa_evaluation": spec.evaluation_id,
                "waa_shard": str(spec.shard_index),
                "waa_attempt": str(spec.attempt),
            },
            experiment_name=spec.experiment_name or spec.evaluation_id,
            compute=self._compute_name,
            timeout=spec.timeout_seconds,
            # The command job's own fields (azure.ai.ml.command(docker_args=..., shm_size=...)):
            # docker_args as one string (the wire's dockerArgs), shared memory through shm_size.
            docker_args=" ".join(self._container.docker_args()) or None,
            shm_size=self._container.shm_size,
            identity=self._job_identity(),
        )
        try:
            created = self._ml.jobs.create_or_update(job)
        except HttpResponseError as err:
            if _already_exists(err):
                # A re-delivered activity raced an earlier submit of the same attempt.
                found = self._find(spec.job_name, secrets)
                if found is not None:
                    return SubmitResult(job_name=spec.job_name, backend_job_id=found, created=False)
            raise self._classify(err, f"submitting job {spec.job_name!r}", secrets) from None
        except Exception as err:
            raise self._classify(err, f"submitting job {spec.job_name!r}", secrets) from None
        log.info(
            "azureml job submitted",
            extra={"job_name": spec.job_name, "tier": self.tier.value, "attempt": spec.attempt},
        )
        return SubmitResult(
            job_name=spec.job_name, backend_job_id=str(created.id or spec.job_name), created=True
        )

    def status(self, job_name: str) -> JobStatus:
        try:
            job = self._ml.jobs.get(job_name)
        except ResourceNotFoundError:
            raise JobNotFoundError(job_name) from None
        except Exception as err:
            raise self._classify(err, f"reading job {job_name!r}") from None
        # The SDK hands back a plain Enum for known statuses and a str for new ones.
        raw = str(getattr(job.status, "value", job.status) or "")
        key = raw.replace(" ", "").lower()
        detail = ""
        if key in _FAILURE_KINDS:
            detail = self._run_error(job_name)
            if job.studio_url:
                detail = f"{detail} (see {job.studio_url})" if detail else f"see {job.studio_url}"
        return JobStatus(
            job_name=job_name,
            state=from_azureml(raw),
            raw_status=raw,
            detail=detail,
            failure_kind=_FAILURE_KINDS.get(key),
        )

    def cancel(self, job_name: str) -> None:
        try:
            current = self.status(job_name)
        except JobNotFoundError:
            return
        if current.state.is_terminal:
            return
        try:
            poller = self._ml.jobs.begin_cancel(job_name)
            # Bounded: never `.result()` without a timeout inside an activity.
            poller.wait(self._cancel_wait)
        except ResourceNotFoundError:
            return
        except Exception as err:
            # Cancelling a job that finished in the meantime is fine; anything else is not.
            try:
                if self.status(job_name).state.is_terminal:
                    return
            except (JobNotFoundError, BackendError):
                pass
            raise self._classify(err, f"cancelling job {job_name!r}") from None
        if not poller.done():
            # Requested but not confirmed: the caller asks again (the orchestration's cancel
            # retry, or the sweeper), and the next attempt is not submitted meanwhile.
            raise TransientBackendError(
                f"cancel of job {job_name!r} requested; Azure ML did not confirm it within "
                f"{self._cancel_wait:g} s",
                code="CancelNotConfirmed",
            )
        log.info("azureml job cancelled", extra={"job_name": job_name})

    def end_evaluation(self, evaluation_id: str) -> None:
        """Nothing to end: each attempt is its own command job, ended by itself or by `cancel`;
        the cluster scales to zero on its own (min_instances 0) and the experiment is only a
        name in the job history."""

    # --- helpers -----------------------------------------------------------------------------
    def _run_error(self, job_name: str) -> str:
        """The failed job's error text. The job resource has none; run history has it, and the
        SDK reaches run history only through its run operations, which are not part of its
        public surface. Best effort: without it the status is still right, only less telling."""
        try:
            details = self._ml.jobs._runs_operations.get_run_details(job_name)
        except Exception as err:
            log.info("azureml run error unavailable for %s: %s", job_name, type(err).__name__)
            return ""
        root = getattr(getattr(details, "error", None), "error", None)
        if root is None:
            return ""
        return f"{root.code}: {root.message}" if root.code else str(root.message or "")

    def _find(self, job_name: str, secrets: tuple[str, ...]) -> str | None:
        try:
            job = self._ml.jobs.get(job_name)
        except ResourceNotFoundError:
            return None
        except Exception as err:
            raise self._classify(err, f"looking up job {job_name!r}", secrets) from None
        return str(job.id or job_name)

    def _call(self, fn: Any, action: str) -> Any:
        try:
            return fn()
        except Exception as err:
            raise self._classify(err, action) from None

    def _classify(
        self, err: BaseException, action: str, secrets: tuple[str, ...] = ()
    ) -> BackendError:
        if isinstance(err, MlException):
            # The SDK's own client-side validation of what we asked for (never an HTTP or
            # network error): retrying the same request won't help.
            return PermanentTierError(
                f"Azure ML SDK rejected {action}: {redact(str(err), secrets)}",
                code="ValidationError",
            )
        return ERRORS.classify(err, action, secrets)


def _already_exists(err: HttpResponseError) -> bool:
    return status_code(err) == 409 or "already exists" in service_message(err).lower()
