"""One `table` fixture, two backends: the in-memory fake and a fresh table on Azurite.

Every test that takes `table` (or `store`, built on it) runs on both, so whatever the fake
answers is checked against what the real client gets back from Azurite. The Azurite case
carries the `azurite` mark: `-m "not azurite"` keeps only the fast, in-memory half.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import cast

import pytest
from azure.data.tables import TableClient, TableServiceClient

from adapters.state.table_store import StateStore
from tests.fakes.memory_tables import MemoryTableClient

MEMORY = "memory"
AZURITE = "azurite"


@pytest.fixture(params=[MEMORY, pytest.param(AZURITE, marks=pytest.mark.azurite)])
def table(request: pytest.FixtureRequest) -> Iterator[TableClient]:
    if request.param == MEMORY:
        yield cast(TableClient, MemoryTableClient())
        return
    # Only an Azurite case starts the session's Azurite.
    connection_string = request.getfixturevalue("azurite_connection_string")
    service = TableServiceClient.from_connection_string(connection_string)
    name = f"t{uuid.uuid4().hex[:20]}"
    client = service.create_table(name)
    try:
        yield client
    finally:
        service.delete_table(name)
        client.close()
        service.close()


@pytest.fixture
def store(table: TableClient) -> StateStore:
    return StateStore(table)
