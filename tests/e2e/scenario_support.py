"""Helpers shared by the end-to-end scenarios: the two invariants every scenario checks, a way
to act at a chosen moment of virtual time, and a restart of the devhost on the same state.

The invariants (`assert_invariants`):
1. every task of the evaluation has exactly one recorded outcome (completed, failed or not run),
   with a reason when it failed or was not run, both in the table and in the status view;
2. no shard ever had two active jobs at once: per shard, the job intervals
   [submitted_at, ended_at) do not overlap, neither in the control plane's job rows nor in the
   simulated cloud's ledger (the ground truth of what really ran).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from adapters import runtime
from adapters.compute.simulated import LedgerEntry, SimulatedCloud
from adapters.state.table_store import parse_time
from devhost.clock import RealClock, VirtualClock
from devhost.engine import TASK_SCHEDULED
from devhost.simulation import Simulation
from domain import names
from domain.jobs import JobSpec, JobState
from domain.naming import shard_instance_id, worker_instance_id

FINAL_OUTCOMES = {"completed", "failed", "not_run"}
NEEDS_REASON = {"failed", "not_run"}


def store_rows(evaluation_id: str) -> dict[str, Any]:
    """The evaluation's whole partition, read with the app's own state store."""
    rows = runtime.services().store.get_evaluation_rows(evaluation_id)
    assert rows is not None, f"no state rows for evaluation {evaluation_id}"
    return rows


def start(sim: Simulation, body: dict[str, Any]) -> str:
    r = sim.start_evaluation(body)
    assert r.status_code == 202, r.text
    return str(r.json()["evaluation_id"])


def jobs_of_shard(rows: dict[str, Any], shard: int) -> list[dict[str, Any]]:
    return sorted(
        (j for j in rows["jobs"] if int(j["shard_index"]) == shard), key=lambda j: j["attempt"]
    )


def ledger_of(cloud: SimulatedCloud, evaluation_id: str) -> list[LedgerEntry]:
    return sorted(
        (e for e in cloud.ledger_entries() if e.evaluation_id == evaluation_id),
        key=lambda e: (e.shard_index, e.submitted_at),
    )


def _assert_disjoint(
    intervals: dict[int, list[tuple[datetime, datetime | None, str]]], where: str
) -> None:
    for shard, spans in intervals.items():
        spans = sorted(spans, key=lambda s: s[0])
        for (start_a, end_a, name_a), (start_b, _end_b, name_b) in itertools.pairwise(spans):
            assert end_a is not None, (
                f"{where}: shard {shard}: {name_a} never ended, yet {name_b} was submitted"
            )
            assert end_a <= start_b, (
                f"{where}: shard {shard} had two active jobs at once: {name_a} "
                f"[{start_a.isoformat()}, {end_a.isoformat()}) overlaps {name_b} "
                f"(submitted {start_b.isoformat()})"
            )


def assert_invariants(
    sim: Simulation,
    evaluation_id: str,
    final: dict[str, Any],
    *,
    task_ids: Iterable[str] | None = None,
    clouds: Sequence[SimulatedCloud] | None = None,
) -> dict[str, Any]:
    """Check both invariants on an evaluation that has ended; returns its table rows.

    `task_ids`: the tasks the request asked for (default: what the evaluation row counts).
    `clouds`: the simulated clouds whose ledgers to check (default: the simulation's own).
    """
    rows = store_rows(evaluation_id)
    evaluation = rows["evaluation"]

    # 1. Exactly one recorded outcome per task, in the table ...
    ids = [t["task_id"] for t in rows["tasks"]]
    duplicates = [t for t, n in Counter(ids).items() if n > 1]
    assert not duplicates, f"tasks recorded more than once: {duplicates}"
    assert len(ids) == int(evaluation["task_count"]), (len(ids), evaluation["task_count"])
    if task_ids is not None:
        assert set(ids) == set(task_ids), set(ids) ^ set(task_ids)
    open_tasks = {t["task_id"]: t.get("outcome") for t in rows["tasks"]}
    open_tasks = {t: o for t, o in open_tasks.items() if o not in FINAL_OUTCOMES}
    assert not open_tasks, f"tasks without a final outcome: {open_tasks}"
    unexplained = [
        t["task_id"]
        for t in rows["tasks"]
        if t["outcome"] in NEEDS_REASON and not (t.get("reason") or "").strip()
    ]
    assert not unexplained, f"failed / not run tasks without a reason: {unexplained}"

    # ... and in the status view the API returns.
    view_tasks = final["tasks"]
    view_ids = [t["task_id"] for t in view_tasks]
    assert len(view_ids) == len(set(view_ids)) == len(ids), "status view lists a task twice"
    table_outcomes = {t["task_id"]: t["outcome"] for t in rows["tasks"]}
    assert {t["task_id"]: t["outcome"] for t in view_tasks} == table_outcomes
    counts = final["counts"]
    assert counts["running"] == counts["pending"] == 0, counts
    assert counts["total"] == len(ids)
    assert counts["completed"] + counts["failed"] + counts["not_run"] == len(ids), counts

    # 2. No shard with two active jobs at once: the control plane's job rows ...
    table_spans: dict[int, list[tuple[datetime, datetime | None, str]]] = defaultdict(list)
    for job in rows["jobs"]:
        submitted = parse_time(job["submitted_at"])
        assert submitted is not None
        ended = parse_time(job.get("ended_at"))
        assert JobState(job["state"]).is_terminal and ended is not None, (
            f"job {job['job_name']} is still {job['state']} after the evaluation ended"
        )
        table_spans[int(job["shard_index"])].append((submitted, ended, job["job_name"]))
    _assert_disjoint(table_spans, "job rows")

    # ... and what really ran in the (simulated) cloud. A runner that reported "finished" exits
    # a few (virtual) seconds later, and virtual time stops skipping once no orchestration is
    # left, so let the cloud run on for a minute before reading its ledger.
    if isinstance(sim.host.clock, VirtualClock) and not sim.host.engine.crashed:
        sim.host.clock.advance(timedelta(minutes=1), settle=sim.host.engine.wait_idle)
    for cloud in clouds if clouds is not None else [sim.cloud]:
        ledger_spans: dict[int, list[tuple[datetime, datetime | None, str]]] = defaultdict(list)
        names = Counter(e.job_name for e in ledger_of(cloud, evaluation_id))
        assert all(n == 1 for n in names.values()), f"a job name ran twice: {names}"
        for entry in ledger_of(cloud, evaluation_id):
            assert entry.state.is_terminal, f"{entry.job_name} still {entry.state} in the cloud"
            ledger_spans[entry.shard_index].append(
                (entry.submitted_at, entry.ended_at, entry.job_name)
            )
        _assert_disjoint(ledger_spans, "cloud ledger")
    return rows


def attempt_outcomes(sim: Simulation, evaluation_id: str, shard: int) -> list[dict[str, Any]]:
    """What the shard orchestration itself concluded about each attempt (tier, outcome, reason),
    read from its history: the inputs of its `finish_attempt` calls, oldest first."""
    status = sim.host.engine.get_status(shard_instance_id(evaluation_id, shard), show_history=True)
    if status is None:  # queue distribution: the worker slot of that index
        status = sim.host.engine.get_status(
            worker_instance_id(evaluation_id, shard), show_history=True
        )
    assert status is not None, f"no shard or worker orchestration {evaluation_id}:s{shard}"
    out = []
    for event in status.history or []:
        if event.get("EventType") == TASK_SCHEDULED and event.get("Name") == names.FINISH_ATTEMPT:
            payload = json.loads(event["Input"])
            if isinstance(payload, str):  # the SDK's JSON-in-JSON encoding of inputs
                payload = json.loads(payload)
            out.append(payload)
    return out


class SpecRecorder:
    """A job predicate that matches nothing and remembers every JobSpec the cloud prepares:
    `cloud.script(recorder, <any fault>)` then shows what each submitted job was asked to run."""

    def __init__(self) -> None:
        self.specs: dict[str, JobSpec] = {}

    def __call__(self, spec: JobSpec) -> bool:
        self.specs.setdefault(spec.job_name, spec)
        return False


class VirtualWatch:
    """Run `action` the first time `condition` holds, checking every `every` of virtual time.

    Both run inside a callback of the devhost's clock, and virtual time stands still while a
    callback runs, so the action sees the world exactly as the condition found it, however fast
    time is skipping. A condition or action that raises ends the watch; `wait` re-raises it.
    """

    def __init__(
        self,
        clock: VirtualClock | RealClock,
        condition: Callable[[], bool],
        action: Callable[[], Any],
        *,
        every: timedelta = timedelta(seconds=15),
    ) -> None:
        self._clock = clock
        self._condition = condition
        self._action = action
        self._every = every
        self._done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.fired_at: datetime | None = None
        clock.call_later(every, self._tick)

    def _tick(self) -> None:
        if self._done.is_set():
            return
        try:
            if self._condition():
                self.fired_at = self._clock.now()
                self.result = self._action()
                self._done.set()
                return
        except BaseException as err:
            self.error = err
            self._done.set()
            return
        self._clock.call_later(self._every, self._tick)

    def wait(self, timeout: float = 120.0) -> Any:
        assert self._done.wait(timeout), "the watched condition never held"
        if self.error is not None:
            raise self.error
        return self.result

    def cancel(self) -> None:
        self._done.set()


def restart(
    old: Simulation, connection_string: str, *, table_prefix: str, task_hub: str, **kwargs: Any
) -> Simulation:
    """Stop `old` (as if its process died) and start a new devhost on the same Azurite tables
    and task hub, its virtual clock continuing where the old one stopped. The simulated cloud
    lives in the host's process and does not survive: the jobs the old host submitted vanish
    without a word, so the control plane has to notice them through its deadlines and sweeper."""
    now = old.host.clock.now()
    old.stop()
    new = Simulation(
        connection_string=connection_string,
        profile=kwargs.pop("profile", old.profile),
        seed=kwargs.pop("seed", old.seed),
        store="table",
        table_prefix=table_prefix,
        task_hub=task_hub,
        **kwargs,
    )
    clock = new.host.clock
    assert isinstance(clock, VirtualClock)
    clock.skip_to(now)
    return new.start()
