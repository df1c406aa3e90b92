"""The published app is what we tested: built from .funcignore as the deploy tools build it, it
holds the app and nothing else, and the app imports from it alone.

The package folder is made the way `func azure functionapp publish` and `azd deploy` make their
zip (tests/deploy/funcignore.py: both tools' readings of .funcignore, which must agree), then a
fresh interpreter imports the app from it with no access to the project: `python -I -S` (no
current directory, no user or site directories on sys.path) with sys.path set to the package
folder and the venv's site-packages only, cwd the package folder, as the Functions host starts
the worker in the app's root with the remote build's packages on the path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.funcignore import (
    core_tools_accepts,
    core_tools_files,
    gitignore_files,
    parse_gitignore,
)

ROOT = Path(__file__).resolve().parents[2]
FUNCIGNORE = (ROOT / ".funcignore").read_text(encoding="utf-8")
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])

# What the app needs at run time, and nothing more: function_app.py imports activities,
# orchestrations and triggers, which import adapters and domain (domain/data holds the price
# and task-set files); the SSH tier uploads shard_runner/runner.py to its VMs (the other tiers'
# image carries its own copy); requirements.txt names constraints.txt with "-c"; the dashboard
# page's files (dashboard/) are read and served by triggers/dashboard.py.
EXPECTED_TOP_LEVEL = {
    "function_app.py",
    "host.json",
    "requirements.txt",
    "constraints.txt",
    "activities",
    "adapters",
    "domain",
    "orchestrations",
    "triggers",
    "shard_runner",
    "dashboard",
}
NEVER_PUBLISHED = {
    "tests",
    "devhost",
    "benchmarks",
    "docs",
    "scripts",
    "infra",
    "node_modules",
    ".venv",
    ".git",
    ".azurite",
    ".devhost",
    "local.settings.json",
    "local.settings.sample.json",
    "requirements-dev.txt",
    "requirements-worker.txt",
    # The command-line client: installed on people's machines, never part of the app.
    "requirements-cli.txt",
    "waa_cli",
}


def published_files() -> set[str]:
    by_azd = gitignore_files(ROOT, FUNCIGNORE)
    by_core_tools = core_tools_files(ROOT, FUNCIGNORE)
    assert by_azd == by_core_tools, (
        "azd and Core Tools would publish different files: "
        f"only azd {sorted(by_azd - by_core_tools)[:10]}, "
        f"only Core Tools {sorted(by_core_tools - by_azd)[:10]}"
    )
    return by_azd


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("package") / "app"
    for rel in sorted(published_files()):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    return dest


def test_both_tools_publish_the_app_and_nothing_else(package: Path) -> None:
    top = {p.name for p in package.iterdir()}
    assert top == EXPECTED_TOP_LEVEL, (
        f"unexpected in the package: {sorted(top - EXPECTED_TOP_LEVEL)}; "
        f"missing: {sorted(EXPECTED_TOP_LEVEL - top)} (a new top-level file or folder needs a "
        ".funcignore line or a place in EXPECTED_TOP_LEVEL)"
    )
    assert not top & NEVER_PUBLISHED
    every = [p.relative_to(package).as_posix() for p in package.rglob("*")]
    assert not [p for p in every if "__pycache__" in p or p.endswith(".pyc")]
    assert (package / "domain" / "data" / "vm_prices.json").is_file()
    assert (package / "domain" / "data" / "waa_tasks.json").is_file()
    assert (package / "shard_runner" / "runner.py").is_file()
    for asset in ("index.html", "app.js", "app.css"):
        assert (package / "dashboard" / asset).is_file(), asset


# The one-liner run by a fresh interpreter inside the package folder: index the app as the worker
# does, import every module of the app's packages (some are imported lazily, per tier), read the
# data files, and report every module loaded with the file it came from.
PROBE = r"""
import importlib, json, pkgutil, sys
sys.path[:] = [sys.argv[1], sys.argv[2]] + [p for p in sys.path if "site-packages" not in p]
import function_app
names = sorted(f.get_function_name() for f in function_app.app.get_functions())
for pkg in ("activities", "adapters", "domain", "orchestrations", "triggers", "shard_runner"):
    module = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(module.__path__, pkg + "."):
        if not info.name.endswith(".__main__"):  # a program, run in the job, not imported
            importlib.import_module(info.name)
from domain import cost, tasksets
from adapters.compute import ssh_vm
assert ssh_vm.RUNNER_FILE.is_file(), ssh_vm.RUNNER_FILE
from triggers import dashboard
assert dashboard.page()[0].startswith(b"<!doctype html>")
loaded = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
print(json.dumps({"functions": names, "modules": loaded, "path": sys.path}))
"""


@pytest.fixture(scope="module")
def probe(package: Path) -> dict[str, object]:
    # No app settings and no Application Insights: importing the app must need neither.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(package), "LANG": "C.UTF-8"}
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE, str(package), str(SITE_PACKAGES)],
        cwd=package,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"the app does not import from its package:\n{done.stderr}"
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_app_indexes_from_the_package_alone(package: Path, probe: dict[str, object]) -> None:
    functions = probe["functions"]
    assert isinstance(functions, list) and "aml_job_events" in functions and len(functions) >= 10
    assert str(ROOT) not in probe["path"]  # type: ignore[operator]
    modules = probe["modules"]
    assert isinstance(modules, dict)
    stdlib = {Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "platstdlib")}
    allowed = [package.resolve(), SITE_PACKAGES.resolve(), *stdlib]
    for name, file in modules.items():
        if file is None:
            continue  # built-in, frozen or a namespace package
        path = Path(file).resolve()
        # The project's own folders are none of these (the package is a copy elsewhere).
        assert any(path.is_relative_to(a) for a in allowed), f"{name} loaded from {path}"


def _installed_by_requirements() -> set[str]:
    """The distributions `pip install -r requirements.txt` brings: its requirements and their
    dependencies (no extras), as installed here."""
    env = {**default_environment(), "extra": ""}
    todo = [
        Requirement(line).name
        for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith(("#", "-"))
    ]
    seen: set[str] = set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for spec in metadata.distribution(name).requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    return seen


def test_every_third_party_module_the_app_loads_is_installed_by_requirements(
    probe: dict[str, object],
) -> None:
    # A module the app imports from a development-only package (pytest, rich, requests when no
    # runtime dependency brings it, azure-functions-runtime) would be missing in Azure.
    owner: dict[Path, str] = {}
    for dist in metadata.distributions():
        for file in dist.files or []:
            owner[Path(dist.locate_file(file)).resolve()] = canonicalize_name(dist.metadata["Name"])
    modules = probe["modules"]
    assert isinstance(modules, dict)
    used = {
        owner[Path(file).resolve()]
        for file in modules.values()
        if file
        and Path(file).resolve().is_relative_to(SITE_PACKAGES.resolve())
        and Path(file).resolve() in owner
    }
    missing = used - _installed_by_requirements()
    assert not missing, f"the app imports packages requirements.txt does not install: {missing}"


# ------------------------------------------------------------------------- the two readings
@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "ignored"),
    [
        ("__pycache__", "adapters/compute/__pycache__", True, True),  # any depth
        ("/tests", "tests", True, True),
        ("/tests", "adapters/tests", True, False),  # anchored
        ("docs/", "docs", False, False),  # directories only
        ("*.pyc", "a/b.pyc", False, True),
        ("a/*.py", "a/b/c.py", False, False),  # '*' stays in its segment
        ("a/**/c.py", "a/c.py", False, True),
        ("a/**/c.py", "a/x/y/c.py", False, True),
        ("**/cache", "x/cache", True, True),
        ("data/**", "data/x/y", False, True),
        ("f[ab].txt", "fb.txt", False, True),
        ("f?.txt", "f/.txt", False, False),
    ],
)
def test_gitignore_reading(pattern: str, path: str, is_dir: bool, ignored: bool) -> None:
    rules = parse_gitignore(pattern)
    got = False
    for rule in rules:
        if (not rule.dir_only or is_dir) and rule.regex.fullmatch(path):
            got = not rule.negate
    assert got is ignored


def test_gitignore_cannot_reinclude_below_an_excluded_directory(tmp_path: Path) -> None:
    (tmp_path / "build" / "keep").mkdir(parents=True)
    (tmp_path / "build" / "keep" / "x.txt").write_text("x")
    (tmp_path / "y.txt").write_text("y")
    assert gitignore_files(tmp_path, "/build\n!/build/keep/x.txt\n") == {"y.txt"}


def test_core_tools_reading_and_its_quirks() -> None:
    accepts = core_tools_accepts("/tests\ndocs/\n__pycache__\n*.py[cod]\n!keep.txt\n")
    assert not accepts("tests/test_x.py")
    assert accepts("adapters/tests/x.py")  # anchored at the start, always
    assert not accepts("__pycache__/x.pyc")
    assert accepts("adapters/__pycache__/x.pyc")  # why .funcignore adds "**/__pycache__"
    assert not accepts("docs/azure-setup.md")
    assert accepts("docs/.hidden")  # "docs/" then \b fails before '.': why no trailing '/'
    assert accepts("x.pyc")  # '[cod]' is literal for Core Tools
    assert accepts("keep.txt")
    assert not core_tools_accepts("**/__pycache__")("adapters/__pycache__/x.pyc")
