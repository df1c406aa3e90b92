"""The client is a console script of the project, with its own pinned dependencies that stay
out of the function app's requirements.txt."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from waa_cli import app as cli_app

ROOT = Path(__file__).resolve().parents[2]


def _pins(lines: list[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", line
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def _file(name: str) -> dict[str, str]:
    return _pins((ROOT / name).read_text(encoding="utf-8").splitlines())


def test_the_console_script_is_waa_eval() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"] == {"waa-eval": "waa_cli.app:main"}
    assert callable(cli_app.main)
    assert project["tool"]["setuptools"]["packages"] == ["waa_cli"]


def test_the_client_dependencies_are_pinned_alike_and_not_in_the_app() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = _pins(project["project"]["dependencies"])
    cli_pins = _file("requirements-cli.txt")
    constrained = _file("constraints.txt")
    assert declared == cli_pins
    assert {n: constrained.get(n) for n in cli_pins} == cli_pins
    app_pins = _file("requirements.txt")
    assert not {"typer", "httpx"} & set(app_pins)
    assert "-r requirements-cli.txt" in (ROOT / "requirements-dev.txt").read_text("utf-8")


def test_the_client_imports_nothing_from_the_app() -> None:
    # It is installed on people's machines without the app's packages.
    for path in (ROOT / "waa_cli").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        for package in ("domain", "adapters", "triggers", "devhost", "activities"):
            assert f"from {package}" not in text and f"import {package}" not in text, path


def test_python_m_waa_cli_runs_the_same_command() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "waa_cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for command in ("start", "watch", "status", "list", "cancel", "retry", "results", "artifacts"):
        assert command in done.stdout
