"""`python -m devhost serve`: serve `function_app.app` on 127.0.0.1 the way `func start` does."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from adapters.logs import configure_json_logging
from devhost.host import DEFAULT_SETTINGS_FILE, DevHost, load_settings_file
from devhost.worker import FunctionLoadError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the app until Ctrl-C")
    serve.add_argument("--port", type=int, default=7071, help="TCP port on 127.0.0.1 (0: any free)")
    serve.add_argument(
        "--time-mode",
        choices=("real", "skip"),
        default="real",
        help="real: wall-clock time; skip: virtual time that jumps ahead when nothing is runnable",
    )
    serve.add_argument("--store", choices=("memory", "table"), default="memory")
    serve.add_argument(
        "--connection-string",
        default=None,
        help="Table Storage connection string for --store table (default: AzureWebJobsStorage)",
    )
    serve.add_argument(
        "--settings",
        default=None,
        help=f"local.settings.json to load (default: ./{DEFAULT_SETTINGS_FILE} when present)",
    )
    serve.add_argument(
        "--task-hub", default=None, help="default: the TASK_HUB_NAME app setting, else waaeval"
    )
    serve.add_argument(
        "--app",
        default=None,
        metavar="MODULE:ATTR",
        help="the DFApp to serve (default: function_app:app, as func start loads it)",
    )
    return parser


def serve(args: argparse.Namespace) -> int:
    if args.settings is not None and not Path(args.settings).is_file():
        print(f"settings file not found: {args.settings}", file=sys.stderr)
        return 2
    settings = args.settings or (
        DEFAULT_SETTINGS_FILE if Path(DEFAULT_SETTINGS_FILE).is_file() else None
    )
    if settings is not None:
        load_settings_file(settings)
    # host.json names the task hub through the TASK_HUB_NAME app setting.
    task_hub = args.task_hub or os.environ.get("TASK_HUB_NAME") or "waaeval"
    try:
        host = DevHost(
            args.app,
            port=args.port,
            time_mode=args.time_mode,
            store=args.store,
            connection_string=args.connection_string,
            task_hub=task_hub,
            settings_file=settings,
        )
    except FunctionLoadError as rejected:
        # What the Functions host shows when the worker fails the metadata request: no function
        # is loaded at all.
        print(f"the Python worker rejected the app: {rejected}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with host:
        print("\nFunctions:\n")
        for served in host.served_functions():
            print(f"        {served}\n")
        print(f"Durable HTTP API: {host.durable_api.webhook_url}/")
        print(
            f"Time mode: {args.time_mode}; store: {args.store}. Press Ctrl-C to stop.", flush=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    # Structured logs, one JSON object a line, with the evaluation/shard/attempt/job ids the
    # app attaches (what Application Insights shows as custom dimensions in Azure).
    configure_json_logging(logging.StreamHandler())
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
