from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devhost.host import DevHost


@pytest.fixture
def start_host() -> Iterator[Callable[..., DevHost]]:
    """Start a DevHost (virtual time, memory store) on a free port; stopped after the test."""
    hosts: list[DevHost] = []

    def start(app: Any, **kwargs: Any) -> DevHost:
        host = DevHost(app, port=0, **kwargs)
        hosts.append(host)
        return host.start()

    yield start
    for host in reversed(hosts):
        host.stop()
