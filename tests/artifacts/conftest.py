from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from devhost.simulation import Simulation


@pytest.fixture
def make_simulation(azurite_connection_string: str) -> Iterator[Callable[..., Simulation]]:
    """A whole simulated deployment (devhost + Azurite + simulated Azure), uploads on."""
    started: list[Simulation] = []

    def make(**kwargs: Any) -> Simulation:
        kwargs.setdefault("profile", "none")
        sim = Simulation(connection_string=azurite_connection_string, **kwargs).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def blob_service(azurite_connection_string: str) -> Iterator[BlobServiceClient]:
    service = BlobServiceClient.from_connection_string(azurite_connection_string)
    yield service
    service.close()
