"""Fixtures of the dashboard's browser tests: Debian's chromium driven by Playwright (sync API),
the page served by the devhost during a simulated evaluation, screenshots kept for a person.

Chromium is Debian's (`make test-setup` installs it), launched by path: Playwright's own
browser downloads (`playwright install`) are never used. Screenshots go to $DASHBOARD_SCREENSHOTS
when it is set, else to a folder under pytest's temporary directory (its path is printed).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from devhost.simulation import Simulation
from tests.e2e.conftest import make_simulation  # noqa: F401  (the whole simulated deployment)

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.skip(
            f"Debian's chromium is not installed ({CHROMIUM}): `make test-setup` installs it"
        )
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("DASHBOARD_SCREENSHOTS")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("dashboard-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"dashboard screenshots: {folder}")
    return folder


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page; a script error or a CSP violation on it fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(f"console: {message.text}")

    opened.on("console", console)
    opened.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    try:
        yield opened
    finally:
        context.close()
    assert not problems, problems


class Gate:
    """Holds virtual time still while the test looks at the page.

    `hold` runs as a VirtualWatch action, inside a callback of the devhost's virtual clock, so
    no time passes until the test (on its own thread, where Playwright lives) calls `release`;
    the app keeps answering HTTP requests meanwhile, so the page sees the world frozen at the
    moment the watched condition held.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.reached = threading.Event()
        self.released = threading.Event()

    def hold(self) -> None:
        self.reached.set()
        self.released.wait(60)

    def wait(self, timeout: float = 60) -> None:
        assert self.reached.wait(timeout), f"the simulated evaluation never reached {self.name}"

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def gates(make_simulation: Callable[..., Simulation]) -> Iterator[Callable[[str], Gate]]:  # noqa: F811
    # Depends on make_simulation so that the gates open before any simulation stops.
    made: list[Gate] = []

    def make(name: str) -> Gate:
        made.append(Gate(name))
        return made[-1]

    yield make
    for gate in made:  # a failed test never leaves the devhost's clock held
        gate.release()
