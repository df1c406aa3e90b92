"""Summaries written before the rename (issue 9, part 7) stay readable: their `success_rate`
(the share of tasks that ran) is read as `completion_rate`."""

from __future__ import annotations

import json

from adapters.state.views import read_summary


def test_an_old_summary_reads_under_the_new_name() -> None:
    old = read_summary(json.dumps({"counts": {"total": 2}, "success_rate": 0.5}))
    assert old == {"counts": {"total": 2}, "completion_rate": 0.5}


def test_a_new_summary_reads_unchanged() -> None:
    new = {"completion_rate": 1.0, "results": {"domains": [], "overall": {}}}
    assert read_summary(json.dumps(new)) == new
