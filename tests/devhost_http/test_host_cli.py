from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import pytest
import requests

from devhost.host import DevHost, load_settings_file
from devhost.invoke import BindingError
from devhost.worker import FunctionLoadError

ROOT = Path(__file__).resolve().parents[2]


def test_settings_file_fills_the_environment_without_overriding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST_TEST_KEPT", "from-environment")
    monkeypatch.delenv("HOST_TEST_NEW", raising=False)
    settings = tmp_path / "local.settings.json"
    settings.write_text(
        json.dumps({"Values": {"HOST_TEST_KEPT": "from-file", "HOST_TEST_NEW": "from-file"}})
    )
    applied = load_settings_file(settings)
    assert applied == ["HOST_TEST_NEW"]
    assert os.environ["HOST_TEST_KEPT"] == "from-environment"
    assert os.environ["HOST_TEST_NEW"] == "from-file"
    monkeypatch.delenv("HOST_TEST_NEW")


def test_public_base_url_points_at_the_host_only_while_it_runs(
    start_host: Callable[..., DevHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    app = df.DFApp()

    @app.route(route="url", methods=["GET"])
    def url(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(os.environ["PUBLIC_BASE_URL"])

    host = start_host(app)
    assert requests.get(f"{host.base_url}/api/url", timeout=10).text == host.base_url
    host.stop()
    assert "PUBLIC_BASE_URL" not in os.environ

    monkeypatch.setenv("PUBLIC_BASE_URL", "https://example.invalid")
    other = df.DFApp()
    other.route(route="x")(lambda req: "x")
    assert start_host(other).base_url != "https://example.invalid"
    assert os.environ["PUBLIC_BASE_URL"] == "https://example.invalid"


def test_unsupported_binding_is_refused_at_start() -> None:
    app = df.DFApp()

    @app.route(route="r")
    @app.queue_output(arg_name="msg", queue_name="q", connection="AzureWebJobsStorage")
    def with_queue(req: func.HttpRequest, msg: func.Out[str]) -> str:
        return "never"

    with pytest.raises(BindingError, match="msg"):
        DevHost(app)


def test_cli_serves_the_app_and_lists_its_functions(tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps({"Values": {"CLI_TEST_SETTING": "loaded", "CLI_TEST_SCHEDULE": "0 * * * * *"}})
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PUBLIC_BASE_URL", "CLI_TEST_SETTING")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "devhost", "serve", "--port", "0", "--time-mode", "skip",
         "--settings", str(settings), "--app", "tests.devhost_http.cli_app:app"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip())
            if "Press Ctrl-C" in line:
                break
        listing = "\n".join(lines)
        match = re.search(r"whoami: \[GET\] (http://127\.0\.0\.1:\d+)/api/whoami", listing)
        assert match, listing
        base = match.group(1)
        assert (
            f"on_event: eventGridTrigger {base}/runtime/webhooks/eventgrid?functionName=on_event"
            in listing
        )
        assert "every_minute: timerTrigger (0 * * * * *)" in listing
        assert requests.get(f"{base}/api/whoami", timeout=10).text == f"loaded {base}"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_an_app_the_worker_rejects_never_starts() -> None:
    app = df.DFApp()

    @app.activity_trigger(input_name="payload")
    def bad(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    with pytest.raises(FunctionLoadError) as rejected:
        DevHost(app)
    assert str(rejected.value) == (
        "cannot load the bad function: binding payload has invalid non-type annotation "
        "dict[str, typing.Any]"
    )


def test_cli_refuses_an_app_the_worker_rejects_with_the_workers_message() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "devhost", "serve", "--port", "0",
         "--app", "tests.devhost_http.rejected_app:app"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert (
        "the Python worker rejected the app: cannot load the rejected function: binding payload "
        "has invalid non-type annotation dict[str, typing.Any]" in proc.stderr
    )
