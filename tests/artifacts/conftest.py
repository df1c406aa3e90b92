from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.storage.blob import BlobServiceClient

from tests.e2e.conftest import make_simulation  # noqa: F401  (the whole simulated deployment)


@pytest.fixture
def blob_service(azurite_connection_string: str) -> Iterator[BlobServiceClient]:
    service = BlobServiceClient.from_connection_string(azurite_connection_string)
    yield service
    service.close()
