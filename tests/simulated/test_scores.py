"""The simulator's agent scores (adapters/compute/simulated/scores.py): drawn per domain, the
same for the same seed, so the demo's per-domain results table is reproducible."""

from __future__ import annotations

import random

from adapters.compute.simulated.scores import SUCCESS_CHANCE, draw_score
from domain.tasksets import WAA_DOMAINS, load_task_set


def test_every_waa_domain_has_a_chance() -> None:
    assert set(SUCCESS_CHANCE) == set(WAA_DOMAINS)
    assert all(0.0 <= p <= 1.0 for p in SUCCESS_CHANCE.values())


def test_scores_are_deterministic_for_the_seed_and_differ_by_domain() -> None:
    tasks = load_task_set("waa-full")

    def draw(seed: int) -> dict[str, list[float]]:
        rng = random.Random(seed)
        return {d: [draw_score(rng, t) for t in ids * 20] for d, ids in tasks.items()}

    first = draw(7)
    assert first == draw(7)
    rates = {d: sum(s) / len(s) for d, s in first.items()}
    # Many draws per domain: each domain's rate sits near its chance, so domains differ.
    for domain, rate in rates.items():
        assert abs(rate - SUCCESS_CHANCE[domain]) < 0.15, (domain, rate)
    assert rates["libreoffice_calc"] < rates["notepad"]


def test_a_run_of_a_trial_draws_with_its_task_domain_chance() -> None:
    # Run keys "<task>#<k>" (trials > 1) are scored as their task, one draw per run.
    task = load_task_set("waa-full")["libreoffice_calc"][0]
    rng = random.Random(3)
    runs = [draw_score(rng, f"{task}#{k % 10}") for k in range(2000)]
    assert abs(sum(runs) / len(runs) - SUCCESS_CHANCE["libreoffice_calc"]) < 0.05
    assert len(set(runs)) == 2  # the trials of one task do not all score alike
