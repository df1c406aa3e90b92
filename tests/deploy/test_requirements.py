"""requirements.txt is what Azure's remote build installs (`pip install -r requirements.txt`):
every line pins exactly what constraints.txt pins, and its `-c constraints.txt` line holds every
transitive dependency to the tested version too."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _lines(name: str) -> list[str]:
    text = (ROOT / name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def _pins(name: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in _lines(name):
        if line.startswith("-"):
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{name}: {line!r} is not pinned =="
        assert not req.extras and req.marker is None, f"{name}: {line!r} has extras or a marker"
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def test_every_requirement_is_pinned_to_the_constraints_version() -> None:
    required, constrained = _pins("requirements.txt"), _pins("constraints.txt")
    assert required
    differ = {
        name: (version, constrained.get(name))
        for name, version in required.items()
        if constrained.get(name) != version
    }
    assert not differ, (
        f"requirements.txt vs constraints.txt (name: (required, constrained)): {differ}"
    )


def test_the_remote_build_is_held_to_constraints_for_every_dependency() -> None:
    assert "-c constraints.txt" in _lines("requirements.txt")
    constrained = _pins("constraints.txt")
    env = {**default_environment(), "extra": ""}
    todo = list(_pins("requirements.txt"))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        installed = metadata.version(name)
        assert constrained.get(name) == installed, (
            f"{name} {installed} is installed for requirements.txt but constraints.txt pins "
            f"{constrained.get(name)}"
        )
        for spec in metadata.distribution(name).requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(canonicalize_name(req.name))


def test_pip_reads_the_file_as_the_remote_build_does_and_finds_it_satisfied() -> None:
    # --no-index: nothing is downloaded; pip parses the file (the -c line included) and resolves
    # it against this environment, which is what the tests ran on.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-index",
            "--disable-pip-version-check",
            "-r",
            str(ROOT / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Would install" not in done.stdout, done.stdout
