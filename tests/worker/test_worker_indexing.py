"""The app as the real Python worker loads it: its init request indexes `function_app.py`.

Runs `azure_functions_runtime.handle_event.worker_init_request` and `functions_metadata_request`
in a fresh interpreter, with the script root as the working directory and first on `sys.path`,
as the worker process does. A function the worker rejects fails the whole metadata response,
and then the host loads no function at all, so any rejection fails this test with the
function's name and the worker's message.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Prints {"status": ..., "error": ..., "functions": [...]} for the app in sys.argv[1].
_WORKER_INIT = """
import asyncio, json, sys
from types import SimpleNamespace

sys.path.insert(0, sys.argv[1])
from azure_functions_runtime import handle_event
from devhost import protos


async def main():
    init = SimpleNamespace(
        request=SimpleNamespace(
            worker_init_request=SimpleNamespace(capabilities={}, function_app_directory=sys.argv[1])
        ),
        properties={"host": "127.0.0.1", "protos": protos},
    )
    response = await handle_event.worker_init_request(init)
    if response.result.status != protos.StatusResult.Success:
        return {"status": "Failure", "error": response.result.exception.message, "functions": []}
    metadata = await handle_event.functions_metadata_request(SimpleNamespace())
    names = sorted(m.name for m in metadata.function_metadata_results or [])
    return {"status": "Success", "error": None, "functions": names}


print(json.dumps(asyncio.run(main())))
"""


def _index_as_the_worker(app_dir: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _WORKER_INIT, str(app_dir)],
        cwd=app_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_worker_indexes_every_function_of_the_app() -> None:
    result = _index_as_the_worker(ROOT)
    assert result["status"] == "Success", f"the Python worker rejects the app: {result['error']}"
    assert set(result["functions"]) >= {
        "evaluation",
        "shard",
        "prepare_attempt",
        "submit_job",
        "finish_attempt",
        "close_shard",
        "finalize_evaluation",
        "start_evaluation",
        "get_evaluation",
        "heartbeat",
        "aml_job_events",
        "stuck_job_sweeper",
    }


def test_a_rejected_annotation_fails_with_the_function_and_the_workers_message(
    tmp_path: Path,
) -> None:
    # The regression this guards against: one `dict[str, Any]` activity annotation and Azure
    # loads no function of the app.
    app_dir = tmp_path / "app"
    shutil.copytree(
        ROOT,
        app_dir,
        ignore=shutil.ignore_patterns(".git", ".venv", "node_modules", "tests", ".azurite", ".*"),
    )
    attempts = app_dir / "activities" / "attempts.py"
    source = attempts.read_text(encoding="utf-8")
    broken = source.replace(
        "def submit_job(payload: dict)", "def submit_job(payload: dict[str, Any])"
    )
    assert broken != source, "submit_job's signature moved; update this test"
    attempts.write_text(broken, encoding="utf-8")

    result = _index_as_the_worker(app_dir)

    assert result["status"] == "Failure"
    assert "cannot load the submit_job function" in str(result["error"])
    assert "invalid non-type annotation dict[str, typing.Any]" in str(result["error"])


def test_the_pinned_worker_library_is_what_runs_and_compiles_on_this_python() -> None:
    # It declares Python >= 3.13 and is installed on 3.11 deliberately (requirements-worker.txt):
    # every module of it must at least compile here, not only the ones the tests reach.
    import importlib.metadata

    import azure_functions_runtime

    pins = dict(
        line.split("==")
        for line in (ROOT / "requirements-worker.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert importlib.metadata.version("azure-functions-runtime") == pins["azure-functions-runtime"]
    package = Path(azure_functions_runtime.__file__).parent
    sources = sorted(package.rglob("*.py"))
    assert len(sources) > 20
    for source in sources:
        compile(source.read_text(encoding="utf-8"), str(source), "exec")
