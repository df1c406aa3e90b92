"""OpenTelemetry's in-memory exporters wired in place of Application Insights.

The app records spans and metrics through `adapters.telemetry` (pointed at these providers with
`use_providers`) and its log records reach the same logging handler the Azure Monitor distro puts
on the root logger, here exporting to memory. Nothing global of OpenTelemetry is set, so other
tests in this process see no telemetry at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters import telemetry


@dataclass
class Exported:
    spans: InMemorySpanExporter
    logs: InMemoryLogRecordExporter
    metrics: InMemoryMetricReader

    def finished_spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if name is None or s.name == name]

    def log_records(self) -> list[ReadableLogRecord]:
        return list(self.logs.get_finished_logs())

    def counters(self) -> dict[str, list[tuple[dict[str, Any], float]]]:
        """Every metric point as (attributes, value), by metric name."""
        out: dict[str, list[tuple[dict[str, Any], float]]] = {}
        data = self.metrics.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = out.setdefault(metric.name, [])
                    for p in metric.data.data_points:
                        points.append((dict(p.attributes or {}), p.value))  # type: ignore[union-attr]
        return out

    def total(self, metric: str, **attributes: Any) -> float:
        return sum(
            value
            for attrs, value in self.counters().get(metric, [])
            if all(attrs.get(k) == v for k, v in attributes.items())
        )

    def everything(self) -> str:
        """All that would leave the process: span names, attributes, events and statuses, log
        bodies and attributes, metric points."""
        parts = [s.to_json(indent=None) for s in self.spans.get_finished_spans()]
        parts += [r.to_json(indent=None) for r in self.logs.get_finished_logs()]
        data = self.metrics.get_metrics_data()
        if data is not None:
            parts.append(data.to_json(indent=None))
        return "\n".join(parts)


@pytest.fixture
def exported() -> Iterator[Exported]:
    spans, logs, reader = (
        InMemorySpanExporter(),
        InMemoryLogRecordExporter(),
        InMemoryMetricReader(),
    )
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[reader])
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    handler = LoggingHandler(logger_provider=logger_provider)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    telemetry.use_providers(tracer_provider, meter_provider)
    try:
        yield Exported(spans, logs, reader)
    finally:
        telemetry.use_providers()
        root.removeHandler(handler)
        root.setLevel(level)
        for provider in (tracer_provider, meter_provider, logger_provider):
            provider.shutdown()


def attributes_of(record: ReadableLogRecord) -> dict[str, Any]:
    return dict(record.log_record.attributes or {})
