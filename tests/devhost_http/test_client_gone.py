"""A client that goes away mid-response (a browser closing the dashboard while a poll is being
answered) is an ordinary event for the devhost's server, not an error with a traceback; any
other failure while serving still is one."""

from __future__ import annotations

import pytest

from devhost.server import DevHostServer


@pytest.mark.parametrize("gone", [BrokenPipeError, ConnectionResetError, ConnectionAbortedError])
def test_a_client_gone_mid_response_prints_nothing(
    gone: type[ConnectionError], capsys: pytest.CaptureFixture[str]
) -> None:
    server = DevHostServer()
    try:
        try:
            raise gone()
        except ConnectionError:
            server._server.handle_error(None, ("127.0.0.1", 50000))
    finally:
        server.stop()
    assert capsys.readouterr().err == ""


def test_another_failure_while_serving_is_still_reported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = DevHostServer()
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            server._server.handle_error(None, ("127.0.0.1", 50000))
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert "ValueError: boom" in err
