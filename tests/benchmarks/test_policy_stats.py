"""The policy benchmark's pure figures (benchmarks/policy_stats.py)."""

from __future__ import annotations

import pytest

from benchmarks.policy_stats import (
    Detection,
    JobTimes,
    Run,
    Spread,
    aggregate,
    detections,
    spread,
    tail_idle_hours,
    tail_payoff,
    targets,
    worst,
)


def test_spread_is_min_median_max() -> None:
    assert spread([3.0, 1.0, 2.0]) == Spread(1.0, 2.0, 3.0)
    assert spread([1.0, 4.0]) == Spread(1.0, 2.5, 4.0)
    assert spread([5]) == Spread(5, 5, 5)
    with pytest.raises(ValueError):
        spread([])


def test_tail_idle_sums_end_minus_each_slots_last_task() -> None:
    jobs = [
        JobTimes(slot=0, submitted=0, task_spans=(("a", 600, 1800), ("b", 1800, 3000))),
        JobTimes(slot=1, submitted=0, task_spans=(("c", 600, 1000),)),
        # slot 1's second job: its last task ran until 5400
        JobTimes(slot=1, submitted=1100, task_spans=(("d", 1700, 5400),)),
    ]
    # end 7200: slot 0 idles 4200 s, slot 1 1800 s
    assert tail_idle_hours(jobs, 2, 7200) == pytest.approx(6000 / 3600)


def test_a_slot_that_never_ran_a_task_idles_throughout() -> None:
    jobs = [
        JobTimes(slot=0, submitted=0, task_spans=(("a", 600, 2000),)),
        JobTimes(slot=1, submitted=0, fault=300),
    ]
    assert tail_idle_hours(jobs, 2, 3600) == pytest.approx((1600 + 3600) / 3600)


def test_tail_idle_is_never_negative() -> None:
    jobs = [JobTimes(slot=0, submitted=0, task_spans=(("a", 0, 4000),))]
    assert tail_idle_hours(jobs, 1, 3600) == 0.0


def test_detection_is_fault_to_cancel_to_the_slots_next_submission() -> None:
    jobs = [
        JobTimes(slot=0, submitted=0, fault=100, cancelled=700),
        JobTimes(slot=1, submitted=5, fault=200),  # ended by itself, then replaced
        JobTimes(slot=0, submitted=760),
        JobTimes(slot=0, submitted=2000),  # not the next one
        JobTimes(slot=1, submitted=260),
        JobTimes(slot=2, submitted=0, fault=50),  # never replaced: no detection
    ]
    found = detections(jobs)
    assert found == [Detection(0, 600, 660), Detection(1, None, 60)]
    assert worst(found) == Detection(0, 600, 660)
    assert worst([None]) is None


def _run(
    variant: str, seed: int, completed: int, makespan: float, cost: float, **kw: object
) -> Run:
    fields: dict[str, object] = {
        "profile": "seed",
        "variant": variant,
        "seed": seed,
        "completed": completed,
        "total": 154,
        "makespan_ratio": makespan,
        "cost_ratio": cost,
        "jobs": 10,
        "failovers": 0,
        "tail_idle_hours": 0.5,
        "detection": None,
        "wall_seconds": 60.0,
    }
    fields.update(kw)
    return Run(**fields)  # type: ignore[arg-type]


def test_aggregate_groups_by_profile_and_variant_over_seeds() -> None:
    runs = [
        _run("queue", 1, 154, 1.02, 1.01, detection=Detection(0, 60, 600)),
        _run("static", 1, 150, 1.20, 1.10),
        _run("queue", 2, 154, 1.04, 1.03, detection=Detection(3, None, 900), jobs=14),
        _run("queue", 3, 153, 1.10, 1.00),
    ]
    queue, static = aggregate(runs)
    assert (queue.variant, queue.seeds, static.variant, static.seeds) == ("queue", 3, "static", 1)
    assert queue.share == Spread(153 / 154, 1.0, 1.0)
    assert queue.makespan == Spread(1.02, 1.04, 1.10)
    assert queue.jobs == Spread(10, 10, 14)
    assert queue.detection == Detection(3, None, 900)
    assert static.detection is None


def test_targets_report_measured_figures_and_what_was_not_run() -> None:
    runs = [_run("queue", s, 154, m, 1.01) for s, m in ((1, 1.03), (2, 1.06), (3, 1.04))]
    runs += [_run("queue", 1, 153, 1.1, 1.1, profile="chaos")]
    found = targets(aggregate(runs))
    assert [(t.measured, t.met) for t in found] == [
        ("worst seed 100.0%", True),
        ("1.040x", True),
        ("1.010x", True),
        ("worst seed 99.4%", True),
    ]
    missing = targets(aggregate([_run("static", 1, 154, 1.0, 1.0)]))
    assert {(t.measured, t.met) for t in missing} == {("not run", None)}


def test_targets_fail_on_one_seed_short() -> None:
    runs = [_run("queue", 1, 154, 1.0, 1.0), _run("queue", 2, 152, 1.0, 1.0)]
    runs += [_run("queue", 1, 150, 1.0, 1.0, profile="chaos")]
    met = [t.met for t in targets(aggregate(runs))]
    assert met == [False, True, True, False]


def test_tail_payoff_compares_medians_where_both_ran() -> None:
    runs = [_run("queue", 1, 154, 1.04, 1.02), _run("queue+tail", 1, 154, 1.01, 1.03)]
    runs += [_run("queue", 1, 154, 1.0, 1.0, profile="none")]
    (line,) = tail_payoff(aggregate(runs), "queue", "queue+tail")
    assert line.startswith(
        "seed: median makespan 1.010x with tail copies vs 1.040x without (-0.030)"
    )


def test_seeds_parse_as_ranges_and_lists() -> None:
    from benchmarks.policy import parse_seeds

    assert parse_seeds("1-3,7") == [1, 2, 3, 7]
    assert parse_seeds("5") == [5]


def test_the_ideal_spreads_the_expected_task_time_over_the_workers_after_one_provisioning() -> None:
    from benchmarks.policy import ideal, simulated_provisioning_minutes
    from domain.cost import RECOMMENDED_VM_SIZE, hourly_price

    # waa-full: 154 tasks, 1235 expected minutes; the planner provisions in 15 minutes
    makespan_h, cost = ideal("waa-full", 10)
    assert makespan_h == pytest.approx((123.5 + 15) / 60)
    assert cost == pytest.approx(hourly_price(RECOMMENDED_VM_SIZE, False) * (1235 + 150) / 60)
    # the simulator's mean: queue 16 s, node 240 s, regional pull 70 s, boot 90 s
    assert simulated_provisioning_minutes() == pytest.approx(416 / 60)
    assert ideal("waa-full", 10, 6.0)[0] == pytest.approx(129.5 / 60)
