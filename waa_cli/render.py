"""What the client shows: the live progress (shard table and progress bar), the summary of an
ended evaluation, and the agent's results per domain. Rich renderables built from the JSON the
API returns (adapters/state/views.py and domain/results.py on the server side)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from rich.console import Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

# The results columns the server sends (domain/results.py COLUMNS), as WAA's table names them.
RESULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("domain", "domain"),
    ("tasks", "tasks"),
    ("tasks_run", "tasks run"),
    ("success_rate_all", "success (all)"),
    ("success_rate_run", "success (run)"),
    ("mean_score", "mean score"),
)
_SINGLE_TRIAL_NOISE = {"trials", "runs", "runs_completed"}
# Labels of the per-trial columns (the trials branch's domain/results.py); others show their key.
_EXTRA_LABELS = {
    "runs_completed": "runs done",
    "success_rate_std": "± std",
    "success_rate_min": "min",
    "success_rate_max": "max",
}


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def money(value: float | None) -> str:
    return "-" if value is None else f"${value:.2f}"


def alert_text(alert: object) -> str:
    """An alert as a line: today's summaries hold strings; recorded alerts are objects with a
    `text` (and `kind`, `at`)."""
    if isinstance(alert, Mapping):
        text = str(alert.get("text") or alert.get("kind") or alert)
        kind = alert.get("kind")
        return f"[{kind}] {text}" if kind and kind not in text else text
    return str(alert)


def is_queue(view: Mapping[str, Any]) -> bool:
    """The evaluation's jobs ask for their tasks (distribution "queue"): its `shards` are
    worker slots."""
    return view.get("distribution") == "queue"


def units(view: Mapping[str, Any]) -> str:
    return "slots" if is_queue(view) else "shards"


def _server_now(view: Mapping[str, Any]) -> datetime | None:
    # The status document's own clock: created_at + elapsed_seconds (not this machine's).
    try:
        created = datetime.fromisoformat(str(view["created_at"]))
        return created + timedelta(seconds=float(view["elapsed_seconds"]))
    except (KeyError, TypeError, ValueError):
        return None


def current_task(view: Mapping[str, Any], slot: Mapping[str, Any]) -> str:
    """A slot's task in progress and for how long its job has run it, or "-"."""
    task = slot.get("current_task")
    if not task:
        return "-"
    now = _server_now(view)
    try:
        since = datetime.fromisoformat(str(slot.get("current_task_since")))
        age = (now - since).total_seconds() if now is not None else None
    except (TypeError, ValueError):
        age = None
    return f"{task} ({duration(max(0.0, age))})" if age is not None else str(task)


def shard_table(view: Mapping[str, Any]) -> Table:
    title = f"evaluation {view['evaluation_id']}"
    labels = [v for v in (view.get("policy"), view.get("distribution")) if v]
    if labels:
        title += f" ({', '.join(labels)})"
    table = Table(title=title, expand=False)
    queue = is_queue(view) or any(s.get("current_task") for s in view.get("shards", []))
    unit = "slot" if queue else "shard"
    columns = [unit, "tasks", "tier", "attempt", "status", "job", "heartbeat", "failovers"]
    if queue:
        columns.append("task in progress")
    for col in columns:
        right = col in (unit, "tasks", "attempt", "failovers")
        # A WAA task id is 40 characters: that column may wrap, the short ones do not.
        no_wrap = col != "task in progress"
        table.add_column(col, justify="right" if right else "left", no_wrap=no_wrap)
    for s in view.get("shards", []):
        beat = s.get("seconds_since_heartbeat")
        cells = [
            str(s["shard"]),
            str(s["tasks"]),
            s.get("tier") or "-",
            str(s.get("attempt", 0)),
            s.get("status") or "-",
            s.get("job_state") or "-",
            f"{beat:.0f} s ago" if beat is not None else "-",
            str(s.get("failovers", 0)),
        ]
        if queue:
            cells.append(current_task(view, s))
        table.add_row(*cells)
    return table


def progress_line(view: Mapping[str, Any], elapsed_label: str = "elapsed") -> str:
    c = view["counts"]
    cost = view.get("cost", {})
    parts = [
        f"{elapsed_label} {duration(view.get('elapsed_seconds'))}",
        f"cost {money(cost.get('so_far_usd'))}",
    ]
    if cost.get("budget_usd") is not None:
        parts[-1] += f" of {money(cost['budget_usd'])}"
    if view.get("state") == "running" and view.get("eta_seconds") is not None:
        parts.append(f"ETA {duration(view['eta_seconds'])}")
    parts.append(
        f"completed {c['completed']} failed {c['failed']} not run {c['not_run']} "
        f"running {c['running']}"
    )
    return "  ".join(parts)


def done_count(view: Mapping[str, Any]) -> int:
    c = view["counts"]
    return int(c["completed"] + c["failed"] + c["not_run"])


class LiveView:
    """The shard table above a progress bar, updated from each status document."""

    def __init__(self, label: str, elapsed_label: str = "elapsed") -> None:
        self.elapsed_label = elapsed_label
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self.bar: TaskID = self.progress.add_task(label, total=1, info="")

    def update(self, view: Mapping[str, Any]) -> RenderableType:
        self.progress.update(
            self.bar,
            total=max(1, int(view["counts"]["total"])),
            completed=done_count(view),
            info=progress_line(view, self.elapsed_label),
        )
        parts: list[RenderableType] = [shard_table(view), self.progress]
        for alert in view.get("alerts") or []:
            parts.append(Text(f"alert: {alert_text(alert)}", style="yellow"))
        return Group(*parts)


SUMMARY_ROWS: tuple[tuple[str, Any], ...] = (
    ("tasks completed", lambda s: f"{s['counts']['completed']} / {s['counts']['total']}"),
    ("tasks failed", lambda s: str(s["counts"]["failed"])),
    ("tasks not run", lambda s: str(s["counts"]["not_run"])),
    # Infrastructure: the share of tasks that ran; the agent's score is in the results table.
    ("completion rate", lambda s: pct(s["completion_rate"])),
    ("agent success rate (all tasks)", lambda s: pct(s["results"]["overall"]["success_rate_all"])),
    ("makespan", lambda s: f"{s['makespan_hours']:.2f} h"),  # label: summary_table's argument
    ("cost", lambda s: money(s["cost_usd"])),
    ("cost per completed task", lambda s: f"${s['cost_per_completed_task_usd'] or 0:.3f}"),
    ("jobs (attempts)", lambda s: str(s["attempts"])),
    ("failovers", lambda s: str(s["failovers"])),
)


def summary_table(
    summaries: Mapping[str, Mapping[str, Any]],
    title: str = "summary",
    makespan_label: str = "makespan",
) -> Table:
    """The end-of-evaluation summary (adapters/state/views.py `summary`), one column per
    evaluation: one for `watch`, the two policies side by side for the demo (whose clock is
    virtual: `makespan_label` says so)."""
    table = Table(title=title)
    table.add_column("")
    for label in summaries:
        table.add_column(label, justify="right")
    for label, fmt in SUMMARY_ROWS:
        cells = []
        for s in summaries.values():
            try:
                cells.append(fmt(s))
            except (KeyError, TypeError):
                cells.append("-")
        table.add_row(makespan_label if label == "makespan" else label, *cells)
    return table


def _cell(name: str, value: object) -> str:
    if value is None:
        return "-"
    if name.startswith("success_rate") and isinstance(value, float | int):
        return pct(float(value))
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def results_table(results: Mapping[str, Any], title: str = "agent results") -> Table:
    """The agent's score per domain and for all domains, as WAA's results table shows it:
    `{"domains": [...], "overall": {...}}` from GET /api/evaluations/{id}/results. Columns the
    server adds later (per-trial figures) are shown after the known ones."""
    rows = [*results.get("domains", []), results["overall"]]
    known = [key for key, _ in RESULT_COLUMNS]
    extra: list[str] = []
    for row in rows:
        extra.extend(k for k in row if k not in known and k not in extra)
    # A column with no figure in any row is left out (the spread with a single trial), and so
    # are the trial counts when every row ran one trial.
    single = all(int(r.get("trials") or 1) <= 1 for r in rows)
    extra = [
        k
        for k in extra
        if any(r.get(k) is not None for r in rows) and not (single and k in _SINGLE_TRIAL_NOISE)
    ]
    table = Table(title=title)
    for key, label in RESULT_COLUMNS:
        # A domain name is never cut (libreoffice_writer); headers wrap instead.
        justify = "left" if key == "domain" else "right"
        table.add_column(label, justify=justify, no_wrap=key == "domain")
    for key in extra:
        table.add_column(_EXTRA_LABELS.get(key, key.replace("_", " ")), justify="right")
    for row in rows:
        table.add_row(*(_cell(k, row.get(k)) for k in [*known, *extra]))
    return table


def status_table(view: Mapping[str, Any]) -> Table:
    """The headline figures of one evaluation (GET /api/evaluations/{id})."""
    c = view["counts"]
    cost = view.get("cost", {})
    table = Table(title=f"evaluation {view['evaluation_id']}", show_header=False)
    table.add_column("")
    table.add_column("")
    rows = [
        ("state", str(view.get("state"))),
        ("created", str(view.get("created_at"))),
        ("policy", str(view.get("policy") or "-")),
        ("distribution", str(view.get("distribution") or "-")),
        ("workers / vm size", f"{view.get('workers')} x {view.get('vm_size')}"),
        ("tiers", ", ".join(view.get("tiers") or [])),
        (
            "tasks",
            f"{c['total']} total: {c['completed']} completed, {c['failed']} failed, "
            f"{c['running']} running, {c['pending']} pending, {c['not_run']} not run",
        ),
        ("elapsed", duration(view.get("elapsed_seconds"))),
        ("ETA", duration(view.get("eta_seconds")) if view.get("state") == "running" else "-"),
        ("cost so far", money(cost.get("so_far_usd"))),
        ("estimated total", money(cost.get("estimated_total_usd"))),
        ("budget", money(cost.get("budget_usd"))),
    ]
    for key in ("retry_of", "retried_by"):
        value = view.get(key)
        if value:
            shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            rows.append((key.replace("_", " "), shown))
    for label, value in rows:
        table.add_row(label, value)
    return table
