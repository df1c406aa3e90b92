from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.core.pipeline.transport import RequestsTransport

from tests.fakes.azureml_server import FakeAzureML
from tests.fakes.batch_server import FakeBatch


@pytest.fixture
def aml() -> Iterator[FakeAzureML]:
    with FakeAzureML() as fake:
        yield fake


@pytest.fixture
def batch() -> Iterator[FakeBatch]:
    with FakeBatch() as fake:
        yield fake


@pytest.fixture
def sdk_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every back-off the SDK retry policies would sleep, recorded instead of slept."""
    sleeps: list[float] = []
    monkeypatch.setattr(RequestsTransport, "sleep", lambda self, seconds: sleeps.append(seconds))
    return sleeps
