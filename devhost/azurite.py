"""Start Azurite (the pinned npm install) on free loopback ports, for tests and the demo."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"
# The well-known Azurite development account key (public, documented by Microsoft).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Azurite:
    blob_port: int
    queue_port: int
    table_port: int
    process: subprocess.Popen[bytes] | None = None
    location: str | None = None

    @property
    def connection_string(self) -> str:
        base = "http://127.0.0.1"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint={base}:{self.blob_port}/{DEV_ACCOUNT};"
            f"QueueEndpoint={base}:{self.queue_port}/{DEV_ACCOUNT};"
            f"TableEndpoint={base}:{self.table_port}/{DEV_ACCOUNT};"
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None
        if self.location:
            shutil.rmtree(self.location, ignore_errors=True)


def start_azurite() -> Azurite:
    """Use AZURITE_TABLE_PORT if something already answers there, else start our own."""
    given = os.environ.get("AZURITE_TABLE_PORT")
    if given and _answers(int(given)):
        t = int(given)
        return Azurite(blob_port=t - 2, queue_port=t - 1, table_port=t)
    if not AZURITE_BIN.exists():
        raise RuntimeError(
            f"Azurite is not installed at {AZURITE_BIN}: run `npm ci` (or make test)"
        )
    location = tempfile.mkdtemp(prefix="azurite-test-")
    az = Azurite(free_port(), free_port(), free_port(), location=location)
    log = open(Path(location) / "azurite.log", "wb")  # noqa: SIM115 - lives as long as the process
    az.process = subprocess.Popen(
        [
            str(AZURITE_BIN),
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--inMemoryPersistence",
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(az.blob_port),
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            str(az.queue_port),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(az.table_port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if az.process.poll() is not None:
            raise RuntimeError(f"Azurite exited: {(Path(location) / 'azurite.log').read_text()}")
        if _answers(az.table_port) and _answers(az.blob_port) and _answers(az.queue_port):
            return az
        time.sleep(0.1)
    az.stop()
    raise RuntimeError("Azurite did not answer within 30 s")
