"""Composition root: create the Durable Functions app and register every blueprint. Nothing else."""

import azure.durable_functions as df

from activities import attempts, evaluations
from orchestrations import evaluation, shard
from triggers import aml_events, heartbeats, http_api, sweeper

app = df.DFApp()
for module in (evaluation, shard, attempts, evaluations, http_api, heartbeats, aml_events, sweeper):
    app.register_functions(module.bp)
