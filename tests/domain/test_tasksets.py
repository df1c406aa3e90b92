from __future__ import annotations

import re

import pytest

from domain.messages import TASK_ID_PATTERN
from domain.tasksets import (
    TASK_SETS,
    WAA_DOMAINS,
    TaskRef,
    UnknownTaskSetError,
    domain_of,
    load_task_set,
    task_refs,
)

WAA_COUNTS = {
    "libreoffice_calc": 24,
    "libreoffice_writer": 19,
    "chrome": 17,
    "msedge": 13,
    "file_explorer": 19,
    "settings": 5,
    "vs_code": 24,
    "vlc": 21,
    "notepad": 2,
    "clock": 4,
    "windows_calc": 3,
    "microsoft_paint": 3,
}


def test_full_set_has_waas_154_tasks_in_12_domains() -> None:
    full = load_task_set("waa-full")
    assert {domain: len(ids) for domain, ids in full.items()} == WAA_COUNTS
    ids = [t for group in full.values() for t in group]
    assert len(ids) == len(set(ids)) == 154
    assert all(re.match(TASK_ID_PATTERN, t) for t in ids)
    assert set(WAA_DOMAINS) == set(WAA_COUNTS)


def test_smoke_set_is_one_task_per_domain_from_the_full_set() -> None:
    assert {"waa-full", "waa-smoke"} <= set(TASK_SETS)
    full = load_task_set("waa-full")
    smoke = load_task_set("waa-smoke")
    assert set(smoke) == set(full)
    for domain, ids in smoke.items():
        assert len(ids) == 1
        assert ids[0] in full[domain]


def test_load_returns_a_copy() -> None:
    first = load_task_set("waa-full")
    first["notepad"].append("mutated")
    first.pop("vlc")
    again = load_task_set("waa-full")
    assert "mutated" not in again["notepad"]
    assert "vlc" in again


def test_unknown_set() -> None:
    with pytest.raises(UnknownTaskSetError, match="nope"):
        load_task_set("nope")


def test_domain_of() -> None:
    assert domain_of("366de66e-cbae-4d72-b042-26390db2b145-WOS") == "notepad"
    assert domain_of("a96b564e-dbe9-42c3-9ccf-b4498073438a-wos") == "chrome"
    # Ids are case-sensitive, as WAA's files are.
    assert domain_of("366DE66E-CBAE-4D72-B042-26390DB2B145-WOS") == "unknown"
    assert domain_of("not-a-waa-task") == "unknown"
    for domain, ids in load_task_set("waa-full").items():
        assert {domain_of(t) for t in ids} == {domain}


def test_task_refs_keeps_order() -> None:
    refs = task_refs({"vlc": ["b", "a"], "notepad": ["c"]})
    assert refs == [
        TaskRef(task_id="b", domain="vlc"),
        TaskRef(task_id="a", domain="vlc"),
        TaskRef(task_id="c", domain="notepad"),
    ]
