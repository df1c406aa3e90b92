"""The WAA task sets shipped with the project and the domain of each task.

`domain/data/waa_tasks.json` holds named task sets in WAA's own `test_all.json` shape
(domain -> list of task ids). "waa-full" is the public Windows Agent Arena benchmark: 154 tasks
in 12 domains; "waa-smoke" is one task per domain for quick end-to-end runs.
"""

from __future__ import annotations

import json
import re
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.messages import TASK_ID_PATTERN

UNKNOWN_DOMAIN = "unknown"
FULL_SET = "waa-full"

_TASK_ID = re.compile(TASK_ID_PATTERN)


class TaskRef(BaseModel):
    """One task to run: its WAA id and the domain (application) it exercises."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    domain: str


class _TaskFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task_sets: dict[str, dict[str, list[str]]] = Field(min_length=1)

    @model_validator(mode="after")
    def _well_formed(self) -> _TaskFile:
        if FULL_SET not in self.task_sets:
            raise ValueError(f"task set {FULL_SET!r} is missing")
        for name, domains in self.task_sets.items():
            seen: set[str] = set()
            for ids in domains.values():
                for task_id in ids:
                    if not _TASK_ID.fullmatch(task_id):
                        raise ValueError(f"task set {name!r}: invalid task id {task_id!r}")
                    if task_id in seen:
                        raise ValueError(f"task set {name!r}: duplicate task id {task_id!r}")
                    seen.add(task_id)
        return self


def _load() -> dict[str, dict[str, list[str]]]:
    text = resources.files("domain").joinpath("data", "waa_tasks.json").read_text("utf-8")
    return _TaskFile.model_validate(json.loads(text)).task_sets


_SETS = _load()
TASK_SETS: tuple[str, ...] = tuple(_SETS)
WAA_DOMAINS: tuple[str, ...] = tuple(_SETS[FULL_SET])

# One task id belongs to one domain across every shipped set; the first set that names it wins.
_DOMAIN_OF: dict[str, str] = {}
for _domains in _SETS.values():
    for _domain, _ids in _domains.items():
        for _task_id in _ids:
            _DOMAIN_OF.setdefault(_task_id, _domain)


class UnknownTaskSetError(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown task set {self.name!r} (known: {', '.join(TASK_SETS)})"


def load_task_set(name: str) -> dict[str, list[str]]:
    """A fresh copy of the named set (domain -> task ids), safe for the caller to change."""
    try:
        domains = _SETS[name]
    except KeyError:
        raise UnknownTaskSetError(name) from None
    return {domain: list(ids) for domain, ids in domains.items()}


def domain_of(task_id: str) -> str:
    """The WAA domain of a shipped task id; "unknown" for ids the project does not ship."""
    return _DOMAIN_OF.get(task_id, UNKNOWN_DOMAIN)


def task_refs(domains: dict[str, list[str]]) -> list[TaskRef]:
    """TaskRefs for a test_all.json-shaped mapping, in its order.

    A domain label the project knows is taken as given; any other label (a user's own grouping)
    is replaced by the shipped domain of the id, so duration profiles still apply.
    """
    known = set(WAA_DOMAINS)
    return [
        TaskRef(task_id=task_id, domain=domain if domain in known else domain_of(task_id))
        for domain, ids in domains.items()
        for task_id in ids
    ]
