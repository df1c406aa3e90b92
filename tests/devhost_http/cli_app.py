"""A small app for the CLI test: `python -m devhost serve --app tests.devhost_http.cli_app:app`."""

from __future__ import annotations

import os

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="whoami", methods=["GET"])
def whoami(req: func.HttpRequest) -> func.HttpResponse:
    # Shows which settings the served process sees (the CLI test checks the settings file).
    return func.HttpResponse(
        f"{os.environ.get('CLI_TEST_SETTING')} {os.environ.get('PUBLIC_BASE_URL')}"
    )


@app.event_grid_trigger(arg_name="event")
def on_event(event: func.EventGridEvent) -> None:
    return None


@app.timer_trigger(schedule="%CLI_TEST_SCHEDULE%", arg_name="timer")
def every_minute(timer: func.TimerRequest) -> None:
    return None
