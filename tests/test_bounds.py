"""Every wait of the app ends well inside host.json's functionTimeout (domain/bounds.py).

A function still running at the timeout takes the worker process down with every invocation
in flight, so these checks read the timeout from host.json itself: lower it (or raise a bound)
and they fail, naming what no longer fits.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

from azure.functions.decorators.function_app import FunctionBuilder
from azure.storage.blob import LinearRetry

from activities import attempts, evaluations
from adapters import artifacts, secrets
from adapters.compute import azureml, batch
from adapters.compute.ssh_vm import RUN_KILL_AFTER_SECONDS, SshVmBackend
from adapters.state import table_store
from domain import bounds, names
from domain.jobs import Tier
from domain.requests import DEFAULT_MAX_WORKERS

HOST_JSON = Path(__file__).resolve().parents[1] / "host.json"


def function_timeout_seconds() -> int:
    text = json.loads(HOST_JSON.read_text())["functionTimeout"]
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d)", text)
    assert match, f"functionTimeout {text!r} is not hh:mm:ss"
    hours, minutes, seconds = (int(g) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def app_activities() -> set[str]:
    found = set()
    for module in (attempts, evaluations):
        for value in vars(module).values():
            if isinstance(value, FunctionBuilder):
                fn = value.build()
                if fn.get_trigger().type == "activityTrigger":
                    found.add(fn.get_function_name())
    return found


def overruns(limit: float) -> list[str]:
    """Everything whose worst case does not end HEADROOM_SECONDS before `limit`."""
    budget = limit - bounds.HEADROOM_SECONDS
    found = []
    single = {
        "Table operation": bounds.TABLE_OPERATION_SECONDS,
        "Azure ML operation": bounds.AZUREML_OPERATION_SECONDS,
        "Batch operation": bounds.BATCH_OPERATION_SECONDS,
        "Key Vault operation": bounds.KEYVAULT_OPERATION_SECONDS,
        "SSH call": bounds.SSH_CALL_SECONDS,
    }
    found += [f"{what}: {s:g} s" for what, s in single.items() if s > budget]
    for tier, calls in bounds.BACKEND_CALL_SECONDS.items():
        found += [f"{tier.value}.{m}: {s:g} s" for m, s in calls.items() if s > budget]
    for activity in bounds.ACTIVITY_BACKEND_CALLS:
        for tier in Tier:
            worst = bounds.activity_worst_case_seconds(activity, tier)
            if worst > budget:
                found.append(f"activity {activity} on {tier.value}: {worst:g} s")
    for tier in Tier:
        worst = bounds.sweep_worst_case_seconds(tier)
        if worst > budget:
            found.append(f"sweep on {tier.value}: {worst:g} s")
    # Event Grid and the HTTP API make Table calls only.
    if budget < bounds.TABLE_ALLOWANCE_SECONDS:
        found.append(f"Table-only functions: {bounds.TABLE_ALLOWANCE_SECONDS:g} s")
    # Heartbeats, also Blob calls for artifact upload URLs (adapters/artifacts.py).
    if budget < bounds.BLOB_OPERATION_SECONDS:
        found.append(f"Blob operation: {bounds.BLOB_OPERATION_SECONDS:g} s")
    if budget < bounds.ARTIFACT_URLS_WORST_CASE_SECONDS:
        found.append(f"heartbeat with artifact URLs: {bounds.ARTIFACT_URLS_WORST_CASE_SECONDS:g} s")
    # next_task (the task queue): Table calls only, a bounded number of them.
    if budget < bounds.NEXT_TASK_WORST_CASE_SECONDS:
        found.append(f"heartbeat next_task: {bounds.NEXT_TASK_WORST_CASE_SECONDS:g} s")
    return found


def test_bounds_are_stated_against_host_json_function_timeout() -> None:
    assert function_timeout_seconds() == bounds.FUNCTION_TIMEOUT_SECONDS


def test_every_function_ends_well_inside_the_function_timeout() -> None:
    assert overruns(function_timeout_seconds()) == []


def test_the_check_fails_when_the_timeout_is_lowered() -> None:
    # The same bounds under a 5-minute functionTimeout: closing an attempt on Azure ML (its
    # cancel waits for confirmation) no longer fits.
    worst = bounds.activity_worst_case_seconds(names.FINISH_ATTEMPT, Tier.AZURE_ML)
    assert worst > 300 - bounds.HEADROOM_SECONDS
    assert f"activity finish_attempt on azureml: {worst:g} s" in overruns(300)


def test_every_activity_of_the_app_has_its_calls_listed() -> None:
    assert app_activities() == set(bounds.ACTIVITY_BACKEND_CALLS)


def test_the_clients_are_built_with_these_bounds() -> None:
    assert table_store.CLIENT_OPTIONS == {
        "connection_timeout": bounds.TABLE_CONNECTION_TIMEOUT,
        "read_timeout": bounds.TABLE_READ_TIMEOUT,
        "retry_total": bounds.TABLE_RETRY_TOTAL,
        "retry_backoff_max": bounds.TABLE_RETRY_BACKOFF_MAX,
        "timeout": bounds.TABLE_RETRY_TIMEOUT,
    }
    clients = (
        (azureml.CLIENT_OPTIONS, "AZUREML"),
        (batch.CLIENT_OPTIONS, "BATCH"),
        (secrets.CLIENT_OPTIONS, "KEYVAULT"),
    )
    for options, prefix in clients:
        assert options["connection_timeout"] == getattr(bounds, f"{prefix}_CONNECTION_TIMEOUT")
        assert options["read_timeout"] == getattr(bounds, f"{prefix}_READ_TIMEOUT")
        assert options["retry_total"] == getattr(bounds, f"{prefix}_RETRY_TOTAL")
        assert options["retry_backoff_max"] == getattr(bounds, f"{prefix}_RETRY_BACKOFF_MAX")
        assert options["timeout"] == getattr(bounds, f"{prefix}_RETRY_TIMEOUT")
    blob = artifacts.client_options()
    assert blob["connection_timeout"] == bounds.BLOB_CONNECTION_TIMEOUT
    assert blob["read_timeout"] == bounds.BLOB_READ_TIMEOUT
    retry = blob["retry_policy"]
    assert isinstance(retry, LinearRetry)
    assert retry.total_retries == bounds.BLOB_RETRY_TOTAL
    assert retry.backoff == bounds.BLOB_RETRY_BACKOFF
    assert retry.random_jitter_range == bounds.BLOB_RETRY_JITTER
    aml = inspect.signature(azureml.AzureMLBackend).parameters
    assert aml["cancel_wait_seconds"].default == bounds.AZUREML_CANCEL_WAIT_SECONDS
    ssh = inspect.signature(SshVmBackend).parameters
    assert ssh["connect_timeout"].default == bounds.SSH_CONNECT_TIMEOUT
    assert ssh["command_timeout"].default == bounds.SSH_COMMAND_TIMEOUT
    assert ssh["run_timeout"].default == bounds.SSH_DOCKER_RUN_TIMEOUT
    assert ssh["call_budget_seconds"].default == bounds.SSH_CALL_SECONDS


def test_an_ssh_submit_to_a_lone_vm_fits_its_call_budget() -> None:
    # A connect and `docker inspect` (idempotency), the health check, `docker ps`, the runner
    # upload, then `docker run` under GNU `timeout` with its kill grace: each at its bound.
    # (In a bigger pool the budget ends the call early; VMs that timed out rest, so the retry
    # gets further.)
    steps = [3 * bounds.SSH_CONNECT_TIMEOUT, *[bounds.SSH_COMMAND_TIMEOUT] * 4]
    steps.append(bounds.SSH_DOCKER_RUN_TIMEOUT + RUN_KILL_AFTER_SECONDS + 1)
    assert sum(steps) <= bounds.SSH_CALL_SECONDS


def test_capacity_is_polled_several_times_before_its_deadline() -> None:
    assert bounds.CAPACITY_DEADLINE_SECONDS >= 10 * bounds.CAPACITY_POLL_SECONDS
    # Batch allocates within the pool's resize timeout (30 min), then prefetches the image.
    assert bounds.CAPACITY_DEADLINE_SECONDS > 30 * 60


def test_a_blob_operation_is_bounded_by_its_tries_and_back_offs() -> None:
    # Each try waits at most connect + read; LinearRetry sleeps backoff +- jitter between tries.
    tries = bounds.BLOB_RETRY_TOTAL + 1
    per_try = bounds.BLOB_CONNECTION_TIMEOUT + bounds.BLOB_READ_TIMEOUT
    sleeps = bounds.BLOB_RETRY_TOTAL * (bounds.BLOB_RETRY_BACKOFF + bounds.BLOB_RETRY_JITTER)
    assert tries * per_try + sleeps == bounds.BLOB_OPERATION_SECONDS
    # The heartbeat's check fails under a timeout its Blob calls no longer fit in.
    assert "heartbeat with artifact URLs" in " ".join(
        overruns(bounds.HEARTBEAT_WORST_CASE_SECONDS + bounds.HEADROOM_SECONDS - 1)
    )


def test_the_heartbeat_bound_covers_every_kind() -> None:
    assert (
        max(bounds.ARTIFACT_URLS_WORST_CASE_SECONDS, bounds.NEXT_TASK_WORST_CASE_SECONDS)
        == bounds.HEARTBEAT_WORST_CASE_SECONDS
    )
    # A next_task ask tries more candidates than an evaluation has slots by default (each lost
    # race is another slot's claim), so contention alone does not turn an ask into a 503.
    assert bounds.QUEUE_CLAIM_CANDIDATES > DEFAULT_MAX_WORKERS
    assert "heartbeat next_task" in " ".join(
        overruns(bounds.NEXT_TASK_WORST_CASE_SECONDS + bounds.HEADROOM_SECONDS - 1)
    )


def test_a_submit_counts_the_key_vault_write_of_its_heartbeat_token() -> None:
    for tier in Tier:
        with_vault = bounds.activity_worst_case_seconds(names.SUBMIT_JOB, tier)
        backend = bounds.BACKEND_CALL_SECONDS[tier]["submit"]
        assert with_vault == (
            backend + bounds.KEYVAULT_OPERATION_SECONDS + bounds.TABLE_ALLOWANCE_SECONDS
        )
