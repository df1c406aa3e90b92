"""Telemetry switched on as in Azure: the real Azure Monitor distro, exporting to a local
stand-in for the Application Insights ingestion endpoint.

Each case runs in a fresh interpreter (OpenTelemetry's global providers can be set once per
process, and the distro instruments libraries globally). The ingestion and live-metrics
endpoints of the connection string point at a loopback HTTP server that keeps what it is sent;
an audit hook in the child refuses, and reports, any connection or name lookup beyond loopback,
so the test also proves that nothing tries to reach the internet.

- "worker": the real worker's init request (`azure_functions_runtime.handle_event`) with
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true configures the distro before it indexes the
  app; the app then configures nothing again, and the worker declares WorkerOpenTelemetryEnabled.
- "app": without that setting the app configures the distro itself when function_app is
  imported, once, however often configure_telemetry is called.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from adapters import telemetry
from domain.messages import heartbeat_token
from domain.naming import job_name

ROOT = Path(__file__).resolve().parents[2]
SECRET = "telemetry-subprocess-heartbeat-secret"
JOB = job_name("ev7", 4, 2)

_CHILD = r"""
import asyncio, json, logging, sys
from types import SimpleNamespace

blocked = []
LOOPBACK = {"127.0.0.1", "::1", "localhost", None, b"127.0.0.1", b"localhost"}


def _audit(event, args):
    if event == "socket.getaddrinfo" and args[0] not in LOOPBACK:
        blocked.append(f"lookup {args[0]!r}")
        raise OSError("telemetry test: no name lookups beyond loopback")
    if event == "socket.connect" and isinstance(args[1], tuple) and args[1][0] not in LOOPBACK:
        blocked.append(f"connect {args[1]!r}")
        raise OSError("telemetry test: no connections beyond loopback")


sys.addaudithook(_audit)
# The worker logs at INFO once it talks to the host (azure_functions_worker/dispatcher.py).
logging.getLogger().setLevel(logging.INFO)
root_dir, mode, secret, job = sys.argv[1:5]
sys.path.insert(0, root_dir)
capabilities = {}
if mode == "worker":
    from azure_functions_runtime import handle_event
    from devhost import protos

    init = SimpleNamespace(
        request=SimpleNamespace(
            worker_init_request=SimpleNamespace(capabilities={}, function_app_directory=root_dir)
        ),
        properties={"host": "127.0.0.1", "protos": protos},
    )
    response = asyncio.run(handle_event.worker_init_request(init))
    assert response.result.status == protos.StatusResult.Success, response.result.exception
    capabilities = dict(response.capabilities)
else:
    import function_app  # noqa: F401  (configures telemetry at import)

from opentelemetry import _logs, metrics, trace
from opentelemetry.instrumentation.logging.handler import LoggingHandler

from adapters import telemetry
from adapters.logs import ids
from domain.jobs import Tier
from domain.messages import heartbeat_token
from tests.simulated.support import make_cloud, spec

modes = [telemetry.configure_telemetry(), telemetry.configure_telemetry()]

logging.getLogger("activities.attempts").info(
    "job submitted (created=%s)", True, **ids(evaluation_id="ev7", shard=4, attempt=2, job_name=job)
)
cloud, _, _ = make_cloud()
backend = telemetry.traced(cloud.backend(Tier.AZURE_ML))
s = spec(job, shard=4, attempt=2, evaluation_id="ev7").model_copy(
    update={"heartbeat_token": heartbeat_token(secret, job)}
)
backend.submit(s)
backend.cancel(job)
telemetry.job_started("azureml")
telemetry.job_cost(
    {"cost_usd": 0.25, "tier": "azureml", "vm_size": "Standard_D4s_v5", "spot": False}
)

providers = trace.get_tracer_provider(), _logs.get_logger_provider(), metrics.get_meter_provider()
for provider in providers:
    provider.force_flush()
result = {
    "modes": modes,
    "capabilities": capabilities,
    "otel_handlers": sum(isinstance(h, LoggingHandler) for h in logging.getLogger().handlers),
    "blocked": blocked,
}
print(json.dumps(result))
"""


class _Ingestion(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[str, bytes]] = []

    def envelopes(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for path, body in self.received:
            if path.startswith("/v2.1/track"):
                out.extend(json.loads(body))
        return out


class _Handler(BaseHTTPRequestHandler):
    server: _Ingestion

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.received.append((self.path, body))
        items = len(json.loads(body)) if self.path.startswith("/v2.1/track") else 0
        answer = json.dumps({"itemsReceived": items, "itemsAccepted": items, "errors": []})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def ingestion() -> Iterator[_Ingestion]:
    server = _Ingestion()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _run(mode: str, ingestion: _Ingestion, tmp_path: Path) -> tuple[dict[str, Any], str]:
    endpoint = f"http://127.0.0.1:{ingestion.server_address[1]}/"
    connection = (
        f"InstrumentationKey={uuid.uuid4()};IngestionEndpoint={endpoint};LiveEndpoint={endpoint}"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APPLICATIONINSIGHTS_", "PYTHON_", "OTEL_"))
    }
    env.update(
        {
            telemetry.CONNECTION_STRING: connection,
            # The exporter's own telemetry about itself goes to Microsoft's endpoints, not the
            # connection string's: off here (it stays on in Azure).
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
            "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
            "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
            # The distro's default samples 5 traces a second; this test wants every span.
            "OTEL_TRACES_SAMPLER": "always_on",
            "HEARTBEAT_SECRET": SECRET,
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "TMPDIR": str(tmp_path),  # the exporter's retry storage
        }
    )
    if mode == "worker":
        env[telemetry.WORKER_CONFIGURES] = "true"
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT), mode, SECRET, JOB],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), connection


def _check_exported(ingestion: _Ingestion, connection: str) -> None:
    envelopes = ingestion.envelopes()
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in envelopes:
        by_type.setdefault(e["data"]["baseType"], []).append(e["data"]["baseData"])

    ids = {"evaluation_id": "ev7", "shard": "4", "attempt": "2", "job_name": JOB}
    (message,) = [m for m in by_type["MessageData"] if m["message"].startswith("job submitted")]
    assert {k: str(v) for k, v in message["properties"].items() if k in ids} == ids
    spans = {d["name"]: d for d in by_type["RemoteDependencyData"]}
    for name in ("compute.submit", "compute.cancel"):
        props = spans[name]["properties"]
        assert {k: str(v) for k, v in props.items() if k in ids} == ids
        assert props["tier"] == "azureml"
    metric_names = {m["name"] for d in by_type["MetricData"] for m in d["metrics"]}
    assert {"waa.jobs.started", "waa.jobs.cost"} <= metric_names

    # What left the process carries no secret: the heartbeat secret, the job's bearer token,
    # the connection string (each envelope names its resource by instrumentation key only).
    sent = "\n".join(body.decode("utf-8", "replace") for _, body in ingestion.received)
    assert SECRET not in sent
    assert heartbeat_token(SECRET, JOB) not in sent
    assert connection not in sent and "IngestionEndpoint" not in sent


def test_the_worker_configures_azure_monitor_and_the_app_adds_nothing(
    ingestion: _Ingestion, tmp_path: Path
) -> None:
    result, connection = _run("worker", ingestion, tmp_path)
    assert result["blocked"] == []
    assert result["modes"] == [telemetry.BY_WORKER, telemetry.BY_WORKER]
    # The host then stops forwarding the worker's logs itself: nothing arrives twice.
    assert result["capabilities"].get("WorkerOpenTelemetryEnabled") == "true"
    assert result["otel_handlers"] == 1
    _check_exported(ingestion, connection)


def test_without_the_worker_setting_the_app_configures_azure_monitor_once(
    ingestion: _Ingestion, tmp_path: Path
) -> None:
    result, connection = _run("app", ingestion, tmp_path)
    assert result["blocked"] == []
    assert result["modes"] == [telemetry.BY_APP, telemetry.BY_APP]
    assert result["otel_handlers"] == 1
    _check_exported(ingestion, connection)


def test_without_a_connection_string_nothing_is_configured() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    import function_app  # noqa: F401  (the composition root calls configure_telemetry)

    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" not in os.environ
    assert telemetry.configure_telemetry() == telemetry.OFF
    assert telemetry.configure_telemetry({"APPLICATIONINSIGHTS_CONNECTION_STRING": " "}) == "off"
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
