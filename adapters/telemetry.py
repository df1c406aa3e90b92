"""Telemetry that survives Azure: OpenTelemetry logs, spans and metrics to Application Insights.

Why not plain `logging`: the Functions Python worker forwards a log record to the host as its
message, level and category only (azure-functions-python-worker,
`azure_functions_worker/dispatcher.py`, `Dispatcher.on_logging` builds `RpcLog(level, message,
category, log_category)`), so the ids our records carry as `extra=` fields (`adapters.logs.ids`)
never reach Application Insights that way. OpenTelemetry's logging handler keeps them: it copies
every non-standard attribute of a `LogRecord` into the OTel record's attributes
(opentelemetry-instrumentation-logging, `handler.py`, `LoggingHandler._get_attributes`), which
the Azure Monitor exporter writes as customDimensions.

How it is switched on (README, "Telemetry"):
- `APPLICATIONINSIGHTS_CONNECTION_STRING` set: telemetry on. Unset or empty: nothing is
  configured, no exporter exists, and the devhost's JSON log is the only output.
- `PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true` (what the official sample
  Azure-Samples/functions-quickstart-python-azd-otel sets): the worker itself calls
  `configure_azure_monitor(connection_string=..., logger_name=...)` in its init request, before
  it imports the app, tells the host `WorkerOpenTelemetryEnabled` (the host then stops
  forwarding the worker's logs, so nothing arrives twice) and attaches each invocation's trace
  context (azure-functions-runtime 1.3.0, `handle_event.worker_init_request`,
  `otel.initialize_azure_monitor`, `otel.configure_opentelemetry`). `configure_telemetry` then
  finds the SDK providers installed and configures nothing again.
- Otherwise `configure_telemetry` calls `configure_azure_monitor` itself, as the Functions
  OpenTelemetry how-to puts it in `function_app.py` (MicrosoftDocs/azure-docs,
  `articles/azure-functions/opentelemetry-howto.md`). Under the real worker, set
  `PYTHON_ENABLE_OPENTELEMETRY=true` as well so the worker declares `WorkerOpenTelemetryEnabled`
  and propagates the invocation's trace context (same `handle_event` code).

Spans: `traced(backend)` wraps a compute backend so that submit, status, cancel and
ensure_capacity are spans carrying the ids; `adapters.runtime` applies it where it picks the
backend, so every tier is covered. Metrics: a few counters, emitted where the thing is decided
or recorded. Ids go on logs and spans; metric attributes stay low-cardinality (tier, VM size),
because every attribute combination is a separate time series.

Never put a secret (token, key, connection string) in a span or metric attribute, as in logs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

from adapters.compute.base import ComputeBackend
from domain.jobs import (
    BackendError,
    CapacityReport,
    CapacitySpec,
    JobNotFoundError,
    JobSpec,
    JobStatus,
    SubmitResult,
)
from domain.naming import parse_job_name

log = logging.getLogger(__name__)

# App settings, as the worker names them (azure-functions-runtime 1.3.0, utils/constants.py).
CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
WORKER_CONFIGURES = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
LOGGER_NAME = "PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME"  # default "": the root logger

OFF, BY_WORKER, BY_APP = "off", "worker", "app"
SCOPE = "waa.control_plane"

_lock = threading.Lock()
_mode: str | None = None


def configure_telemetry(environ: Mapping[str, str] | None = None) -> str:
    """Send logs, spans and metrics to Application Insights when its connection string is set.

    Idempotent: returns "off" (no connection string; nothing configured), "worker" (the Python
    worker had already configured the OpenTelemetry SDK) or "app" (configured here, once).
    """
    global _mode
    env = os.environ if environ is None else environ
    connection = (env.get(CONNECTION_STRING) or "").strip()
    if not connection:  # an empty app setting counts as unset, as in adapters.settings
        return OFF
    with _lock:
        if _mode is not None:
            return _mode
        # The Azure SDKs log every HTTP request at INFO; through the OTel handler each would be
        # a trace row (azure-functions-python-worker issue #1342). The devhost's JSON log drops
        # them too (adapters.logs.configure_json_logging).
        logging.getLogger("azure").setLevel(logging.WARNING)
        if _sdk_configured():
            _mode = BY_WORKER
        else:
            from azure.monitor.opentelemetry import configure_azure_monitor

            # The worker names the Functions resource detector before configuring (otel.py,
            # `initialize_azure_monitor`); the distro's default list would also probe the Azure
            # VM metadata endpoint, which a function app is not.
            os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "azure_functions")
            configure_azure_monitor(
                connection_string=connection, logger_name=env.get(LOGGER_NAME, "")
            )
            _mode = BY_APP
        log.info("telemetry: OpenTelemetry to Application Insights (configured by the %s)", _mode)
        return _mode


def _sdk_configured() -> bool:
    from opentelemetry.sdk.trace import TracerProvider

    return isinstance(trace.get_tracer_provider(), TracerProvider)


# --- Instruments -------------------------------------------------------------------------------


class _Instruments:
    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
    ) -> None:
        # With no provider given these are the API's proxies, which start recording once the
        # global providers are set (by the worker or configure_telemetry), whenever that is.
        self.tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self.jobs_submitted = meter.create_counter(
            "waa.jobs.submitted", unit="{job}", description="jobs a compute backend accepted"
        )
        self.jobs_started = meter.create_counter(
            "waa.jobs.started", unit="{job}", description="jobs whose container started"
        )
        self.start_deadline_hits = meter.create_counter(
            "waa.jobs.start_deadline_hits",
            unit="{job}",
            description="attempts ended because the container did not start in time",
        )
        self.jobs_stuck = meter.create_counter(
            "waa.jobs.stuck",
            unit="{job}",
            description="started jobs cancelled by the sweeper for silence",
        )
        self.failovers = meter.create_counter(
            "waa.failovers",
            unit="{attempt}",
            description="attempts submitted to another tier than the attempt before",
        )
        self.cost = meter.create_counter(
            "waa.jobs.cost", unit="USD", description="settled cost of ended jobs"
        )


_instruments = _Instruments(None, None)


def use_providers(
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> None:
    """Record into these providers instead of the global ones (tests: in-memory exporters);
    with no arguments, back to the global providers."""
    global _instruments
    _instruments = _Instruments(tracer_provider, meter_provider)


def job_submitted(tier: str) -> None:
    _instruments.jobs_submitted.add(1, {"tier": tier})


def job_started(tier: str) -> None:
    _instruments.jobs_started.add(1, {"tier": tier})


def start_deadline_hit(tier: str) -> None:
    _instruments.start_deadline_hits.add(1, {"tier": tier})


def job_stuck(tier: str) -> None:
    _instruments.jobs_stuck.add(1, {"tier": tier})


def failover(tier: str) -> None:
    """`tier` is the tier failed over to."""
    _instruments.failovers.add(1, {"tier": tier})


def job_cost(job: Mapping[str, Any]) -> None:
    """A job row whose cost was just settled."""
    _instruments.cost.add(
        float(job["cost_usd"]),
        {"tier": str(job["tier"]), "vm_size": str(job["vm_size"]), "spot": bool(job["spot"])},
    )


# --- Spans around the compute backends ---------------------------------------------------------


def _job_attributes(job_name: str) -> dict[str, Any]:
    parsed = parse_job_name(job_name)
    if parsed is None:
        return {"job_name": job_name}
    evaluation_id, shard, attempt = parsed
    return {
        "job_name": job_name,
        "evaluation_id": evaluation_id,
        "shard": shard,
        "attempt": attempt,
    }


@contextmanager
def _span(operation: str, tier: str, attributes: Mapping[str, Any]) -> Iterator[Span]:
    # Attribute names are the log fields' (adapters.logs.FIELDS), so one customDimensions
    # query finds a job's traces and its dependency spans alike.
    with _instruments.tracer.start_as_current_span(
        f"compute.{operation}",
        attributes={"tier": tier, **attributes},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except JobNotFoundError:
            span.set_attribute("job_state", "not_found")  # an answer, not a failure
            raise
        except BackendError as err:
            span.set_attribute("failure_kind", err.kind.value)
            _failed(span, err)
            raise
        except Exception as err:
            _failed(span, err)
            raise


def _failed(span: Span, err: Exception) -> None:
    # Backend error messages never carry secrets (the ComputeBackend contract).
    span.record_exception(err)
    span.set_status(Status(StatusCode.ERROR, f"{type(err).__name__}: {err}"))


class TracedBackend:
    """A ComputeBackend whose calls are spans; everything else is the wrapped backend's."""

    def __init__(self, inner: ComputeBackend) -> None:
        self.inner = inner
        self.tier = inner.tier

    def ensure_capacity(self, spec: CapacitySpec) -> CapacityReport:
        return self._capacity("ensure_capacity", self.inner.ensure_capacity, spec)

    def capacity_status(self, spec: CapacitySpec) -> CapacityReport:
        return self._capacity("capacity_status", self.inner.capacity_status, spec)

    def _capacity(
        self, operation: str, call: Callable[[CapacitySpec], CapacityReport], spec: CapacitySpec
    ) -> CapacityReport:
        with _span(operation, self.tier.value, {"evaluation_id": spec.evaluation_id}) as span:
            report = call(spec)
            span.set_attribute("ready", report.ready)
            return report

    def submit(self, spec: JobSpec) -> SubmitResult:
        # Only the ids: the spec also holds the job's heartbeat token.
        ids = {
            "job_name": spec.job_name,
            "evaluation_id": spec.evaluation_id,
            "shard": spec.shard_index,
            "attempt": spec.attempt,
        }
        with _span("submit", self.tier.value, ids) as span:
            result = self.inner.submit(spec)
            span.set_attributes(
                {"backend_job_id": result.backend_job_id, "created": result.created}
            )
            return result

    def status(self, job_name: str) -> JobStatus:
        with _span("status", self.tier.value, _job_attributes(job_name)) as span:
            seen = self.inner.status(job_name)
            span.set_attribute("job_state", seen.state.value)
            return seen

    def cancel(self, job_name: str) -> None:
        with _span("cancel", self.tier.value, _job_attributes(job_name)):
            self.inner.cancel(job_name)

    def __getattr__(self, name: str) -> Any:
        # Methods a backend has beyond the protocol pass through untraced.
        if name == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def traced(backend: ComputeBackend) -> ComputeBackend:
    return backend if isinstance(backend, TracedBackend) else TracedBackend(backend)
