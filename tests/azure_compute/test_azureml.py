"""AzureMLBackend through the real azure-ai-ml client against the fake MFE: what the requests
carry, how errors are classified, and that secrets stay out of logs and errors."""

from __future__ import annotations

import logging

import isodate
import pytest

from adapters.compute.azureml import AzureMLBackend
from adapters.settings import AppSettings
from domain.jobs import (
    CapacitySpec,
    FailureKind,
    JobNotFoundError,
    JobState,
    PermanentTierError,
    Tier,
    TransientBackendError,
)
from domain.naming import job_name
from tests.contract.harnesses.azureml import TOKEN, job_spec, make_client
from tests.fakes.azureml_server import FakeAzureML
from tests.fakes.credentials import StaticTokenCredential

NAME = job_name("ev1", 3, 2)


def capacity(**overrides: object) -> CapacitySpec:
    fields: dict[str, object] = {
        "evaluation_id": "ev1",
        "tier": Tier.AZURE_ML,
        "vm_size": "Standard_D4s_v5",
        "max_nodes": 5,
        "idle_seconds_before_scale_down": 900,
    }
    fields.update(overrides)
    return CapacitySpec.model_validate(fields)


def backend(fake: FakeAzureML, *, retries: int = 2) -> AzureMLBackend:
    return AzureMLBackend(make_client(fake, retries=retries), compute_name="waa-cluster")


def ready(fake: FakeAzureML, **overrides: object) -> AzureMLBackend:
    b = backend(fake)
    b.ensure_capacity(capacity(**overrides))
    return b


def cluster_settings(fake: FakeAzureML) -> dict[str, object]:
    return fake.computes["waa-cluster"]["properties"]["properties"]


# --- ensure_capacity ---------------------------------------------------------------------------
def test_creates_a_scale_to_zero_cluster_with_the_requested_settings(aml: FakeAzureML) -> None:
    report = backend(aml).ensure_capacity(capacity(spot=True))
    assert report.created and report.resource_name == "waa-cluster"
    props = cluster_settings(aml)
    assert props["vmSize"] == "Standard_D4s_v5"
    assert props["vmPriority"] == "LowPriority"
    scale = props["scaleSettings"]
    assert (scale["minNodeCount"], scale["maxNodeCount"]) == (0, 5)
    assert isodate.parse_duration(scale["nodeIdleTimeBeforeScaleDown"]).total_seconds() == 900


def test_dedicated_cluster_when_not_spot(aml: FakeAzureML) -> None:
    backend(aml).ensure_capacity(capacity())
    assert cluster_settings(aml)["vmPriority"] == "Dedicated"


def test_existing_cluster_with_another_vm_size_is_a_permanent_error(aml: FakeAzureML) -> None:
    ready(aml, vm_size="Standard_D2_v3")
    puts_before = sum(r.method == "PUT" for r in aml.requests)
    with pytest.raises(PermanentTierError) as caught:
        backend(aml).ensure_capacity(capacity(vm_size="Standard_D4s_v5"))
    message = str(caught.value)
    assert "Standard_D2_v3" in message and "Standard_D4s_v5" in message
    assert "AZUREML_COMPUTE_NAME" in message
    # Never silently used, never half-updated.
    assert sum(r.method == "PUT" for r in aml.requests) == puts_before
    assert cluster_settings(aml)["vmSize"] == "Standard_D2_v3"


def test_existing_cluster_with_another_priority_is_a_permanent_error(aml: FakeAzureML) -> None:
    ready(aml, spot=False)
    with pytest.raises(PermanentTierError, match="low_priority"):
        backend(aml).ensure_capacity(capacity(spot=True))


def test_too_small_a_maximum_is_raised(aml: FakeAzureML) -> None:
    ready(aml, max_nodes=2)
    report = backend(aml).ensure_capacity(capacity(max_nodes=8))
    assert report.updated and not report.created
    assert cluster_settings(aml)["scaleSettings"]["maxNodeCount"] == 8
    # A bigger cluster is fine as it is.
    again = backend(aml).ensure_capacity(capacity(max_nodes=4))
    assert not again.updated and cluster_settings(aml)["scaleSettings"]["maxNodeCount"] == 8


def test_quota_error_is_permanent_with_an_actionable_message(aml: FakeAzureML) -> None:
    aml.fail_next("quota", when=lambda r: r.method == "PUT")
    with pytest.raises(PermanentTierError) as caught:
        backend(aml).ensure_capacity(capacity())
    assert caught.value.code == "QuotaExceeded"
    assert "quota increase" in str(caught.value)
    assert "standardDSv5Family" in str(caught.value)  # the service's own text is kept


# --- submit ------------------------------------------------------------------------------------
def test_job_request_carries_image_env_tags_timeout_and_compute(aml: FakeAzureML) -> None:
    b = ready(aml)
    spec = job_spec(
        NAME,
        shard_index=3,
        attempt=2,
        tags={"owner": "team-a"},
        environment={"WAA_TASK_IDS": "a,b", "WAA_JOB_NAME": NAME, "WAA_MAX_STEPS": "15"},
    )
    result = b.submit(spec)
    assert result.created and result.backend_job_id.endswith(f"/jobs/{NAME}")

    body = aml.job_body(NAME)
    env = aml.environments[body["environmentId"]]["properties"]
    assert env["image"] == "waaregistry.azurecr.io/winarena:1"
    assert body["computeId"].endswith("/computes/waa-cluster")
    assert body["environmentVariables"] == {
        "WAA_TASK_IDS": "a,b",
        "WAA_JOB_NAME": NAME,
        "WAA_MAX_STEPS": "15",
        "WAA_HEARTBEAT_TOKEN": TOKEN,
    }
    assert body["tags"] == {
        "owner": "team-a",
        "waa_evaluation": "ev1",
        "waa_shard": "3",
        "waa_attempt": "2",
    }
    assert isodate.parse_duration(body["limits"]["timeout"]).total_seconds() == 7200
    assert body["experimentName"] == "waa-ev1"
    assert body["command"] == "python -m shard_runner"
    assert "--device=/dev/kvm" in str(body["resources"]["dockerArgs"])
    # WAA's container options (DESIGN.md, "WAA's launch contract").
    assert "--cap-add=NET_ADMIN" in str(body["resources"]["dockerArgs"])
    assert body["resources"]["shmSize"] == "16g"


def test_experiment_defaults_to_the_evaluation(aml: FakeAzureML) -> None:
    ready(aml).submit(job_spec(NAME, experiment_name=""))
    assert aml.job_body(NAME)["experimentName"] == "ev1"


def test_create_racing_into_already_exists_returns_the_existing_job(aml: FakeAzureML) -> None:
    b = ready(aml)
    b.submit(job_spec(NAME))
    # The existence check misses the job (an earlier submit is still landing), the create then
    # collides with it.
    aml.fail_next("not_found", when=lambda r: r.method == "GET" and r.path.endswith(NAME))
    again = b.submit(job_spec(NAME))
    assert again.created is False
    assert aml.job_creates.count(NAME) == 1


def test_retry_after_of_a_429_is_honoured_by_the_sdk(
    aml: FakeAzureML, sdk_sleeps: list[float]
) -> None:
    b = ready(aml)
    aml.fail_next("throttle", retry_after="7", when=lambda r: r.method == "PUT")
    assert b.submit(job_spec(NAME)).created
    assert sdk_sleeps == [7]


def test_server_errors_beyond_the_sdk_retries_are_transient(aml: FakeAzureML) -> None:
    b = ready(aml)
    aml.fail_next("server_error", count=3)
    with pytest.raises(TransientBackendError) as caught:
        b.submit(job_spec(NAME))
    assert caught.value.kind is FailureKind.TRANSIENT
    assert "503" in str(caught.value)


def test_authorization_failure_is_permanent_and_names_the_role(aml: FakeAzureML) -> None:
    b = ready(aml)
    aml.fail_next("auth")
    with pytest.raises(PermanentTierError) as caught:
        b.submit(job_spec(NAME))
    assert "AzureML Data Scientist" in str(caught.value)


def test_invalid_image_is_permanent(aml: FakeAzureML) -> None:
    b = ready(aml)
    aml.fail_next("invalid_image", when=lambda r: "/jobs/" in r.path and r.method == "PUT")
    with pytest.raises(PermanentTierError) as caught:
        b.submit(job_spec(NAME))
    assert caught.value.code == "InvalidImage"
    assert "WAA_IMAGE" in str(caught.value)


def test_token_never_appears_in_logs_or_errors(
    aml: FakeAzureML, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    b = ready(aml)
    b.submit(job_spec(NAME))
    # A service that echoes the rejected request back in its error text.
    aml.fail_next_with(
        400,
        "UserError",
        f"environmentVariables.WAA_HEARTBEAT_TOKEN={TOKEN} is not allowed",
        when=lambda r: r.method == "PUT" and "/jobs/" in r.path,
    )
    other = job_name("ev1", 4, 1)
    with pytest.raises(PermanentTierError) as caught:
        b.submit(job_spec(other))
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)
    assert "***" in str(caught.value)
    b.status(NAME)
    b.cancel(NAME)
    assert caplog.records, "the test must actually capture the SDK's and the backend's logs"
    assert [r.name for r in caplog.records if TOKEN in r.getMessage()] == []
    assert TOKEN not in caplog.text


# --- status and cancel -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("azure_status", "state"),
    [
        ("NotStarted", JobState.SUBMITTED),
        ("Queued", JobState.QUEUED),
        ("Preparing", JobState.PREPARING),
        ("Running", JobState.RUNNING),
        ("Finalizing", JobState.RUNNING),
        ("Completed", JobState.COMPLETED),
        ("Failed", JobState.FAILED),
        ("Canceled", JobState.CANCELLED),
        ("CancelRequested", JobState.CANCELLED),
        ("SomethingNew", JobState.SUBMITTED),
    ],
)
def test_every_azure_ml_status_maps_to_a_state(
    aml: FakeAzureML, azure_status: str, state: JobState
) -> None:
    b = ready(aml)
    b.submit(job_spec(NAME))
    aml.set_job_status(NAME, azure_status)
    status = b.status(NAME)
    assert status.state is state
    assert status.raw_status == azure_status
    assert (status.failure_kind is FailureKind.JOB_FAILED) == (azure_status == "Failed")


def test_failed_job_keeps_the_service_error_text(aml: FakeAzureML) -> None:
    b = ready(aml)
    b.submit(job_spec(NAME))
    aml.set_job_status(
        NAME,
        "Failed",
        error=("UserError", "Execution failed: exit code 1 in python -m shard_runner"),
    )
    status = b.status(NAME)
    assert status.state is JobState.FAILED
    assert status.detail.startswith("UserError: Execution failed: exit code 1")


def test_status_of_unknown_job(aml: FakeAzureML) -> None:
    with pytest.raises(JobNotFoundError):
        ready(aml).status("waa-nope-s0-a1")


def test_cancel_goes_through_the_service_and_is_idempotent(aml: FakeAzureML) -> None:
    b = ready(aml)
    b.submit(job_spec(NAME))
    aml.set_job_status(NAME, "Running")
    b.cancel(NAME)
    b.cancel(NAME)
    cancels = [r for r in aml.requests if r.method == "POST" and r.path.endswith("/cancel")]
    assert len(cancels) == 1
    assert aml.job_status(NAME) == "Canceled"


# --- from_settings -----------------------------------------------------------------------------
def settings(**values: str) -> AppSettings:
    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "HEARTBEAT_SECRET": "s" * 32}
    return AppSettings.model_validate({**base, **values})


def test_from_settings_names_missing_settings() -> None:
    with pytest.raises(PermanentTierError) as caught:
        AzureMLBackend.from_settings(settings(AZURE_SUBSCRIPTION_ID="sub"), StaticTokenCredential())
    assert "AZURE_RESOURCE_GROUP" in str(caught.value) and "AZUREML_WORKSPACE" in str(caught.value)


def _configured_backend(
    aml: FakeAzureML, monkeypatch: pytest.MonkeyPatch, *, compute_name: str
) -> AzureMLBackend:
    """The backend as the app builds it from its settings, pointed at the fake workspace."""
    assert aml.ca_file is not None
    monkeypatch.setenv("AZUREML_DEV_URL_MFE", aml.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", aml.ca_file)
    return AzureMLBackend.from_settings(
        settings(
            AZURE_SUBSCRIPTION_ID="sub-1",
            AZURE_RESOURCE_GROUP="rg-1",
            AZUREML_WORKSPACE="ws-1",
            AZUREML_COMPUTE_NAME=compute_name,
        ),
        StaticTokenCredential(),
    )


def test_from_settings_talks_to_the_configured_workspace(
    aml: FakeAzureML, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = _configured_backend(aml, monkeypatch, compute_name="gpu-less")
    assert b.ensure_capacity(capacity()).resource_name == "gpu-less"
    assert any(
        r.path.startswith("/subscriptions/sub-1/resourceGroups/rg-1/")
        and "/workspaces/ws-1/computes/gpu-less" in r.path
        for r in aml.requests
    )


# --- capacity that takes minutes, and bounded waits ------------------------------------------
def test_a_cluster_being_created_is_not_waited_for(aml: FakeAzureML) -> None:
    aml.new_compute_state = "Creating"
    b = backend(aml)
    report = b.ensure_capacity(capacity())
    # Created and returned at once: the shard orchestration polls until it is usable.
    assert report.created and not report.ready
    assert not b.capacity_status(capacity()).ready
    # Another shard ensuring the same cluster meanwhile finds it still on its way.
    again = b.ensure_capacity(capacity())
    assert not again.created and not again.ready
    aml.set_compute_state("waa-cluster", "Succeeded")
    assert b.capacity_status(capacity()).ready
    assert b.ensure_capacity(capacity()).ready


def test_a_cluster_whose_provisioning_failed_is_permanent_for_the_tier(aml: FakeAzureML) -> None:
    aml.new_compute_state = "Creating"
    b = backend(aml)
    b.ensure_capacity(capacity())
    aml.set_compute_state("waa-cluster", "Failed", error_code="QuotaExceeded")
    with pytest.raises(PermanentTierError) as caught:
        b.capacity_status(capacity())
    assert caught.value.code == "ClusterProvisioningFailed"
    assert "QuotaExceeded" in str(caught.value) and "AZUREML_COMPUTE_NAME" in str(caught.value)


def test_a_deleted_cluster_is_permanent_for_the_tier(aml: FakeAzureML) -> None:
    with pytest.raises(PermanentTierError, match="does not exist"):
        backend(aml).capacity_status(capacity())


def test_an_unconfirmed_cancel_waits_its_bound_and_is_transient(aml: FakeAzureML) -> None:
    b = AzureMLBackend(
        make_client(aml, retries=2), compute_name="waa-cluster", cancel_wait_seconds=0.2
    )
    b.ensure_capacity(capacity())
    b.submit(job_spec(NAME))
    aml.confirm_cancels = False
    with pytest.raises(TransientBackendError) as caught:
        b.cancel(NAME)
    assert caught.value.code == "CancelNotConfirmed"
    assert aml.job_status(NAME) == "CancelRequested"
    # The retry finds it confirmed.
    aml.confirm_cancels = True
    b.cancel(NAME)
    assert b.status(NAME).state is JobState.CANCELLED


def test_from_settings_client_carries_the_bounds_and_works(
    aml: FakeAzureML, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK accepts the per-operation bounds (connection/read timeouts, the retry policy's
    # total timeout) on every call the backend makes.
    b = _configured_backend(aml, monkeypatch, compute_name="waa-cluster")
    b.ensure_capacity(capacity())
    assert b.capacity_status(capacity()).ready
    assert b.submit(job_spec(NAME)).created
    b.cancel(NAME)
    assert b.status(NAME).state is JobState.CANCELLED


# --- WAA's launch needs: golden image, container options, secrets ------------------------------
GOLDEN = "https://waagolden.blob.core.windows.net/golden/waa/storage"
VAULT = "https://kv-waa.vault.azure.net"


def test_the_golden_image_is_a_read_only_mounted_input_the_runner_is_told_about(
    aml: FakeAzureML,
) -> None:
    b = AzureMLBackend(make_client(aml), compute_name="waa-cluster", golden_image_url=GOLDEN)
    b.ensure_capacity(capacity())
    b.submit(job_spec(NAME))
    body = aml.job_body(NAME)
    assert body["inputs"] == {
        "storage": {"jobInputType": "uri_folder", "uri": GOLDEN, "mode": "ReadOnlyMount"}
    }
    # The mount's path reaches the runner through the command line, the one place Azure ML
    # resolves an input reference (the fake refuses a reference to an input the job lacks).
    assert body["command"] == "env WAA_STORAGE_SOURCE=${{inputs.storage}} python -m shard_runner"
    assert body["environmentVariables"]["WAA_STORAGE_DIR"] == "/storage"


def test_without_a_golden_image_the_job_has_no_inputs(aml: FakeAzureML) -> None:
    ready(aml).submit(job_spec(NAME))
    body = aml.job_body(NAME)
    assert not body.get("inputs") and "inputs." not in body["command"]


def test_a_malformed_golden_image_url_is_refused_at_construction(aml: FakeAzureML) -> None:
    with pytest.raises(ValueError, match=r"blob\.core\.windows\.net"):
        AzureMLBackend(
            make_client(aml),
            compute_name="waa-cluster",
            golden_image_url="https://example.com/golden",
        )


def test_container_options_from_the_settings_reach_the_job(
    aml: FakeAzureML, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert aml.ca_file is not None
    monkeypatch.setenv("AZUREML_DEV_URL_MFE", aml.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", aml.ca_file)
    b = AzureMLBackend.from_settings(
        settings(
            AZURE_SUBSCRIPTION_ID="sub-1",
            AZURE_RESOURCE_GROUP="rg-1",
            AZUREML_WORKSPACE="ws-1",
            WAA_CONTAINER_DEVICES="/dev/kvm,/dev/net/tun",
            WAA_CONTAINER_CAP_ADD="NET_ADMIN,SYS_NICE",
            WAA_CONTAINER_SHM_SIZE="8g",
            WAA_GOLDEN_IMAGE_URL=GOLDEN,
        ),
        StaticTokenCredential(),
    )
    b.ensure_capacity(capacity())
    b.submit(job_spec(NAME))
    body = aml.job_body(NAME)
    assert body["resources"]["dockerArgs"] == (
        "--device=/dev/kvm --device=/dev/net/tun --cap-add=NET_ADMIN --cap-add=SYS_NICE"
    )
    assert body["resources"]["shmSize"] == "8g"
    assert body["inputs"]["storage"]["uri"] == GOLDEN


def test_with_a_vault_the_job_definition_names_its_secrets_and_holds_none(
    aml: FakeAzureML,
) -> None:
    b = ready(aml)
    spec = job_spec(
        NAME,
        secrets_vault_url=VAULT,
        secret_env={"OPENAI_API_KEY": "openai-api-key", "AZURE_API_KEY": "azure-api-key"},
        heartbeat_token_secret="hb-ev1-s3-a2",
        # Even a token slipped into the plain environment does not travel.
        environment={"WAA_TASK_IDS": "a", "WAA_HEARTBEAT_TOKEN": TOKEN},
    )
    b.submit(spec)
    env = aml.job_body(NAME)["environmentVariables"]
    assert env["WAA_HEARTBEAT_TOKEN_SECRET"] == "hb-ev1-s3-a2"
    assert env["WAA_SECRETS_VAULT_URL"] == VAULT
    assert env["WAA_SECRETS"] == "AZURE_API_KEY=azure-api-key,OPENAI_API_KEY=openai-api-key"
    assert "WAA_HEARTBEAT_TOKEN" not in env
    # Nothing the service received, in any request, carries the token.
    received = [r.body.decode(errors="replace") for r in aml.requests if r.body]
    assert received and all(TOKEN not in text for text in received)
    b.status(NAME)
    b.end_evaluation("ev1")  # nothing to end on Azure ML: no request, no error
    assert all(TOKEN not in r.body.decode(errors="replace") for r in aml.requests if r.body)


COMPUTE_IDENTITY = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-waa/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/id-waa-compute"
)


def test_the_cluster_carries_the_compute_identity_and_jobs_run_as_it(aml: FakeAzureML) -> None:
    b = AzureMLBackend(
        make_client(aml),
        compute_name="waa-cluster",
        golden_image_url=GOLDEN,
        compute_identity_id=COMPUTE_IDENTITY,
    )
    assert b.ensure_capacity(capacity()).created
    identity = aml.computes["waa-cluster"]["identity"]
    assert identity["type"] == "UserAssigned"
    assert list(identity["userAssignedIdentities"]) == [COMPUTE_IDENTITY]
    # Once there, nothing to change.
    again = b.ensure_capacity(capacity())
    assert (again.created, again.updated) == (False, False)
    b.submit(job_spec(NAME))
    # The job mounts its input and reaches Key Vault as the compute identity.
    assert aml.job_body(NAME)["identity"] == {
        "identityType": "Managed",
        "resourceId": COMPUTE_IDENTITY,
    }


def test_an_existing_cluster_without_the_compute_identity_gets_it(aml: FakeAzureML) -> None:
    ready(aml)  # created without an identity
    b = AzureMLBackend(
        make_client(aml), compute_name="waa-cluster", compute_identity_id=COMPUTE_IDENTITY
    )
    report = b.ensure_capacity(capacity())
    assert report.updated and "WAA_COMPUTE_IDENTITY_ID" in report.detail
    assert list(aml.computes["waa-cluster"]["identity"]["userAssignedIdentities"]) == [
        COMPUTE_IDENTITY
    ]


def test_without_a_compute_identity_jobs_name_none(aml: FakeAzureML) -> None:
    ready(aml).submit(job_spec(NAME))
    assert not aml.job_body(NAME).get("identity")
    assert "identity" not in aml.computes["waa-cluster"]
