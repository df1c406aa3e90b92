"""Composition root: create the Durable Functions app and register every blueprint; switch on
telemetry when APPLICATIONINSIGHTS_CONNECTION_STRING is set (a no-op otherwise)."""

import azure.durable_functions as df

from activities import attempts, evaluations
from adapters.telemetry import configure_telemetry
from orchestrations import evaluation, shard, worker
from triggers import aml_events, dashboard, heartbeats, http_api, openapi, sweeper

configure_telemetry()  # where the Functions OpenTelemetry how-to configures it: app import
app = df.DFApp()
for module in (
    evaluation,
    shard,
    worker,
    attempts,
    evaluations,
    http_api,
    heartbeats,
    aml_events,
    sweeper,
):
    app.register_functions(module.bp)
app.register_functions(dashboard.bp)  # GET /api/dashboard: the page, served by the app
app.register_functions(openapi.bp)  # GET /api/openapi.json
