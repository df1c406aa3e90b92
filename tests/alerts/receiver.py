"""A loopback incoming-webhook receiver: records every JSON body; can refuse the first N."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    def __init__(self, *, fail_first: int = 0, status: int = 503) -> None:
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        self._fail_first = fail_first
        self._status = status
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    if receiver.refused < receiver._fail_first:
                        receiver.refused += 1
                        code = receiver._status
                    else:
                        receiver.received.append(json.loads(body))
                        code = 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/services/T000/B000/secret-path-of-the-hook"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def texts(self) -> list[str]:
        with self._lock:
            return [str(b["text"]) for b in self.received]

    def wait_for(self, *needles: str, timeout: float = 60.0) -> list[str]:
        """Wait until a received text contains each needle; a safety net, not a timing."""
        deadline = time.monotonic() + timeout
        while True:
            texts = self.texts()
            if all(any(n in t for t in texts) for n in needles):
                return texts
            if time.monotonic() > deadline:
                raise AssertionError(f"webhook never got {needles}; got {texts}")
            time.sleep(0.05)
