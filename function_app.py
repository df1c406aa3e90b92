"""Composition root: create the Durable Functions app and register every blueprint. Nothing else."""

import azure.durable_functions as df

app = df.DFApp()
