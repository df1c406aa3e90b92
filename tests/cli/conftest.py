from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from devhost.simulation import Simulation
from waa_cli.app import app

# Wide enough that rich never truncates an id or a column in the captured output.
WIDE = {"COLUMNS": "200", "LINES": "60", "TERM": "dumb"}


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer's ~/.config/waa-eval or WAA_EVAL_* variables leak into a test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config-home"))
    for name in ("WAA_EVAL_URL", "WAA_EVAL_KEY", "WAA_EVAL_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def sim(azurite_connection_string: str) -> Iterator[Simulation]:
    """The app on the devhost with the simulated backend and no faults, virtual time."""
    s = Simulation(
        connection_string=azurite_connection_string, profile="none", time_mode="skip"
    ).start()
    try:
        yield s
    finally:
        s.stop()


Run = Callable[..., Result]


@pytest.fixture
def cli() -> Run:
    """Run `waa-eval ARGS...` in process; stdout and stderr are kept apart."""
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), env={**WIDE, **(env or {})}, catch_exceptions=False)

    return run


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path
