"""The WAA task sets shipped with the project and the domain of each task.

`domain/data/waa_tasks.json` holds named task sets in WAA's own `test_all.json` shape
(domain -> list of task ids). "waa-full" is the public Windows Agent Arena benchmark: 154 tasks
in 12 domains; "waa-smoke" is one task per domain for quick end-to-end runs.

A *run* is one task in one trial. An evaluation with `trials` > 1 runs each task that many
times, as WAA's `run.py --trial_id k`; the run's key is "<task_id>#<k>" (k = 0..9), the form the
runner reads from WAA_TASK_IDS and reports results under (see /work/wt/CONTRACT.md). With one
trial the run key is the task id itself, as before trials existed.
"""

from __future__ import annotations

import json
import re
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, model_validator

UNKNOWN_DOMAIN = "unknown"
FULL_SET = "waa-full"

# A WAA task id as a user or a task set names it (no trial suffix; `domain.messages`'
# TASK_ID_PATTERN also admits the run key's "#<k>").
WAA_TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
TRIAL_SEPARATOR = "#"
MAX_TRIALS = 10  # trial ids 0..9: one digit after the separator

_TASK_ID = re.compile(WAA_TASK_ID_PATTERN)


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


def run_key(task_id: str, trial: int, trials: int) -> str:
    """The key of `task_id`'s run in trial `trial` of an evaluation with `trials` trials."""
    if not 0 <= trial < trials <= MAX_TRIALS:
        raise ValueError(f"trial {trial} of {trials} (at most {MAX_TRIALS} trials)")
    return f"{task_id}{TRIAL_SEPARATOR}{trial}" if trials > 1 else task_id


def split_run_key(key: str) -> tuple[str, int | None]:
    """(task id, trial) of a run key; the trial is None for a run without a suffix."""
    task_id, sep, trial = key.rpartition(TRIAL_SEPARATOR)
    if sep and trial.isdigit() and len(trial) == 1:
        return task_id, int(trial)
    return key, None


def domain_of(task_id: str) -> str:
    """The WAA domain of a shipped task id (or of a run key's task); "unknown" for ids the
    project does not ship."""
    return _DOMAIN_OF.get(split_run_key(task_id)[0], UNKNOWN_DOMAIN)


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
