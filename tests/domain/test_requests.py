from __future__ import annotations

import json

import pytest

from domain.jobs import Tier
from domain.requests import (
    EvaluationRequest,
    RequestError,
    parse_evaluation_request,
    parse_retry_request,
    request_settings,
    resolve_tasks,
    settings_from_row,
)
from domain.tasksets import TaskRef, load_task_set

MAX_WORKERS = 10


def parse(body: object) -> EvaluationRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_evaluation_request(raw, MAX_WORKERS)


ONE = {"tasks": ["notepad-1"]}

BAD_BODIES = [
    # (body, field the error must name)
    ({"task_set": "waa-smoke", "task_retries": 4}, "task_retries"),
    ({"task_set": "waa-smoke", "task_retries": -1}, "task_retries"),
    (b"", "body"),
    (b"{not json", "body"),
    (b"\xff\xfe\x00", "body"),
    (b"[]", "body"),
    (b'"tasks"', "body"),
    (b"null", "body"),
    ({}, "tasks"),
    ({"tasks": ["a"], "task_set": "waa-full"}, "tasks"),
    ({"tasks": None, "task_set": None}, "tasks"),
    ({"tasks": []}, "tasks"),
    ({"tasks": {}}, "tasks"),
    ({"tasks": {"chrome": []}}, "tasks"),
    ({"tasks": "notepad-1"}, "tasks"),
    ({"tasks": 5}, "tasks"),
    ({"tasks": [1]}, "tasks"),
    ({"tasks": ["a b"]}, "tasks"),
    ({"tasks": ["abc\n"]}, "tasks"),
    ({"tasks": {"chrome\n": ["a"]}}, "tasks"),
    ({"tasks": ["../etc/passwd"]}, "tasks"),
    ({"tasks": ["a;rm -rf /"]}, "tasks"),
    ({"tasks": ["-leading-dash"]}, "tasks"),
    ({"tasks": ["x" * 129]}, "tasks"),
    ({"tasks": ["a", "a"]}, "tasks"),
    ({"tasks": {"chrome": ["a"], "vlc": ["a"]}}, "tasks"),
    ({"tasks": {"chrome": "a"}}, "tasks"),
    ({"tasks": {"bad domain": ["a"]}}, "tasks"),
    ({"task_set": "no-such-set"}, "task_set"),
    ({"task_set": 3}, "task_set"),
    ({**ONE, "workers": 0}, "workers"),
    ({**ONE, "workers": MAX_WORKERS + 1}, "workers"),
    ({**ONE, "workers": -1}, "workers"),
    ({**ONE, "workers": "3"}, "workers"),
    ({**ONE, "workers": 2.5}, "workers"),
    ({**ONE, "workers": True}, "workers"),
    ({**ONE, "vm_size": "Standard_NC24"}, "vm_size"),
    ({**ONE, "tiers": []}, "tiers"),
    ({**ONE, "tiers": ["aws"]}, "tiers"),
    ({**ONE, "tiers": ["batch", "batch"]}, "tiers"),
    ({**ONE, "tiers": "batch"}, "tiers"),
    ({**ONE, "spot": "yes"}, "spot"),
    ({**ONE, "spot": 1}, "spot"),
    ({**ONE, "budget_usd": 0}, "budget_usd"),
    ({**ONE, "budget_usd": -5}, "budget_usd"),
    ({**ONE, "budget_usd": "5"}, "budget_usd"),
    (b'{"tasks": ["a"], "budget_usd": NaN}', "budget_usd"),
    (b'{"tasks": ["a"], "budget_usd": Infinity}', "budget_usd"),
    ({**ONE, "container_start_timeout_minutes": 0}, "container_start_timeout_minutes"),
    ({**ONE, "heartbeat_timeout_minutes": -1}, "heartbeat_timeout_minutes"),
    ({**ONE, "heartbeat_timeout_minutes": 100000}, "heartbeat_timeout_minutes"),
    ({**ONE, "job_timeout_hours": 0}, "job_timeout_hours"),
    ({**ONE, "job_timeout_hours": 1000}, "job_timeout_hours"),
    (
        {**ONE, "job_timeout_hours": 0.25, "container_start_timeout_minutes": 30},
        "job_timeout_hours",
    ),
    ({**ONE, "agent": ""}, "agent"),
    ({**ONE, "agent": "navi; curl x"}, "agent"),
    ({**ONE, "model": "gpt 4o"}, "model"),
    ({**ONE, "max_steps": 0}, "max_steps"),
    ({**ONE, "max_steps": 101}, "max_steps"),
    ({**ONE, "som_origin": "yolo"}, "som_origin"),
    ({**ONE, "som_origin": 1}, "som_origin"),
    ({**ONE, "a11y_backend": "atspi"}, "a11y_backend"),
    ({**ONE, "idempotency_key": ""}, "idempotency_key"),
    ({**ONE, "idempotency_key": "has space"}, "idempotency_key"),
    ({**ONE, "idempotency_key": "key\n"}, "idempotency_key"),
    ({**ONE, "idempotency_key": "k" * 129}, "idempotency_key"),
    ({**ONE, "policy": "yolo"}, "policy"),
    ({**ONE, "right_size": "true"}, "right_size"),
    ({**ONE, "unexpected": 1}, "unexpected"),
    ({**ONE, "trials": 0}, "trials"),
    ({**ONE, "trials": 11}, "trials"),
    ({**ONE, "trials": "2"}, "trials"),
    ({**ONE, "trials": 1.5}, "trials"),
    ({"tasks": [f"t{i}" for i in range(201)], "trials": 10}, "trials"),
    # A trial suffix is the control plane's to add (run keys), never the user's.
    ({"tasks": ["notepad-1#0"]}, "tasks"),
    ({"tasks": {"notepad": ["a#1"]}}, "tasks"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES, ids=lambda v: str(v)[:40])
def test_bad_bodies_are_rejected_naming_the_field(body: object, field: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse(body)
    assert caught.value.field == field
    assert str(caught.value).startswith(field)
    assert caught.value.message == str(caught.value)


def test_workers_message_names_the_configured_maximum() -> None:
    with pytest.raises(RequestError) as caught:
        parse({**ONE, "workers": 11})
    assert str(caught.value) == "workers: must be between 1 and 10"


def test_max_workers_comes_from_the_caller() -> None:
    assert parse_evaluation_request(b'{"tasks": ["a"], "workers": 50}', 64).workers == 50
    with pytest.raises(RequestError):
        parse_evaluation_request(b'{"tasks": ["a"], "workers": 3}', 2)


def test_defaults() -> None:
    req = parse(ONE)
    assert req.workers == 10
    assert req.vm_size == "Standard_D4s_v5"
    assert req.tiers == [Tier.AZURE_ML, Tier.BATCH, Tier.VM]
    assert req.spot is False
    assert req.budget_usd is None
    assert req.container_start_timeout_minutes == 10
    assert req.heartbeat_timeout_minutes == 10
    assert req.job_timeout_hours == 4
    assert (req.agent, req.model, req.max_steps) == ("navi", "gpt-4o", 15)
    assert req.idempotency_key is None
    assert req.policy == "resilient"
    assert req.right_size is False


def test_full_body_round_trips() -> None:
    body = {
        "tasks": ["366de66e-cbae-4d72-b042-26390db2b145-WOS", "custom_task.v2"],
        "workers": 4,
        "vm_size": "Standard_D8_v3",
        "tiers": ["batch", "vm"],
        "spot": True,
        "budget_usd": 4.5,
        "container_start_timeout_minutes": 15,
        "heartbeat_timeout_minutes": 5,
        "job_timeout_hours": 2,
        "agent": "navi",
        "model": "azure/gpt-4o-2024-05-13",
        "model_provider": "azure",
        "max_steps": 30,
        "som_origin": "mixed-oss",
        "a11y_backend": "win32",
        "idempotency_key": "nightly:2026-11-28",
        "policy": "naive",
        "distribution": "static",
        "tail_copies": False,
        "right_size": True,
        "task_retries": 2,
        "trials": 3,
    }
    req = parse(body)
    assert req.tiers == [Tier.BATCH, Tier.VM]
    assert json.loads(req.model_dump_json()) == {**body, "task_set": None, "target_hours": None}
    # What the orchestration snapshots parses back to the same request.
    assert parse(req.model_dump_json().encode()) == req


def test_flat_list_resolves_domains_from_the_shipped_set() -> None:
    req = parse({"tasks": ["366de66e-cbae-4d72-b042-26390db2b145-WOS", "my-own-task"]})
    assert resolve_tasks(req) == [
        TaskRef(task_id="366de66e-cbae-4d72-b042-26390db2b145-WOS", domain="notepad"),
        TaskRef(task_id="my-own-task", domain="unknown"),
    ]


def test_test_all_json_shape_is_accepted() -> None:
    body = {
        "notepad": ["366de66e-cbae-4d72-b042-26390db2b145-WOS"],
        "clock": ["02F10F89-7171-4D37-8550-A00BA8930CDF-WOS", "extra-clock-task"],
        "my_group": ["a96b564e-dbe9-42c3-9ccf-b4498073438a-wos"],
    }
    refs = resolve_tasks(parse({"tasks": body}))
    assert [(r.task_id, r.domain) for r in refs] == [
        ("366de66e-cbae-4d72-b042-26390db2b145-WOS", "notepad"),
        ("02F10F89-7171-4D37-8550-A00BA8930CDF-WOS", "clock"),
        # A known domain label is taken as given, even for an id the project does not ship.
        ("extra-clock-task", "clock"),
        # An unknown label falls back to the shipped domain of the id.
        ("a96b564e-dbe9-42c3-9ccf-b4498073438a-wos", "chrome"),
    ]


def test_task_set_resolves_every_task_in_order() -> None:
    refs = resolve_tasks(parse({"task_set": "waa-full"}))
    assert len(refs) == 154
    full = load_task_set("waa-full")
    assert [r.task_id for r in refs] == [t for ids in full.values() for t in ids]
    assert resolve_tasks(parse({"task_set": "waa-full"})) == refs


def test_whole_test_all_file_as_tasks() -> None:
    refs = resolve_tasks(parse({"tasks": load_task_set("waa-full")}))
    assert len(refs) == 154
    assert {r.domain for r in refs} == set(load_task_set("waa-full"))


def test_all_errors_are_reported_first_field_named() -> None:
    with pytest.raises(RequestError) as caught:
        parse({"tasks": ["a"], "workers": 0, "max_steps": 0})
    assert caught.value.field == "workers"
    assert "workers:" in str(caught.value)
    assert "max_steps:" in str(caught.value)


def test_long_values_are_not_echoed_whole() -> None:
    with pytest.raises(RequestError) as caught:
        parse({"tasks": ["bad id " + "x" * 500]})
    assert len(str(caught.value)) < 300


def test_request_is_immutable() -> None:
    req = parse(ONE)
    with pytest.raises(ValueError):
        req.workers = 3  # type: ignore[misc]


def test_waa_agent_settings_default_to_run_py_defaults() -> None:
    # WAA's client/run.py: --som_origin default "oss", --a11y_backend default "uia".
    request = parse_evaluation_request(json.dumps(ONE).encode(), max_workers=20)
    assert (request.som_origin, request.a11y_backend) == ("oss", "uia")
    other = parse_evaluation_request(
        json.dumps({**ONE, "som_origin": "a11y", "a11y_backend": "win32"}).encode(), max_workers=20
    )
    assert (other.som_origin, other.a11y_backend) == ("a11y", "win32")


# --- retry: the source's settings, the body's overrides ------------------------------------------


def _retry(body: object, source: dict[str, object] | None = None) -> tuple[EvaluationRequest, bool]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_retry_request(
        raw,
        source=source if source is not None else {},
        task_ids=["notepad-1", "chrome-2"],
        max_workers=MAX_WORKERS,
    )


def test_trials_default_to_one() -> None:
    assert parse(ONE).trials == 1
    assert parse({**ONE, "trials": 10}).trials == 10


def test_a_retry_keeps_the_source_settings_unless_overridden() -> None:
    original = parse(
        {
            "task_set": "waa-smoke",
            "workers": 4,
            "model": "gpt-4o-mini",
            "budget_usd": 3.0,
            "som_origin": "a11y",
            "task_retries": 0,
            "trials": 3,
            "idempotency_key": "nightly",
        }
    )
    row = {"request": request_settings(original), "workers": 4}
    settings = settings_from_row(row)
    assert "task_set" not in settings and "idempotency_key" not in settings
    req, force = _retry(b"", settings)
    assert not force
    assert req.tasks == ["notepad-1", "chrome-2"] and req.task_set is None
    assert (req.workers, req.model, req.budget_usd, req.som_origin) == (
        4,
        "gpt-4o-mini",
        3.0,
        "a11y",
    )
    assert (req.task_retries, req.trials, req.idempotency_key) == (0, 3, None)
    req, force = _retry({"model": "gpt-4o", "workers": 2, "force": True}, settings)
    assert force and (req.model, req.workers, req.budget_usd) == ("gpt-4o", 2, 3.0)


def test_a_retry_of_an_evaluation_without_stored_settings_uses_its_columns() -> None:
    row = {
        "policy": "naive",
        "workers": 3,
        "vm_size": "Standard_D8_v3",
        "spot": True,
        "tiers": "batch,vm",
        "agent": "navi",
        "model": "m1",
        "max_steps": 20,
        "budget_usd": 2.5,
    }
    req, _ = _retry({}, settings_from_row(row))
    assert req.tiers == [Tier.BATCH, Tier.VM] and req.policy == "naive" and req.spot
    assert (req.workers, req.model, req.max_steps, req.budget_usd) == (3, "m1", 20, 2.5)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tasks": ["a"]}, "tasks"),
        ({"task_set": "waa-smoke"}, "task_set"),
        ({"trials": 2}, "trials"),
        ({"idempotency_key": "k"}, "idempotency_key"),
        ({"force": "yes"}, "force"),
        ({"workers": 0}, "workers"),
        ({"model": "bad model"}, "model"),
        ({"nonsense": 1}, "nonsense"),
        (b"[1]", "body"),
        (b"{oops", "body"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_bad_retry_bodies_name_the_field(body: object, field: str) -> None:
    with pytest.raises(RequestError) as caught:
        _retry(body)
    assert caught.value.field == field
    assert str(caught.value).startswith(field)


# --- distribution, target_hours, tail_copies (issue 10) ------------------------------------------


def test_distribution_defaults_to_the_queue() -> None:
    req = parse(ONE)
    assert (req.distribution, req.target_hours, req.tail_copies) == ("queue", None, False)
    assert parse({**ONE, "distribution": "static"}).distribution == "static"
    assert parse({**ONE, "tail_copies": True}).tail_copies is True
    assert parse({**ONE, "distribution": "static", "right_size": True}).right_size is True


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({**ONE, "target_hours": 2, "workers": 4}, "target_hours", "not both"),
        # An explicit `workers` equal to the default conflicts too: the body named it.
        ({**ONE, "target_hours": 2, "workers": 10}, "target_hours", "not both"),
        ({**ONE, "distribution": "static", "tail_copies": True}, "tail_copies", "queue"),
        ({**ONE, "right_size": True}, "right_size", "only with distribution static"),
        (
            {**ONE, "distribution": "queue", "right_size": True},
            "right_size",
            "only with distribution static",
        ),
        ({**ONE, "distribution": "round-robin"}, "distribution", ""),
        ({**ONE, "distribution": None}, "distribution", ""),
        ({**ONE, "tail_copies": "yes"}, "tail_copies", ""),
        ({**ONE, "target_hours": 0}, "target_hours", ""),
        ({**ONE, "target_hours": 49}, "target_hours", ""),
        ({**ONE, "target_hours": "2"}, "target_hours", ""),
        (b'{"tasks": ["a"], "target_hours": NaN}', "target_hours", ""),
        # notepad (5 min) + provisioning (15 min) = 20 min > 0.3 h.
        ({**ONE, "target_hours": 0.3}, "target_hours", "shorter than"),
    ],
    ids=lambda v: str(v)[:50],
)
def test_distribution_rules_name_the_field(body: object, field: str, words: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse(body)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}:")
    assert words in str(caught.value)


def test_target_hours_must_cover_provisioning_and_the_longest_task() -> None:
    from domain.cost import DEFAULT_PROVISIONING_MINUTES
    from domain.planning import DOMAIN_MINUTES

    longest = DOMAIN_MINUTES["libreoffice_calc"]
    tasks = {"notepad": ["n-1"], "libreoffice_calc": ["c-1"]}
    enough = (DEFAULT_PROVISIONING_MINUTES + longest) / 60
    assert parse({"tasks": tasks, "target_hours": enough}).target_hours == enough
    with pytest.raises(RequestError) as caught:
        parse({"tasks": tasks, "target_hours": enough - 0.01})
    assert caught.value.field == "target_hours"
    assert f"{longest:g} min" in str(caught.value)
    # The task set's tasks count the same way; one hour covers any of WAA's tasks.
    assert parse({"task_set": "waa-full", "target_hours": 1}).target_hours == 1
    # `target_hours` without `workers` keeps the default `workers`, which the sizing replaces.
    assert "workers" not in parse({"task_set": "waa-full", "target_hours": 3}).model_fields_set


def test_a_retry_keeps_the_distribution_and_its_settings() -> None:
    queue = parse({"task_set": "waa-smoke", "tail_copies": True, "target_hours": 2})
    settings = settings_from_row({"request": request_settings(queue)})
    assert settings["distribution"] == "queue"
    req, _ = _retry(b"", settings)
    assert (req.distribution, req.tail_copies, req.target_hours) == ("queue", True, 2)
    assert "workers" not in req.model_fields_set
    # The body's `workers` replaces the source's target, and the other way round.
    req, _ = _retry({"workers": 3}, settings)
    assert (req.workers, req.target_hours) == (3, None)
    static = parse({"task_set": "waa-smoke", "distribution": "static", "workers": 4})
    static_settings = settings_from_row({"request": request_settings(static)})
    req, _ = _retry({"target_hours": 2}, static_settings)
    assert (req.distribution, req.target_hours) == ("static", 2)
    # Changing the distribution drops the source's settings of the other one.
    req, _ = _retry({"distribution": "static"}, settings)
    assert (req.distribution, req.tail_copies) == ("static", False)
    sized = parse({"task_set": "waa-smoke", "distribution": "static", "right_size": True})
    sized_settings = settings_from_row({"request": request_settings(sized)})
    req, _ = _retry({"distribution": "queue"}, sized_settings)
    assert (req.distribution, req.right_size) == ("queue", False)
    # ... unless the body names them: then the rules apply as on a start.
    with pytest.raises(RequestError) as caught:
        _retry({"distribution": "queue", "right_size": True}, sized_settings)
    assert caught.value.field == "right_size"


def test_a_retry_of_an_evaluation_from_before_the_queue_stays_static() -> None:
    # Settings stored before issue 10 have no distribution: that evaluation ran static shards.
    old = json.loads(request_settings(parse({**ONE, "distribution": "static", "right_size": True})))
    for key in ("distribution", "target_hours", "tail_copies"):
        old.pop(key)
    req, _ = _retry(b"", settings_from_row({"request": json.dumps(old)}))
    assert (req.distribution, req.right_size) == ("static", True)
    # So does one from before the settings column; a row's own column is carried.
    assert _retry(b"", settings_from_row({"workers": 2}))[0].distribution == "static"
    row = {"workers": 2, "distribution": "queue"}
    assert _retry(b"", settings_from_row(row))[0].distribution == "queue"
