"""The `waa-eval` commands (Typer). Every command talks to the evaluation API over HTTP
(waa_cli/client.py) and shows the answer with rich (waa_cli/render.py).

Exit codes: 0 done; 1 the server refused the request (the message names the field) or the
evaluation did not complete; 2 the URL cannot be reached or the configuration is unusable;
3 the function key was refused (401/403); 130 `watch` stopped by Ctrl-C (the evaluation keeps
running).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from waa_cli import render
from waa_cli.client import EXIT_REJECTED, EXIT_UNREACHABLE, ApiError, Client, has_ended
from waa_cli.config import ConfigError, Target, resolve

app = typer.Typer(
    name="waa-eval",
    help="Run and follow Windows Agent Arena evaluations on the control plane's HTTP API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_INTERRUPTED = 130
# The wait between two status reads of `watch` (a name of its own, so a test can press Ctrl-C
# there without touching time.sleep for every other thread).
_pause = time.sleep
T = TypeVar("T")


# Markup off: ids, task names, alerts and server messages are printed as they are (a "[0]" in
# "tiers[0]: ..." is text, not a style); the few styled words are marked up explicitly.
def _out() -> Console:
    return Console(highlight=False, soft_wrap=False, markup=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False, markup=False)


class Settings:
    """The global options, resolved when a command first needs the API."""

    def __init__(self, url: str | None, key: str | None, timeout: float) -> None:
        self._url, self._key, self.timeout = url, key, timeout

    def target(self) -> Target:
        try:
            return resolve(self._url, self._key)
        except ConfigError as err:
            _fail(str(err), EXIT_UNREACHABLE)

    def client(self) -> Client:
        return Client(self.target(), timeout=self.timeout)


def _fail(message: str, code: int) -> NoReturn:
    _err().print(f"[red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ApiError as err:
        _fail(err.message, err.exit_code)


@app.callback()
def _global(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            help="Base URL of the function app, e.g. https://<app>.azurewebsites.net "
            "(env WAA_EVAL_URL; config file `url`; default http://127.0.0.1:7071)",
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help="Function key, sent as the x-functions-key header "
            "(env WAA_EVAL_KEY; config file `key`)",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each HTTP answer")] = 30.0,
) -> None:
    """Config file: $WAA_EVAL_CONFIG, else ~/.config/waa-eval/config.toml (`url`, `key`)."""
    ctx.obj = Settings(url, key, timeout)


# ---------------------------------------------------------------------- the request body
def read_tasks(source: str) -> dict[str, Any]:
    """`{"tasks": ...}` from a task file in WAA's test_all.json shape (domain -> task ids) or
    a JSON list of task ids; otherwise `{"task_set": source}`, a task set shipped with the app
    (the server says which exist)."""
    path = Path(source).expanduser()
    if path.is_file():
        try:
            tasks = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            _fail(f"task file {source}: not valid JSON ({err})", EXIT_REJECTED)
        if not isinstance(tasks, dict | list):
            _fail(
                f"task file {source}: must be a JSON object mapping each domain to its task "
                "ids (WAA's test_all.json) or a JSON list of task ids",
                EXIT_REJECTED,
            )
        return {"tasks": tasks}
    if path.suffix == ".json" or "/" in source or path.exists():
        _fail(f"task file {source} does not exist (or is not a file)", EXIT_REJECTED)
    return {"task_set": source}


def _field_pairs(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            _fail(f"--field {pair!r}: expected NAME=VALUE (VALUE as JSON, else a string)", 2)
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            out[name] = raw
    return out


def request_body(**options: Any) -> dict[str, Any]:
    """The options the user gave, under the request's field names (domain/requests.py
    EvaluationRequest); unset ones are left out so the server's defaults apply."""
    extra = _field_pairs(options.pop("field", None))
    tiers = options.pop("tier", None)
    body = {
        name: value.value if isinstance(value, StrEnum) else value
        for name, value in options.items()
        if value is not None
    }
    if tiers:
        body["tiers"] = list(tiers)
    body.update(extra)
    return body


# Options shared by `start` and `retry` (the fields of POST /api/evaluations).
Workers = Annotated[
    int | None, typer.Option(help="Parallel jobs (worker slots or shards) (server default: 10)")
]
VmSize = Annotated[str | None, typer.Option(help="VM size of each job (server default)")]
Tiers = Annotated[
    list[str] | None,
    typer.Option("--tier", help="Compute tier, in failover order; repeat (azureml, batch, vm)"),
]
Spot = Annotated[bool | None, typer.Option("--spot/--no-spot", help="Spot capacity")]
Budget = Annotated[float | None, typer.Option("--budget-usd", help="Stop spending beyond this")]
StartTimeout = Annotated[
    float | None, typer.Option(help="Minutes a job may take to start before a retry")
]
BeatTimeout = Annotated[
    float | None, typer.Option(help="Minutes without a heartbeat before a job is stuck")
]
JobTimeout = Annotated[float | None, typer.Option(help="Hours one job may run")]
Agent = Annotated[str | None, typer.Option(help="WAA agent (server default: navi)")]
Model = Annotated[str | None, typer.Option(help="Model name (server default: gpt-4o)")]
Provider = Annotated[str | None, typer.Option(help="Model provider (e.g. openai, azure)")]
MaxSteps = Annotated[int | None, typer.Option(help="Agent steps per task (server default: 15)")]
SomOrigin = Annotated[str | None, typer.Option(help="WAA --som_origin (oss, a11y, omni, ...)")]
A11y = Annotated[str | None, typer.Option(help="WAA --a11y_backend (uia, win32)")]
Idempotency = Annotated[
    str | None, typer.Option(help="Same key twice -> the same evaluation, not a second one")
]
Policy = Annotated[str | None, typer.Option(help="resilient or naive (server default: resilient)")]
RightSize = Annotated[
    bool | None, typer.Option("--right-size/--no-right-size", help="Size shards by duration")
]
TaskRetries = Annotated[int | None, typer.Option(help="Runs again of a task whose run failed")]


class DistributionChoice(StrEnum):
    queue = "queue"
    static = "static"


DistributionOpt = Annotated[
    DistributionChoice | None,
    typer.Option(
        "--distribution",
        help="queue: each job asks for its next task; static: fixed shards planned up front "
        "(server default: queue)",
        show_default=False,
    ),
]
TargetHours = Annotated[
    float | None,
    typer.Option(
        "--target-hours",
        help="Instead of --workers: as many workers as finishing in this many hours needs",
        show_default=False,
    ),
]
TailCopies = Annotated[
    bool | None,
    typer.Option(
        "--tail-copies/--no-tail-copies",
        help="Queue only: run a second copy of a task far past its expected time on an idle slot",
        show_default=False,
    ),
]
Trials = Annotated[int | None, typer.Option(help="Runs of every task (1..10) (server default: 1)")]
Fields = Annotated[
    list[str] | None,
    typer.Option("--field", help="Any other request field: NAME=VALUE (VALUE as JSON); repeat"),
]
Watch = Annotated[bool, typer.Option("--watch", help="Then follow it to the end (as `watch`)")]
Interval = Annotated[float, typer.Option(help="Seconds between status reads")]


@app.command()
def start(
    ctx: typer.Context,
    tasks: Annotated[
        str,
        typer.Argument(
            help="A task file in WAA's test_all.json shape ({domain: list of task ids}) or a list "
            "of task ids, or the name of a task set shipped with the app (waa-full, waa-smoke)",
            show_default=False,
        ),
    ],
    workers: Workers = None,
    vm_size: VmSize = None,
    tier: Tiers = None,
    spot: Spot = None,
    budget_usd: Budget = None,
    container_start_timeout_minutes: StartTimeout = None,
    heartbeat_timeout_minutes: BeatTimeout = None,
    job_timeout_hours: JobTimeout = None,
    agent: Agent = None,
    model: Model = None,
    model_provider: Provider = None,
    max_steps: MaxSteps = None,
    som_origin: SomOrigin = None,
    a11y_backend: A11y = None,
    idempotency_key: Idempotency = None,
    policy: Policy = None,
    distribution: DistributionOpt = None,
    target_hours: TargetHours = None,
    tail_copies: TailCopies = None,
    right_size: RightSize = None,
    task_retries: TaskRetries = None,
    trials: Trials = None,
    field: Fields = None,
    watch_it: Watch = False,
    interval: Interval = 2.0,
) -> None:
    """Start an evaluation (POST /api/evaluations)."""
    options = dict(locals())
    for name in ("ctx", "tasks", "watch_it", "interval"):
        options.pop(name)
    body = {**read_tasks(tasks), **request_body(**options)}
    settings = _settings(ctx)
    with settings.client() as client:
        started = _call(lambda: client.start(body))
        _report_started(started)
        if watch_it:
            _watch_to_end(client, started["evaluation_id"], interval=interval)


def _report_started(started: dict[str, Any], verb: str = "started") -> None:
    out = _out()
    eid = started["evaluation_id"]
    if started.get("created") is False:
        out.print(f"an evaluation with this idempotency key exists: {eid}")
    else:
        out.print(
            f"{verb} evaluation {eid}: {started.get('tasks', '?')} tasks on "
            f"{started.get('shards', '?')} {render.units(started)}"
        )
    if started.get("status_url"):
        out.print(f"status: {started['status_url']}")
    out.print(f"follow it: waa-eval watch {eid}")


# ---------------------------------------------------------------------- watch
def follow(
    client: Client,
    evaluation_id: str,
    console: Console,
    *,
    interval: float = 2.0,
    timeout: float | None = None,
    label: str = "progress",
    elapsed_label: str = "elapsed",
) -> dict[str, Any]:
    """Show the live shard table and progress bar until the evaluation ended; returns its
    final status (with tasks and summary). KeyboardInterrupt propagates: the evaluation keeps
    running on the server."""
    live_view = render.LiveView(label, elapsed_label)
    deadline = None if timeout is None else time.monotonic() + timeout
    with Live(console=console, refresh_per_second=8, transient=False) as live:
        while True:
            view = client.status(evaluation_id, tasks=False)
            live.update(live_view.update(view))
            if has_ended(view):
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"evaluation {evaluation_id} still {view['state']} after {timeout} s"
                )
            _pause(interval)
    return client.status(evaluation_id)


def show_end(
    console: Console,
    final: dict[str, Any],
    results: dict[str, Any],
    *,
    makespan_label: str = "makespan",
) -> None:
    """What `watch` prints once the evaluation ended: its alerts, summary and results."""
    summary = final.get("summary")
    console.print()
    console.print(f"evaluation {final['evaluation_id']} {final['state']}")
    label = final.get("policy") or final["state"]
    if summary:
        for alert in summary.get("alerts", []):
            text = escape(render.alert_text(alert))
            console.print(f"  [yellow]alert[/] {text}", markup=True)
        console.print(render.summary_table({label: summary}, makespan_label=makespan_label))
    console.print(render.results_table(results, title=f"agent results ({label})"))
    where = (summary or {}).get("artifacts")
    if isinstance(where, dict) and where.get("prefix"):
        # The tasks' uploaded folders (trajectories, screenshots) are under this prefix.
        console.print(
            f"artifacts ({label}): {where['prefix']}  "
            f"(one task's folder: waa-eval artifacts {final['evaluation_id']} <task id>)",
            soft_wrap=True,
        )


def _watch_to_end(
    client: Client, evaluation_id: str, *, interval: float, timeout: float | None = None
) -> None:
    out = _out()
    try:
        final = _call(
            lambda: follow(client, evaluation_id, out, interval=interval, timeout=timeout)
        )
    except KeyboardInterrupt:
        _err().print(
            f"stopped watching. Evaluation {evaluation_id} is still running on the server: "
            f"`waa-eval watch {evaluation_id}` follows it again, "
            f"`waa-eval cancel {evaluation_id}` stops it.",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except TimeoutError as err:
        _fail(f"{err} (it keeps running; watch it again later)", EXIT_REJECTED)
    results = _call(lambda: client.results_json(evaluation_id))
    show_end(out, final, results)
    if final["state"] != "completed":
        raise typer.Exit(EXIT_REJECTED)


@app.command()
def watch(
    ctx: typer.Context,
    evaluation_id: Annotated[str, typer.Argument(show_default=False)],
    interval: Interval = 2.0,
    timeout: Annotated[
        float | None, typer.Option(help="Give up watching after this many seconds")
    ] = None,
) -> None:
    """Follow an evaluation live until it ends, then print its summary and results.
    Ctrl-C stops watching and leaves the evaluation running."""
    with _settings(ctx).client() as client:
        _watch_to_end(client, evaluation_id, interval=interval, timeout=timeout)


# ---------------------------------------------------------------------- status, list, cancel
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the server's JSON")]


def _print_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=False))


@app.command()
def status(
    ctx: typer.Context,
    evaluation_id: Annotated[str, typer.Argument(show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """Progress, cost, ETA and the shards of one evaluation (GET /api/evaluations/{id})."""
    with _settings(ctx).client() as client:
        view = _call(lambda: client.status(evaluation_id, tasks=as_json))
    if as_json:
        _print_json(view)
        return
    out = _out()
    out.print(render.status_table(view))
    out.print(render.shard_table(view))
    alerts = (view.get("summary") or {}).get("alerts") or view.get("alerts") or []
    for alert in alerts:
        out.print(f"  [yellow]alert[/] {escape(render.alert_text(alert))}", markup=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many, newest first (1..100)")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Recent evaluations (GET /api/evaluations)."""
    with _settings(ctx).client() as client:
        rows = _call(lambda: client.list(limit))
    if as_json:
        _print_json(rows)
        return
    table = Table(title="evaluations")
    for col in ("evaluation", "state", "created", "tasks", "policy", "distribution"):
        table.add_column(col, justify="right" if col == "tasks" else "left")
    for r in rows:
        table.add_row(
            r["evaluation_id"],
            str(r.get("state")),
            str(r.get("created_at")),
            str(r.get("tasks")),
            str(r.get("policy") or "-"),
            str(r.get("distribution") or "-"),
        )
    _out().print(table)


@app.command()
def cancel(
    ctx: typer.Context, evaluation_id: Annotated[str, typer.Argument(show_default=False)]
) -> None:
    """Cancel every job of an evaluation; its remaining tasks are not run."""
    with _settings(ctx).client() as client:
        _call(lambda: client.cancel(evaluation_id))
    _out().print(
        f"cancel requested for evaluation {evaluation_id}; "
        f"`waa-eval watch {evaluation_id}` shows it wind down"
    )


@app.command()
def retry(
    ctx: typer.Context,
    evaluation_id: Annotated[str, typer.Argument(show_default=False)],
    workers: Workers = None,
    vm_size: VmSize = None,
    tier: Tiers = None,
    spot: Spot = None,
    budget_usd: Budget = None,
    container_start_timeout_minutes: StartTimeout = None,
    heartbeat_timeout_minutes: BeatTimeout = None,
    job_timeout_hours: JobTimeout = None,
    agent: Agent = None,
    model: Model = None,
    model_provider: Provider = None,
    max_steps: MaxSteps = None,
    som_origin: SomOrigin = None,
    a11y_backend: A11y = None,
    policy: Policy = None,
    distribution: DistributionOpt = None,
    target_hours: TargetHours = None,
    tail_copies: TailCopies = None,
    right_size: RightSize = None,
    task_retries: TaskRetries = None,
    force: Annotated[
        bool | None,
        typer.Option("--force", help="Start another retry even if this one was retried already"),
    ] = None,
    field: Fields = None,
    watch_it: Watch = False,
    interval: Interval = 2.0,
) -> None:
    """Start a new evaluation of the runs an ended evaluation did not complete
    (POST /api/evaluations/{id}/retry). It takes the original's settings; the options override
    them (the tasks, trials and idempotency key stay the original's)."""
    options = dict(locals())
    for name in ("ctx", "evaluation_id", "watch_it", "interval"):
        options.pop(name)
    body = request_body(**options)
    with _settings(ctx).client() as client:
        started = _call(lambda: client.retry(evaluation_id, body))
        if started.get("created") is False:
            _out().print(
                f"evaluation {evaluation_id} was retried already as {started['evaluation_id']} "
                "(--force starts another retry)"
            )
        else:
            _report_started(started, verb=f"retrying {evaluation_id} as")
        if watch_it:
            _watch_to_end(client, started["evaluation_id"], interval=interval)


# ---------------------------------------------------------------------- results, artifacts
class ResultFormat(StrEnum):
    table = "table"
    csv = "csv"
    markdown = "markdown"
    json = "json"


@app.command()
def results(
    ctx: typer.Context,
    evaluation_id: Annotated[str, typer.Argument(show_default=False)],
    fmt: Annotated[ResultFormat, typer.Option("--format", "-f")] = ResultFormat.table,
) -> None:
    """The agent's score per domain and overall, as WAA reports it
    (GET /api/evaluations/{id}/results)."""
    with _settings(ctx).client() as client:
        if fmt is ResultFormat.table:
            body = _call(lambda: client.results_json(evaluation_id))
            _out().print(render.results_table(body, title=f"agent results ({body.get('state')})"))
        elif fmt is ResultFormat.json:
            _print_json(_call(lambda: client.results_json(evaluation_id)))
        else:
            typer.echo(_call(lambda: client.results(evaluation_id, fmt.value)), nl=False)


NOT_UPLOADED = "not uploaded yet"


@app.command()
def artifacts(
    ctx: typer.Context,
    evaluation_id: Annotated[str, typer.Argument(show_default=False)],
    task_id: Annotated[
        str | None,
        typer.Argument(help="A task id (with trials: <task>#<k>, or <task> for every trial)"),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Where a task's trajectory and screenshots are: the folder its runner uploaded
    (the task row's `artifacts`), or "not uploaded yet"."""
    with _settings(ctx).client() as client:
        view = _call(lambda: client.status(evaluation_id, tasks=True))
    rows = view.get("tasks", [])
    if task_id is not None:
        rows = [
            r for r in rows if r["task_id"] == task_id or r["task_id"].startswith(task_id + "#")
        ]
        if not rows:
            _fail(f"task_id: no task {task_id!r} in evaluation {evaluation_id}", EXIT_REJECTED)
    where = (view.get("summary") or {}).get("artifacts") or view.get("artifacts") or {}
    if as_json:
        _print_json(
            {
                "evaluation_id": evaluation_id,
                "prefix": where.get("prefix") if isinstance(where, dict) else None,
                "tasks": [
                    {
                        "task_id": r["task_id"],
                        "outcome": r.get("outcome"),
                        "artifacts": r.get("artifacts"),
                    }
                    for r in rows
                ],
            }
        )
        return
    out = _out()
    if isinstance(where, dict) and where.get("prefix"):
        out.print(f"artifacts of evaluation {evaluation_id}: {where['prefix']}", soft_wrap=True)
    if task_id is not None:
        for r in rows:
            place = r.get("artifacts") or NOT_UPLOADED
            out.print(f"{r['task_id']} ({r.get('outcome')}): {place}", soft_wrap=True)
        return
    table = Table(title=f"artifacts of {evaluation_id}")
    for col in ("task", "domain", "outcome", "artifacts"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["task_id"],
            str(r.get("domain")),
            str(r.get("outcome")),
            r.get("artifacts") or NOT_UPLOADED,
        )
    out.print(table)


def main() -> None:
    app()
