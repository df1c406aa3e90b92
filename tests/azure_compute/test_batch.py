"""BatchBackend through the real azure-batch client against the fake Batch endpoint: pool,
job and task request bodies, state and failure classification, shared-key auth, secrets."""

from __future__ import annotations

import logging

import isodate
import pytest

from adapters.compute.batch import BatchBackend, batch_job_id
from adapters.settings import AppSettings
from domain.jobs import (
    FailureKind,
    JobNotFoundError,
    JobState,
    PermanentTierError,
    TransientBackendError,
)
from domain.naming import job_name
from shard_runner.runner import EXIT_NO_KVM
from tests.contract.harnesses.batch import TOKEN, capacity_spec, job_spec, make_client
from tests.fakes.batch_server import FakeBatch

POOL = "waa-pool"
NAME = job_name("ev1", 2, 1)


def backend(fake: FakeBatch, *, retries: int = 2, key: str | None = None) -> BatchBackend:
    return BatchBackend(make_client(fake, retries=retries, key=key), pool_id=POOL)


def ready(fake: FakeBatch, **overrides: object) -> BatchBackend:
    b = backend(fake)
    b.ensure_capacity(capacity_spec(**overrides))
    return b


# --- ensure_capacity ---------------------------------------------------------------------------
def test_pool_prefetches_the_image_on_a_container_capable_vm(batch: FakeBatch) -> None:
    report = backend(batch).ensure_capacity(capacity_spec(max_nodes=4))
    assert report.created
    pool = batch.pools[POOL]
    assert pool["vmSize"] == "Standard_D4s_v5"
    vm = pool["virtualMachineConfiguration"]
    assert vm["containerConfiguration"]["type"] == "dockerCompatible"
    assert vm["containerConfiguration"]["containerImageNames"] == [
        "waaregistry.azurecr.io/winarena:1"
    ]
    assert vm["nodeAgentSKUId"].startswith("batch.node.ubuntu")
    assert vm["imageReference"]["offer"] == "ubuntu-hpc"
    assert "/dev/kvm" in pool["startTask"]["commandLine"]
    assert pool["startTask"]["waitForSuccess"] is True
    assert (pool["targetDedicatedNodes"], pool["targetLowPriorityNodes"]) == (4, 0)


def test_spot_pool_uses_low_priority_nodes(batch: FakeBatch) -> None:
    backend(batch).ensure_capacity(capacity_spec(spot=True, max_nodes=2))
    pool = batch.pools[POOL]
    assert (pool["targetDedicatedNodes"], pool["targetLowPriorityNodes"]) == (0, 2)


def test_existing_pool_with_another_vm_size_is_a_permanent_error(batch: FakeBatch) -> None:
    ready(batch, vm_size="Standard_D2_v3")
    with pytest.raises(PermanentTierError) as caught:
        backend(batch).ensure_capacity(capacity_spec(vm_size="Standard_D4s_v5"))
    assert "Standard_D2_v3" in str(caught.value) and "BATCH_POOL_ID" in str(caught.value)


def test_too_few_nodes_resizes_the_pool(batch: FakeBatch) -> None:
    ready(batch, max_nodes=1)
    report = backend(batch).ensure_capacity(capacity_spec(max_nodes=5))
    assert report.updated and not report.created
    assert batch.pools[POOL]["targetDedicatedNodes"] == 5
    resizes = [r for r in batch.requests if r.path == f"/pools/{POOL}/resize"]
    assert [r.json() for r in resizes] == [{"targetDedicatedNodes": 5}]


def test_pool_that_does_not_prefetch_the_image_is_reported(batch: FakeBatch) -> None:
    ready(batch, image="docker.io/windowsarena/winarena:latest")
    report = backend(batch).ensure_capacity(capacity_spec())
    assert "not prefetched" in report.detail


# --- submit ------------------------------------------------------------------------------------
def test_task_carries_container_env_and_constraints(batch: FakeBatch) -> None:
    b = ready(batch)
    spec = job_spec(NAME, shard_index=2, environment={"WAA_TASK_IDS": "a,b", "WAA_AGENT": "navi"})
    result = b.submit(spec)
    assert result.created
    task = batch.task(NAME)
    container = task["containerSettings"]
    assert container["imageName"] == "waaregistry.azurecr.io/winarena:1"
    # WAA's launch contract: the KVM device, QEMU's tap network, 16 GB of shared memory.
    options = container["containerRunOptions"].split()
    assert {"--device=/dev/kvm", "--cap-add=NET_ADMIN", "--shm-size=16g"} <= set(options)
    # Root in the container, or the runner cannot open /dev/kvm (the pool's admin auto-user).
    assert task["userIdentity"] == {"autoUser": {"scope": "pool", "elevationLevel": "admin"}}
    env = {e["name"]: e["value"] for e in task["environmentSettings"]}
    assert env == {"WAA_TASK_IDS": "a,b", "WAA_AGENT": "navi", "WAA_HEARTBEAT_TOKEN": TOKEN}
    limits = task["constraints"]
    assert isodate.parse_duration(limits["maxWallClockTime"]).total_seconds() == 7200
    assert limits["maxTaskRetryCount"] == 0


def test_one_batch_job_per_evaluation(batch: FakeBatch) -> None:
    b = ready(batch)
    for shard in range(3):
        b.submit(job_spec(job_name("ev1", shard, 1), shard_index=shard))
    b.submit(job_spec(job_name("ev2", 0, 1), evaluation_id="ev2"))
    assert sorted(batch.jobs) == ["waa-ev1", "waa-ev2"]
    assert batch.jobs["waa-ev1"]["poolInfo"] == {"poolId": POOL}
    job_creates = [r for r in batch.requests if r.method == "POST" and r.path == "/jobs"]
    assert len(job_creates) == 2
    assert batch_job_id(job_name("ev1", 7, 3)) == "waa-ev1"


def test_quota_on_job_creation_is_permanent_not_existing(batch: FakeBatch) -> None:
    b = ready(batch)
    batch.fail_next("quota", when=lambda r: r.path == "/jobs")
    with pytest.raises(PermanentTierError) as caught:
        b.submit(job_spec(NAME))
    assert caught.value.code == "ActiveJobAndScheduleQuotaReached"
    assert "quota" in str(caught.value)
    assert batch.task_creates == []


def test_retry_after_of_a_429_is_honoured_by_the_sdk(
    batch: FakeBatch, sdk_sleeps: list[float]
) -> None:
    b = ready(batch)
    batch.fail_next("throttle", retry_after="11")
    assert b.submit(job_spec(NAME)).created
    assert sdk_sleeps == [11]


def test_server_errors_beyond_the_sdk_retries_are_transient(batch: FakeBatch) -> None:
    b = ready(batch)
    batch.fail_next("server_error", count=3)
    with pytest.raises(TransientBackendError, match="503"):
        b.submit(job_spec(NAME))


def test_wrong_account_key_is_refused_and_permanent(batch: FakeBatch) -> None:
    wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktISE="
    b = BatchBackend(make_client(batch, key=wrong), pool_id=POOL, secrets=(wrong,))
    with pytest.raises(PermanentTierError) as caught:
        b.ensure_capacity(capacity_spec())
    assert batch.auth_failures == 1
    assert caught.value.code == "AuthenticationFailed"
    assert "BATCH_ACCOUNT_KEY" in str(caught.value)
    assert wrong not in str(caught.value)
    assert POOL not in batch.pools


def test_secrets_never_appear_in_logs_or_errors(
    batch: FakeBatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    b = BatchBackend(make_client(batch), pool_id=POOL, secrets=(batch.account_key,))
    b.ensure_capacity(capacity_spec())
    b.submit(job_spec(NAME))
    batch.fail_next_with(
        400,
        "InvalidPropertyValue",
        f"environmentSettings WAA_HEARTBEAT_TOKEN={TOKEN} key={batch.account_key}",
        when=lambda r: r.path.endswith("/tasks"),
    )
    with pytest.raises(PermanentTierError) as caught:
        b.submit(job_spec(job_name("ev1", 5, 1)))
    for secret in (TOKEN, batch.account_key):
        assert secret not in str(caught.value) and secret not in repr(caught.value)
    b.status(NAME)
    b.cancel(NAME)
    assert caplog.records
    assert TOKEN not in caplog.text and batch.account_key not in caplog.text


# --- status ------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", ["ContainerInvalidImage", "ContainerInvalidRegistry"])
def test_container_failures_are_permanent_for_the_tier(batch: FakeBatch, code: str) -> None:
    b = ready(batch)
    b.submit(job_spec(NAME))
    batch.fail_task(NAME, code, "The specified container image could not be pulled")
    status = b.status(NAME)
    assert status.state is JobState.FAILED
    assert status.failure_kind is FailureKind.PERMANENT_FOR_TIER
    assert code in status.detail and "could not be pulled" in status.detail


def test_non_zero_exit_is_a_job_failure_with_the_exit_code(batch: FakeBatch) -> None:
    b = ready(batch)
    b.submit(job_spec(NAME))
    batch.start_task(NAME)
    batch.complete_task(NAME, 1)
    status = b.status(NAME)
    assert (status.state, status.failure_kind) == (JobState.FAILED, FailureKind.JOB_FAILED)
    assert "exit code 1" in status.detail


def test_runner_exit_for_missing_kvm_is_permanent_for_the_tier(batch: FakeBatch) -> None:
    b = ready(batch)
    b.submit(job_spec(NAME))
    batch.start_task(NAME)
    batch.complete_task(NAME, EXIT_NO_KVM)
    status = b.status(NAME)
    assert (status.state, status.failure_kind) == (
        JobState.FAILED,
        FailureKind.PERMANENT_FOR_TIER,
    )


@pytest.mark.parametrize("node_state", ["unusable", "starttaskfailed"])
def test_waiting_task_on_a_pool_of_broken_nodes_is_permanent(
    batch: FakeBatch, node_state: str
) -> None:
    b = ready(batch)
    b.submit(job_spec(NAME))
    assert b.status(NAME).state is JobState.QUEUED
    batch.set_node_states(POOL, node_state, error="/dev/kvm missing")
    status = b.status(NAME)
    assert (status.state, status.failure_kind) == (
        JobState.FAILED,
        FailureKind.PERMANENT_FOR_TIER,
    )
    assert node_state in status.detail and "nested virtualization" in status.detail


def test_one_healthy_node_keeps_the_task_waiting(batch: FakeBatch) -> None:
    b = ready(batch, max_nodes=2)
    b.submit(job_spec(NAME))
    batch.nodes[POOL][0]["state"] = "unusable"
    assert b.status(NAME).state is JobState.QUEUED


def test_pool_allocation_failure_is_permanent_with_a_quota_hint(batch: FakeBatch) -> None:
    b = ready(batch)
    b.submit(job_spec(NAME))
    batch.set_resize_error(POOL, "AccountCoreQuotaReached", "Core quota reached: 0 of 0 cores")
    status = b.status(NAME)
    assert status.failure_kind is FailureKind.PERMANENT_FOR_TIER
    assert "AccountCoreQuotaReached" in status.detail and "quota increase" in status.detail


def test_status_of_unknown_task_and_unknown_evaluation(batch: FakeBatch) -> None:
    b = ready(batch)
    b.submit(job_spec(NAME))
    with pytest.raises(JobNotFoundError):
        b.status(job_name("ev1", 9, 9))
    with pytest.raises(JobNotFoundError):
        b.status(job_name("other", 0, 1))


def test_cancel_terminates_once_and_tolerates_repeats(batch: FakeBatch) -> None:
    b = ready(batch)
    b.submit(job_spec(NAME))
    batch.start_task(NAME)
    b.cancel(NAME)
    b.cancel(NAME)
    assert b.status(NAME).state is JobState.CANCELLED
    terminates = [r for r in batch.requests if r.path.endswith("/terminate")]
    assert len(terminates) == 2  # the second is a no-op on a completed task


# --- from_settings -----------------------------------------------------------------------------
def settings(**values: str) -> AppSettings:
    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "HEARTBEAT_SECRET": "s" * 32}
    return AppSettings.model_validate({**base, **values})


def test_from_settings_needs_the_account_url() -> None:
    with pytest.raises(PermanentTierError, match="BATCH_ACCOUNT_URL"):
        BatchBackend.from_settings(settings())


def test_from_settings_with_shared_key(batch: FakeBatch) -> None:
    b = BatchBackend.from_settings(
        settings(
            BATCH_ACCOUNT_URL=batch.url,
            BATCH_POOL_ID="pool-from-settings",
            BATCH_ACCOUNT_NAME=batch.account_name,
            BATCH_ACCOUNT_KEY=batch.account_key,
        )
    )
    b.ensure_capacity(capacity_spec())
    assert b.submit(job_spec(NAME)).created
    assert "pool-from-settings" in batch.pools
    assert batch.auth_failures == 0


# --- capacity that takes minutes -----------------------------------------------------------------
def test_a_new_pool_is_not_waited_for_and_is_ready_once_a_node_is_usable(batch: FakeBatch) -> None:
    b = backend(batch)
    report = b.ensure_capacity(capacity_spec(max_nodes=2))
    # Created and returned at once: allocation and the image prefetch run in the background.
    assert report.created and not report.ready
    # The nodes are still starting (booting, pulling the image, running the /dev/kvm check).
    batch.set_node_states(POOL, "starting")
    status = b.capacity_status(capacity_spec(max_nodes=2))
    assert not status.ready and "2 starting" in status.detail
    assert not b.ensure_capacity(capacity_spec(max_nodes=2)).ready
    batch.set_node_states(POOL, "idle")
    assert b.capacity_status(capacity_spec(max_nodes=2)).ready
    assert b.ensure_capacity(capacity_spec(max_nodes=2)).ready


def test_a_pool_that_cannot_allocate_is_permanent_for_the_tier(batch: FakeBatch) -> None:
    b = ready(batch)
    batch.set_resize_error(POOL, "AccountCoreQuotaReached", "The core quota was reached.")
    with pytest.raises(PermanentTierError) as caught:
        b.capacity_status(capacity_spec())
    assert caught.value.code == "PoolUnusable" and "quota" in str(caught.value)


def test_a_pool_of_nodes_without_kvm_is_permanent_for_the_tier(batch: FakeBatch) -> None:
    b = ready(batch, max_nodes=2)
    batch.set_node_states(POOL, "starttaskfailed", error="test -c /dev/kvm failed")
    with pytest.raises(PermanentTierError, match="nested virtualization"):
        b.capacity_status(capacity_spec(max_nodes=2))


def test_from_settings_client_carries_the_bounds_and_works(batch: FakeBatch) -> None:
    # The SDK accepts the per-operation bounds on every call the backend makes.
    b = BatchBackend.from_settings(
        settings(
            BATCH_ACCOUNT_URL=batch.url,
            BATCH_POOL_ID=POOL,
            BATCH_ACCOUNT_NAME=batch.account_name,
            BATCH_ACCOUNT_KEY=batch.account_key,
        )
    )
    b.ensure_capacity(capacity_spec())
    assert b.capacity_status(capacity_spec()).ready
    assert b.submit(job_spec(NAME)).created
    b.cancel(NAME)
    assert b.status(NAME).state is JobState.CANCELLED


# --- the pool declared in infra/app/batch.bicep: identity, registry, golden image mount -------
IDENTITY = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-waa/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/id-waa"
)
GOLDEN = "https://waagolden.blob.core.windows.net/golden/waa/storage"
VAULT = "https://kv-waa.vault.azure.net"


def bicep_pool(**overrides: object) -> dict[str, object]:
    """The pool as infra/app/batch.bicep declares it (ARM's pool properties, as the data plane
    then reports them)."""
    identity_ref = {"resourceId": IDENTITY}
    pool: dict[str, object] = {
        "id": POOL,
        "vmSize": "Standard_D4s_v5",
        "targetDedicatedNodes": 1,
        "identity": {"type": "UserAssigned", "userAssignedIdentities": [identity_ref]},
        "virtualMachineConfiguration": {
            "imageReference": {
                "publisher": "microsoft-dsvm",
                "offer": "ubuntu-hpc",
                "sku": "2204",
                "version": "latest",
            },
            "nodeAgentSKUId": "batch.node.ubuntu 22.04",
            "containerConfiguration": {
                "type": "dockerCompatible",
                "containerImageNames": ["waaregistry.azurecr.io/winarena:1"],
                "containerRegistries": [
                    {"registryServer": "waaregistry.azurecr.io", "identityReference": identity_ref}
                ],
            },
        },
        "mountConfiguration": [
            {
                "azureBlobFileSystemConfiguration": {
                    "accountName": "waagolden",
                    "containerName": "golden",
                    "relativeMountPath": "waa-golden",
                    "blobfuseOptions": "-o ro -o allow_other",
                    "identityReference": identity_ref,
                }
            }
        ],
        "startTask": {"commandLine": "/bin/sh -c 'test -c /dev/kvm'", "waitForSuccess": True},
    }
    pool.update(overrides)
    return pool


def identity_backend(fake: FakeBatch) -> BatchBackend:
    return BatchBackend(
        make_client(fake), pool_id=POOL, golden_image_url=GOLDEN, pool_identity_id=IDENTITY
    )


def test_a_pool_with_an_identity_is_never_created_by_the_app(batch: FakeBatch) -> None:
    with pytest.raises(PermanentTierError) as caught:
        identity_backend(batch).ensure_capacity(capacity_spec())
    assert caught.value.code == "PoolNotDeployed"
    assert "infra/app/batch.bicep" in str(caught.value)
    assert POOL not in batch.pools and not [r for r in batch.requests if r.method == "POST"]


def test_the_declared_pool_is_used_and_resized(batch: FakeBatch) -> None:
    batch.declare_pool(bicep_pool())
    report = identity_backend(batch).ensure_capacity(capacity_spec(max_nodes=2))
    assert report.updated and batch.pools[POOL]["targetDedicatedNodes"] == 2


@pytest.mark.parametrize(
    ("pool", "named"),
    [
        (bicep_pool(mountConfiguration=[]), "does not mount blob container waagolden/golden"),
        (
            bicep_pool(identity={"type": "None"}),
            "does not carry the identity",
        ),
        (
            bicep_pool(
                virtualMachineConfiguration={
                    **bicep_pool()["virtualMachineConfiguration"],  # type: ignore[dict-item]
                    "containerConfiguration": {"type": "dockerCompatible"},
                }
            ),
            "does not pull from waaregistry.azurecr.io with that identity",
        ),
    ],
)
def test_a_declared_pool_without_what_the_jobs_need_is_permanent_naming_it(
    batch: FakeBatch, pool: dict[str, object], named: str
) -> None:
    batch.declare_pool(pool)
    with pytest.raises(PermanentTierError) as caught:
        identity_backend(batch).ensure_capacity(capacity_spec())
    assert caught.value.code == "PoolMisconfigured"
    assert named in str(caught.value)


def test_the_pool_mount_and_registry_the_bicep_must_declare(batch: FakeBatch) -> None:
    b = identity_backend(batch)
    [mount] = [m.as_dict() for m in b.pool_mounts()]
    assert mount == {
        "azureBlobFileSystemConfiguration": {
            "accountName": "waagolden",
            "containerName": "golden",
            "relativeMountPath": "waa-golden",
            "blobfuseOptions": "-o ro -o allow_other -o attr_timeout=240 -o entry_timeout=240",
            "identityReference": {"resourceId": IDENTITY},
        }
    }
    [registry] = [r.as_dict() for r in b.pool_registries("waaregistry.azurecr.io/winarena:1")]
    assert registry == {
        "registryServer": "waaregistry.azurecr.io",
        "identityReference": {"resourceId": IDENTITY},
    }
    assert b.pool_registries("docker.io/windowsarena/winarena:latest") == []
    assert b.pool_registries("windowsarena/winarena:latest") == []


def test_a_task_reads_the_mounted_golden_image_read_only(batch: FakeBatch) -> None:
    batch.declare_pool(bicep_pool())
    b = identity_backend(batch)
    b.ensure_capacity(capacity_spec())
    b.submit(job_spec(NAME))
    task = batch.task(NAME)
    # Batch gives a container task only these node paths, at the host's paths: the mounts
    # directory read-only, the task's own directory.
    assert task["containerSettings"]["containerHostBatchBindMounts"] == [
        {"source": "VfsMounts", "isReadOnly": True},
        {"source": "Task", "isReadOnly": False},
    ]
    # The container's shell expands the mounts directory Batch maps into it.
    assert task["commandLine"] == (
        '/bin/sh -c \'WAA_STORAGE_SOURCE="$AZ_BATCH_NODE_MOUNTS_DIR/waa-golden/waa/storage" '
        "exec python -m shard_runner'"
    )
    env = {e["name"]: e["value"] for e in task["environmentSettings"]}
    assert env["WAA_STORAGE_DIR"] == "/storage"


def test_a_golden_image_needs_the_pool_identity() -> None:
    with pytest.raises(PermanentTierError, match="WAA_COMPUTE_IDENTITY_ID"):
        BatchBackend.from_settings(
            settings(
                BATCH_ACCOUNT_URL="https://waabatch.westeurope.batch.azure.com",
                WAA_GOLDEN_IMAGE_URL=GOLDEN,
            )
        )


def test_settings_reach_the_pool_checks_and_the_task(batch: FakeBatch) -> None:
    batch.declare_pool(bicep_pool())
    b = BatchBackend.from_settings(
        settings(
            BATCH_ACCOUNT_URL=batch.url,
            BATCH_POOL_ID=POOL,
            BATCH_ACCOUNT_NAME=batch.account_name,
            BATCH_ACCOUNT_KEY=batch.account_key,
            WAA_GOLDEN_IMAGE_URL=GOLDEN,
            WAA_COMPUTE_IDENTITY_ID=IDENTITY,
            WAA_CONTAINER_SHM_SIZE="32g",
        )
    )
    b.ensure_capacity(capacity_spec())
    b.submit(job_spec(NAME))
    task = batch.task(NAME)
    assert "--shm-size=32g" in task["containerSettings"]["containerRunOptions"].split()
    assert "waa-golden" in task["commandLine"]


def test_with_a_vault_the_task_names_its_secrets_and_holds_none(batch: FakeBatch) -> None:
    b = ready(batch)
    b.submit(
        job_spec(
            NAME,
            secrets_vault_url=VAULT,
            secret_env={"OPENAI_API_KEY": "openai-api-key"},
            heartbeat_token_secret="hb-ev1-s2-a1",
            environment={"WAA_TASK_IDS": "a", "WAA_HEARTBEAT_TOKEN": TOKEN},
        )
    )
    env = {e["name"]: e["value"] for e in batch.task(NAME)["environmentSettings"]}
    assert env == {
        "WAA_TASK_IDS": "a",
        "WAA_SECRETS_VAULT_URL": VAULT,
        "WAA_SECRETS": "OPENAI_API_KEY=openai-api-key",
        "WAA_HEARTBEAT_TOKEN_SECRET": "hb-ev1-s2-a1",
    }
    received = [r.body.decode(errors="replace") for r in batch.requests if r.body]
    assert received and all(TOKEN not in text for text in received)


# --- the evaluation's Batch job ends with it ---------------------------------------------------
def test_end_evaluation_terminates_the_job_and_its_running_tasks(batch: FakeBatch) -> None:
    b = ready(batch)
    b.submit(job_spec(NAME))
    batch.start_task(NAME)
    b.end_evaluation("ev1")
    assert batch.job_terminates == ["waa-ev1"]
    assert batch.jobs["waa-ev1"]["state"] == "completed"
    assert b.status(NAME).state is JobState.CANCELLED
    terminate = next(r for r in batch.requests if r.path == "/jobs/waa-ev1/terminate")
    assert terminate.json() == {"terminateReason": "WAA evaluation ended"}


def test_end_evaluation_is_idempotent_and_fine_for_unknown_evaluations(batch: FakeBatch) -> None:
    b = ready(batch)
    b.submit(job_spec(NAME))
    b.end_evaluation("ev1")
    b.end_evaluation("ev1")  # 409 JobCompleted: already ended
    b.end_evaluation("never-ran")  # 404 JobNotFound
    assert batch.job_terminates == [
        "waa-ev1",
        "waa-ev1",
    ]


def test_end_evaluation_failures_are_classified(batch: FakeBatch) -> None:
    b = ready(batch)
    b.submit(job_spec(NAME))
    batch.fail_next("server_error", count=3, when=lambda r: r.path.endswith("/terminate"))
    with pytest.raises(TransientBackendError):
        b.end_evaluation("ev1")
    batch.fail_next("auth", when=lambda r: r.path.endswith("/terminate"))
    with pytest.raises(PermanentTierError):
        b.end_evaluation("ev1")
    b.end_evaluation("ev1")
    assert batch.jobs["waa-ev1"]["state"] == "completed"


def test_evaluations_holding_jobs_lists_active_jobs_by_evaluation(batch: FakeBatch) -> None:
    b = ready(batch)
    b.submit(job_spec(NAME))
    b.submit(job_spec(job_name("ev2", 0, 1), evaluation_id="ev2"))
    assert b.evaluations_holding_jobs() == ["ev1", "ev2"]
    b.end_evaluation("ev1")
    assert b.evaluations_holding_jobs() == ["ev2"]
    assert any(
        r.query.get("$filter") == "state eq 'active'" and r.query.get("$select") == "id,metadata"
        for r in batch.requests
    )
