"""Progress figures for the status document: remaining time."""

from __future__ import annotations


def eta_seconds(
    remaining_expected_minutes: float,
    active_shards: int,
    *,
    longest_shard_remaining_minutes: float = 0.0,
    startup_minutes: float = 0.0,
) -> float | None:
    """Seconds until the evaluation is expected to finish; None when work remains but no shard
    is active to do it (the figure would be meaningless).

    Work spreads over the active shards, but no evaluation ends before its slowest shard does,
    so the estimate is the larger of the two, plus `startup_minutes` for shards still waiting
    for a node or a retry.
    """
    if remaining_expected_minutes <= 0:
        return 0.0
    if active_shards <= 0:
        return None
    minutes = max(remaining_expected_minutes / active_shards, longest_shard_remaining_minutes)
    return (minutes + max(0.0, startup_minutes)) * 60.0
