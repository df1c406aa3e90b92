from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests
from tests.support.azurite import Azurite, start_azurite

ROOT = Path(__file__).resolve().parents[1]

# azure-functions-durable ships a top-level `tests` package into site-packages; make sure the
# project's own tests/ is the one imported (pyproject puts the project root first on sys.path).
assert Path(tests.__file__).resolve().parent == ROOT / "tests", (
    f"`tests` resolves to {tests.__file__}, not the project's tests/ package"
)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    az = start_azurite()
    try:
        yield az
    finally:
        az.stop()


@pytest.fixture(scope="session")
def azurite_connection_string(azurite: Azurite) -> str:
    return azurite.connection_string


@pytest.fixture(autouse=True)
def _no_real_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    # Belt and braces: nothing in a test may reach the internet or a real Azure endpoint.
    monkeypatch.setenv("AZURE_IDENTITY_DISABLE_MULTITENANTAUTH", "1")
    os.environ.pop("MSI_ENDPOINT", None)
    # A developer's shell may carry a real Application Insights connection string: importing
    # the app would then configure the real exporter and send telemetry to Azure.
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", raising=False)
