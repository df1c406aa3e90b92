"""Benchmark (prints figures; not a test): how long the dashboard takes to render a status of
1,000 tasks in headless Chromium, the first time (the whole task table is built) and on a later
poll (only the rows that changed are rewritten).

The page is the one the app serves (`triggers.dashboard.page()`, the same bytes and CSP); the
API answers are synthetic statuses served by Playwright's request interception, so no host
runs and nothing leaves the browser. Debian's chromium is used (`make test-setup`).

    python -m benchmarks.dashboard [--tasks 1000] [--changed 25] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, Route, sync_playwright

from triggers.dashboard import page as dashboard_page

CHROMIUM = Path("/usr/bin/chromium")
# A made-up origin: every request to it is answered by the route handlers below.
ORIGIN = "http://dashboard.invalid"
DOMAINS = (
    "chrome", "clock", "file_explorer", "libreoffice_calc", "libreoffice_writer",
    "microsoft_paint", "msedge", "notepad", "settings", "vlc", "vs_code", "windows_calc",
)  # fmt: skip


def synthetic_status(
    tasks: int = 1000, *, shards: int = 10, done: int = 0, state: str = "running"
) -> dict[str, Any]:
    """A status document in the shape of GET /api/evaluations/{id} (adapters/state/views.py):
    the first `done` tasks completed (every 7th of them failed), the rest pending or running."""
    rows = []
    for i in range(tasks):
        shard = i % shards
        if i < done:
            outcome = "failed" if i % 7 == 3 else "completed"
        elif state == "cancelled":
            outcome = "not_run"
        else:
            outcome = "running" if i < done + shards else "pending"
        rows.append(
            {
                "task_id": f"task-{i:04d}-WOS",
                "domain": DOMAINS[i % len(DOMAINS)],
                "shard": shard,
                "outcome": outcome,
                "reason": "agent raised: timeout after 15 steps" if outcome == "failed" else "",
                "score": (1.0 if i % 3 == 0 else 0.0) if outcome == "completed" else None,
                "attempt": 1 if outcome in ("completed", "failed", "running") else None,
                "failed_runs": 0,
            }
        )
    counts = {o: sum(1 for r in rows if r["outcome"] == o) for o in _OUTCOMES}
    return {
        "evaluation_id": "bench1000",
        "state": state,
        "created_at": "2026-01-01T00:00:00+00:00",
        "policy": "resilient",
        "workers": shards,
        "vm_size": "Standard_D4s_v5",
        "spot": False,
        "tiers": ["azureml", "batch", "vm"],
        "counts": {"total": tasks, **counts},
        "cost": {
            "so_far_usd": round(0.02 * done, 4),
            "estimated_total_usd": round(0.02 * tasks, 4),
            "per_completed_task_usd": 0.02 if done else None,
            "budget_usd": 40.0,
        },
        "elapsed_seconds": 60.0 * (1 + done),
        "eta_seconds": 60.0 * (tasks - done) / shards,
        "shards": [
            {
                "shard": s,
                "tasks": tasks // shards,
                "tier": "azureml",
                "attempt": 1,
                "job_name": f"bench1000-s{s}-a1",
                "status": "running",
                "job_state": "running",
                "seconds_since_heartbeat": 12.0,
                "retries": 0,
                "failovers": 0,
                "reason": "",
            }
            for s in range(shards)
        ],
        "tasks": rows,
        "runtime_status": "Running" if state == "running" else "Completed",
    }


_OUTCOMES = ("completed", "failed", "running", "pending", "not_run")


def results_of(status: dict[str, Any]) -> dict[str, Any]:
    """GET /api/evaluations/{id}/results for a synthetic status (one row per domain)."""

    def row(domain: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        run = [t for t in tasks if t["outcome"] == "completed"]
        scores = [t["score"] or 0.0 for t in run]
        return {
            "domain": domain,
            "tasks": len(tasks),
            "tasks_run": len(run),
            "success_rate_run": sum(scores) / len(run) if run else None,
            "success_rate_all": sum(scores) / len(tasks) if tasks else 0.0,
            "mean_score": sum(scores) / len(run) if run else None,
        }

    tasks = status["tasks"]
    return {
        "evaluation_id": status["evaluation_id"],
        "state": status["state"],
        "domains": [row(d, [t for t in tasks if t["domain"] == d]) for d in DOMAINS],
        "overall": row("all", tasks),
    }


class FakeApi:
    """Answers the page's requests: the page itself (as the app serves it) and, for one
    evaluation, the statuses in `statuses` one poll after another (the last one repeats)."""

    def __init__(
        self,
        statuses: list[dict[str, Any]],
        *,
        key: str | None = None,
        results: dict[str, Any] | None = None,
        failures: int = 0,
    ) -> None:
        self.failures = failures  # the first status calls answered 503
        self.statuses = statuses
        self.results = results  # the results table to answer with (default: from the status)
        self.key = key  # when set, API calls without it get the host's bare 401
        self.polls = 0
        self.requests: list[str] = []
        self.keys: set[str | None] = set()  # the x-functions-key of every API call

    def handle(self, route: Route) -> None:
        url = route.request.url
        self.requests.append(f"{route.request.method} {url}")
        path = url.removeprefix(ORIGIN).split("?", 1)[0]
        if path == "/api/dashboard":
            body, csp = dashboard_page()
            route.fulfill(
                status=200,
                body=body,
                headers={
                    "Content-Type": "text/html; charset=utf-8",
                    "Content-Security-Policy": csp,
                },
            )
            return
        eid = self.statuses[0]["evaluation_id"]
        sent = route.request.headers.get("x-functions-key")
        self.keys.add(sent)
        if self.key is not None and sent != self.key:
            route.fulfill(status=401, body=b"")
            return
        if path == f"/api/evaluations/{eid}" and self.failures > 0:
            self.failures -= 1
            route.fulfill(status=503, json={"error": "the host is restarting"})
        elif path == f"/api/evaluations/{eid}":
            status = self.statuses[min(self.polls, len(self.statuses) - 1)]
            self.polls += 1
            route.fulfill(status=200, json=status)
        elif path == f"/api/evaluations/{eid}/results":
            table = self.results or results_of(self.statuses[max(0, self.polls - 1)])
            route.fulfill(status=200, json=table)
        else:
            route.fulfill(status=404, json={"error": f"no route {path}"})


def open_dashboard(
    browser: Browser, api: FakeApi, *, poll: float = 0.2, key: str = "bench-key"
) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.route(f"{ORIGIN}/**", api.handle)
    eid = api.statuses[0]["evaluation_id"]
    page.goto(f"{ORIGIN}/api/dashboard?code={key}&poll={poll}&evaluation={eid}")
    return page


def render_times(page: Page, renders: int) -> list[float]:
    """The page's own figures (window.waaDashboard.renderMs) after `renders` renders."""
    page.wait_for_function(f"() => window.waaDashboard.renders >= {renders}", timeout=30000)
    return [float(ms) for ms in page.evaluate("() => window.waaDashboard.renderMs")]


def measure(browser: Browser, tasks: int, changed: int) -> tuple[float, float]:
    """(first render ms, later render ms) for one page: a status, then the same status with
    `changed` more tasks finished."""
    first = synthetic_status(tasks)
    later = synthetic_status(tasks, done=changed)
    page = open_dashboard(browser, FakeApi([first, later, deepcopy(later)]))
    try:
        times = render_times(page, 2)
        return times[0], times[1]
    finally:
        page.close()


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--changed", type=int, default=25)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    if not CHROMIUM.is_file():
        print(f"{CHROMIUM} is missing (make test-setup installs Debian's chromium): not measured")
        return 0
    with chromium() as browser:
        figures = [measure(browser, args.tasks, args.changed) for _ in range(args.runs)]
    first = [f for f, _ in figures]
    later = [s for _, s in figures]
    print(
        json.dumps(
            {
                "tasks": args.tasks,
                "runs": args.runs,
                "first_render_ms_median": round(statistics.median(first), 1),
                "first_render_ms_max": round(max(first), 1),
                f"render_after_{args.changed}_changed_ms_median": round(
                    statistics.median(later), 1
                ),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
