"""The dashboard in a real browser (Debian's chromium, Playwright) against the devhost during a
simulated evaluation: the page follows the run without reloading, a stuck job's alert appears,
cancel and retry ask first, and 1,000 tasks render (figures printed) with every text escaped.

Virtual time is held still at chosen moments (`Gate`), so the page is checked against a state
that cannot move under it, however fast the simulation skips ahead.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Dialog, Page, expect

from adapters import runtime
from adapters.compute.simulated import HangAfter
from benchmarks.dashboard import FakeApi, open_dashboard, render_times, synthetic_status
from devhost.simulation import Simulation
from domain.clock import parse_time
from domain.tasksets import load_task_set
from tests.browser.conftest import Gate
from tests.e2e.scenario_support import VirtualWatch

KEY = "test-function-key"
# Six tasks of the smoke set (one per domain) on two shards, a heartbeat a minute: a small run,
# so the browser tests stay fast on a loaded machine.
TASKS = dict(itertools.islice(load_task_set("waa-smoke").items(), 6))
N = sum(len(ids) for ids in TASKS.values())
HEARTBEAT_SECONDS = 60.0
WAIT_MS = 30_000
SILENCE = 90  # the page flags a running job quiet for longer than this (virtual seconds)


def outcomes(evaluation_id: str) -> Counter[str]:
    rows = runtime.services().store.get_evaluation_rows(evaluation_id)
    assert rows is not None
    return Counter(t["outcome"] for t in rows["tasks"])


def dashboard_url(sim: Simulation, evaluation_id: str | None = None) -> str:
    url = f"{sim.base_url}/api/dashboard?code={KEY}&poll=0.3&silence={SILENCE}"
    return f"{url}&evaluation={evaluation_id}" if evaluation_id else url


def count(page: Page, outcome: str) -> Any:
    return expect(page.locator(f'[data-count="{outcome}"]'))


def watch(sim: Simulation, gate: Gate, condition: Callable[[], bool]) -> VirtualWatch:
    return VirtualWatch(sim.host.clock, condition, gate.hold)


@pytest.mark.azurite
def test_the_devhost_serves_the_page_through_the_worker(
    make_simulation: Callable[..., Simulation],
) -> None:
    sim = make_simulation()
    r = requests.get(f"{sim.base_url}/api/dashboard", params={"code": KEY}, timeout=30)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'sha256-" in csp and "unsafe" not in csp
    # One self-contained document: the script and the stylesheet are inlined, nothing else loads.
    assert r.text.startswith("<!doctype html>") and "<script>" in r.text and "<style>" in r.text
    assert 'src="' not in r.text and "stylesheet" not in r.text
    assert "—" in r.text  # UTF-8 made it through the worker's encoding intact
    assert requests.post(f"{sim.base_url}/api/dashboard", timeout=30).status_code == 404


@pytest.mark.browser
@pytest.mark.azurite
def test_the_page_follows_an_evaluation_and_shows_a_stuck_job(
    make_simulation: Callable[..., Simulation],
    gates: Callable[[str], Gate],
    page: Page,
    screenshot_dir: Path,
) -> None:
    sim = make_simulation(heartbeat_interval_seconds=HEARTBEAT_SECONDS)
    sim.cloud.script(
        lambda spec: spec.shard_index == 0 and spec.attempt == 1, HangAfter(1), times=1
    )
    r = sim.start_evaluation(
        {"tasks": TASKS, "workers": 2, "heartbeat_timeout_minutes": 5, "budget_usd": 2}
    )
    assert r.status_code == 202, r.text
    eid = r.json()["evaluation_id"]

    def quiet_job() -> bool:
        rows = runtime.services().store.get_evaluation_rows(eid)
        assert rows is not None
        now = sim.host.clock.now()
        for job in rows["jobs"]:
            last = parse_time(job.get("last_heartbeat_at"))
            if job["shard_index"] == 0 and job["state"] == "running" and last is not None:
                return (now - last) > timedelta(seconds=SILENCE + 30)
        return False

    def stuck_alert_recorded() -> bool:
        rows = runtime.services().store.get_evaluation_rows(eid)
        assert rows is not None
        return any(a["kind"] == "job_stuck" for a in rows.get("alerts", []))

    begun, progressed, stuck = gates("start"), gates("first result"), gates("stuck job")
    alerted = gates("the app's stuck-job alert")
    watch(sim, begun, lambda: True)
    watch(sim, progressed, lambda: outcomes(eid)["completed"] >= 1)
    watch(sim, stuck, quiet_job)
    watch(sim, alerted, stuck_alert_recorded)

    page.goto(dashboard_url(sim, eid))
    begun.wait()
    count(page, "completed").to_have_text(re.compile(r"^0\b"), timeout=WAIT_MS)
    count(page, "total").to_have_text(str(N))
    expect(page.locator("#tasks tr")).to_have_count(N)
    page.evaluate("() => { window.sameDocument = true; }")
    begun.release()

    progressed.wait()
    done = outcomes(eid)["completed"]
    count(page, "completed").to_have_text(re.compile(rf"^{done}\b"), timeout=WAIT_MS)
    expect(page.locator("#tasks td.o-completed")).to_have_count(done)
    page.screenshot(path=screenshot_dir / "1-first-results.png", full_page=True)
    progressed.release()

    # The page flags the quiet job itself as soon as it is quiet for longer than ?silence= ...
    stuck.wait()
    quiet = page.locator("#alerts li.from-page.live", has_text="no heartbeat for")
    expect(quiet).to_have_count(1, timeout=WAIT_MS)
    expect(quiet).to_contain_text("shard 0")
    expect(page.locator("#shards tr.o-failed")).to_have_count(1)
    page.screenshot(path=screenshot_dir / "2-quiet-job.png", full_page=True)
    stuck.release()

    # ... and shows the app's alert the moment the sweeper records it, while the run goes on.
    alerted.wait()
    app_alert = page.locator("#alerts li.from-app.sev-error", has_text="is stuck")
    expect(app_alert).to_have_count(1, timeout=WAIT_MS)
    expect(app_alert).to_contain_text("cancelled the job")
    expect(page.locator("#ev-state")).to_have_text("running")
    expect(page.locator("#alerts li.from-page")).to_contain_text("resumed or the attempt ended")
    page.screenshot(path=screenshot_dir / "3-stuck-job-alert.png", full_page=True)
    alerted.release()

    # The sweeper cancels the quiet job, attempt 2 finishes the shard, the evaluation ends.
    expect(page.locator("#ev-state")).to_have_text("completed", timeout=WAIT_MS)
    page.wait_for_function("() => window.waaDashboard.ended", timeout=WAIT_MS)
    count(page, "completed").to_have_text(re.compile(rf"^{N}\b"))
    expect(page.locator("#alerts li.from-summary", has_text="stuck mid-run")).to_have_count(1)
    expect(page.locator("#alerts li.from-app.sev-info")).to_contain_text(f"{eid} completed")
    expect(page.locator("#results tr.total td").first).to_have_text("all domains")
    expect(page.locator("#shards tr").first.locator("td").nth(3)).to_have_text("2")
    expect(page.locator("#cancel")).to_be_disabled()
    expect(page.locator("#retry")).to_be_disabled()  # every run completed: nothing to retry
    points = page.locator("#chart polyline.tasks-line").get_attribute("points") or ""
    assert len(points.split()) >= 3, points  # a point per state the page saw
    assert page.evaluate("() => window.sameDocument") is True  # never reloaded
    polls = page.evaluate("() => window.waaDashboard.polls")
    page.wait_for_timeout(1000)
    assert page.evaluate("() => window.waaDashboard.polls") == polls  # polling stopped at the end
    page.screenshot(path=screenshot_dir / "4-ended.png", full_page=True)


@pytest.mark.browser
@pytest.mark.azurite
def test_cancel_and_retry_ask_first(
    make_simulation: Callable[..., Simulation],
    gates: Callable[[str], Gate],
    page: Page,
    screenshot_dir: Path,
) -> None:
    sim = make_simulation(heartbeat_interval_seconds=HEARTBEAT_SECONDS)
    r = sim.start_evaluation({"tasks": TASKS, "workers": 2})
    eid = r.json()["evaluation_id"]
    running = gates("first result")
    watch(sim, running, lambda: outcomes(eid)["completed"] >= 1)

    # From the list of recent evaluations to this one, without loading another page.
    page.goto(dashboard_url(sim))
    page.locator("#list-rows a", has_text=eid).click()
    expect(page.locator("#ev-id")).to_have_text(eid)
    assert f"evaluation={eid}" in page.url

    running.wait()
    expect(page.locator("#ev-state")).to_have_text("running", timeout=WAIT_MS)
    asked: list[str] = []

    def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.locator("#cancel").click()
    expect(page.locator("#action-msg")).to_contain_text("Cancel requested", timeout=WAIT_MS)
    assert asked and eid in asked[0] and asked[0].startswith("Cancel evaluation")
    running.release()

    expect(page.locator("#ev-state")).to_have_text("cancelled", timeout=WAIT_MS)
    page.wait_for_function("() => window.waaDashboard.ended", timeout=WAIT_MS)
    final = outcomes(eid)
    assert final["not_run"] > 0, final
    count(page, "not_run").to_have_text(re.compile(rf"^{final['not_run']}\b"))
    page.locator("#task-outcome").select_option("not_run")
    visible = page.locator("#tasks tr:not([hidden])")
    expect(visible).to_have_count(final["not_run"])
    expect(visible.first.locator("td").nth(7)).not_to_have_text("")  # the reason it was not run
    page.screenshot(path=screenshot_dir / "5-cancelled.png", full_page=True)

    # Retry: dismissing the question sends nothing; accepting it starts the retry and shows it.
    # (The retry endpoint is answered here by the page's network layer with the documented 202.)
    sent: list[str] = []
    page.on("request", lambda req: sent.append(req.url) if "/retry" in req.url else None)
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator("#retry").click()
    page.wait_for_timeout(300)
    assert sent == []
    page.route(
        "**/retry",
        lambda route: route.fulfill(
            status=202, json={"evaluation_id": eid, "created": True, "status_url": ""}
        ),
    )
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#retry").click()
    expect(page.locator("#action-msg")).to_contain_text(f"started as {eid}", timeout=WAIT_MS)
    assert len(sent) == 1 and sent[0].endswith(f"/api/evaluations/{eid}/retry")


XSS = '<img src=x onerror="window.pwned=1"></td><script>window.pwned=2</script>'


@pytest.mark.browser
def test_a_thousand_tasks_render_escaped_and_only_changed_rows_are_rewritten(
    browser: Browser, screenshot_dir: Path, record_property: Callable[[str, object], None]
) -> None:
    first = synthetic_status(1000)
    first["tasks"][5]["reason"] = XSS
    first["tasks"][6]["task_id"] = XSS
    first["tasks"][7]["artifacts"] = "javascript:window.pwned=3"
    later = synthetic_status(1000, done=25)
    later["tasks"][5]["reason"] = XSS
    later["tasks"][6]["task_id"] = XSS
    later["tasks"][7]["artifacts"] = "javascript:window.pwned=3"
    later["tasks"][8]["artifacts"] = "https://acct.blob.core.windows.net/artifacts/bench1000/t8/"
    changed = sum(
        1
        for a, b in zip(first["tasks"], later["tasks"], strict=True)
        if any(a.get(k) != b.get(k) for k in ("outcome", "reason", "score", "attempt", "artifacts"))
    )
    api = FakeApi([first, later])
    page = open_dashboard(browser, api)
    try:
        ms = render_times(page, 3)
        stats = page.evaluate("() => window.waaDashboard")
        figures = {
            "tasks": 1000,
            "first_render_ms": round(ms[0], 1),
            f"render_after_{changed}_rows_changed_ms": round(ms[1], 1),
            "render_unchanged_ms": round(ms[2], 1),
        }
        print(f"dashboard render times: {json.dumps(figures)}")
        (screenshot_dir / "render-times.json").write_text(json.dumps(figures))
        record_property("dashboard_render_ms", figures)
        assert stats["rowsRebuilt"] == 1000  # built once ...
        assert stats["rowsUpdated"] == changed  # ... then only the changed rows, then none

        # Escaped: the payloads are shown as text and nothing of them runs or becomes markup.
        assert page.evaluate("() => window.pwned") is None
        expect(page.locator("#tasks tr").nth(5).locator("td").nth(7)).to_have_text(XSS)
        expect(page.locator("#tasks tr").nth(6).locator("td").first).to_have_text(XSS)
        assert page.locator("#tasks img, #tasks script").count() == 0
        expect(page.locator("#tasks tr").nth(7).locator("a")).to_have_count(0)
        link = page.locator("#tasks tr").nth(8).locator("a")
        expect(link).to_have_attribute("href", later["tasks"][8]["artifacts"])
        expect(link).to_have_attribute("rel", "noreferrer noopener")

        # The filter box: every word must match the task, domain, outcome or reason.
        notepad = [t for t in later["tasks"] if t["domain"] == "notepad"]
        page.locator("#task-filter").fill("notepad")
        expect(page.locator("#tasks tr:not([hidden])")).to_have_count(len(notepad))
        page.locator("#task-filter").fill("notepad completed")
        expect(page.locator("#tasks tr:not([hidden])")).to_have_count(
            sum(1 for t in notepad if t["outcome"] == "completed")
        )
        page.locator("#task-filter").fill("")
        page.locator("#task-outcome").select_option("failed")
        expect(page.locator("#task-shown")).to_have_text(
            f"({later['counts']['failed']} of 1000 shown)"
        )
        # Every call carried the function key from the page's URL as x-functions-key.
        assert api.keys == {"bench-key"}
        page.screenshot(path=screenshot_dir / "6-thousand-tasks.png")
    finally:
        page.close()


@pytest.mark.browser
def test_a_wrong_key_asks_for_the_key_and_the_page_keeps_the_evaluation(browser: Browser) -> None:
    # With trials, the results table (GET .../results) carries the per-trial spread.
    row = {
        "domain": "notepad",
        "tasks": 2,
        "tasks_run": 2,
        "success_rate_run": 0.5,
        "success_rate_all": 0.5,
        "mean_score": 0.5,
        "trials": 3,
        "runs": 6,
        "runs_completed": 6,
        "success_rate_std": 0.25,
        "success_rate_min": 0.25,
        "success_rate_max": 0.75,
    }
    results = {"domains": [row], "overall": {**row, "domain": "all"}}
    api = FakeApi([synthetic_status(20, shards=2)], key="right-key", results=results)
    page = open_dashboard(browser, api, key="wrong-key")
    try:
        expect(page.locator("#keyform")).to_be_visible()
        expect(page.locator("#conn")).to_have_text("the function key was refused")
        page.locator("#keyentry input[name=code]").fill("right-key")
        page.locator("#keyentry button").click()
        expect(page.locator("#ev-id")).to_have_text("bench1000")
        count(page, "total").to_have_text("20")
        assert "code=right-key" in page.url and "evaluation=bench1000" in page.url
        expect(page.locator("#results-head th")).to_have_count(10)
        expect(page.locator("#results tr.total td").nth(8)).to_have_text("25.0%")
        expect(page.locator("#results tr.total td").nth(9)).to_have_text("25.0% \u2013 75.0%")
    finally:
        page.close()


@pytest.mark.browser
def test_failed_polls_back_off_and_the_page_recovers(browser: Browser) -> None:
    api = FakeApi([synthetic_status(20, shards=2)], failures=2)
    page = open_dashboard(browser, api, poll=0.2)
    try:
        expect(page.locator("#conn")).to_contain_text("update failed (503: the host is restarting)")
        expect(page.locator("#conn")).to_contain_text("live", timeout=WAIT_MS)
        count(page, "total").to_have_text("20")
        assert api.failures == 0
    finally:
        page.close()


@pytest.mark.browser
def test_worker_slots_show_the_task_each_runs(browser: Browser) -> None:
    # Queue distribution (issue 10): the status names per slot the task its job claimed.
    view = synthetic_status(20, shards=3)
    view["distribution"] = "queue"
    # The status document's clock: created_at + elapsed_seconds (60 s here); claimed 45 s ago.
    view["shards"][0].update(current_task="notepad-7", current_task_since="2026-01-01T00:00:15Z")
    view["shards"][1].update(current_task=XSS, current_task_since=None)
    view["shards"][2].update(current_task=None, current_task_since=None)
    api = FakeApi([view])
    page = open_dashboard(browser, api)
    try:
        expect(page.locator("#shards-title")).to_have_text("Worker slots")
        expect(page.locator("#shards-unit")).to_have_text("slot")
        expect(page.locator("#ev-meta")).to_contain_text("distribution queue")
        cells = [page.locator("#shards tr").nth(i).locator("td").nth(8) for i in range(3)]
        expect(cells[0]).to_have_text("notepad-7 (45 s)")
        expect(cells[1]).to_have_text(XSS)  # shown as text, never markup
        expect(cells[2]).to_have_text("-")
        assert page.evaluate("() => window.pwned") is None
        assert page.locator("#shards img, #shards script").count() == 0
    finally:
        page.close()
