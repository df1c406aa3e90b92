from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sshd import Sshd, SshdUnavailable, start_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd"))
    except SshdUnavailable as err:
        pytest.skip(str(err))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def vm_sshd(sshd: Sshd) -> Iterator[Sshd]:
    """The module's sshd with a clean stand-in Docker (no containers, no recorded calls)."""
    shutil.rmtree(sshd.docker_state)
    Path(sshd.docker_state).mkdir()
    yield sshd
