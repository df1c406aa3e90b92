from __future__ import annotations

import pytest

from domain.outcomes import (
    TaskOutcome,
    attempts_exhausted,
    no_tier_left,
)
from domain.progress import eta_seconds


def test_eta() -> None:
    assert eta_seconds(0, 0) == 0.0
    assert eta_seconds(100, 0) is None
    assert eta_seconds(100, 10) == pytest.approx(600)
    # The slowest shard bounds the estimate from below.
    assert eta_seconds(100, 10, longest_shard_remaining_minutes=30) == pytest.approx(1800)
    assert eta_seconds(100, 10, startup_minutes=15) == pytest.approx(1500)


def test_outcomes() -> None:
    assert [o for o in TaskOutcome if o.is_final] == [
        TaskOutcome.COMPLETED,
        TaskOutcome.FAILED,
        TaskOutcome.NOT_RUN,
    ]
    assert attempts_exhausted("6 attempts") == "attempts exhausted: 6 attempts"
    assert attempts_exhausted("") == "attempts exhausted"
    assert no_tier_left("x") == "no compute tier left: x"
