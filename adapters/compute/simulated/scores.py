"""The simulated agent's score: one draw per completed run, with a success chance per domain.

A run is a task in one trial (run key "<task_id>#<k>" with trials > 1, domain/tasksets.py):
each run draws its own score, so the trials of one task differ as a real agent's do, and the
results table shows a spread across trials.

Only there so the demo and the tests see a per-domain results table (issue 9, part 7) that is
not flat. The chances are illustrative, not WAA's published figures; their mean over the full
set stays near the 35 % the simulator drew for every task before it drew per domain.
"""

from __future__ import annotations

import random

from domain.tasksets import domain_of

# WAA domain -> chance that the agent solves one of its tasks (score 1.0; else 0.0, as WAA's
# evaluators mostly score a task).
SUCCESS_CHANCE: dict[str, float] = {
    "chrome": 0.45,
    "msedge": 0.40,
    "file_explorer": 0.50,
    "settings": 0.55,
    "notepad": 0.60,
    "clock": 0.50,
    "windows_calc": 0.45,
    "vs_code": 0.35,
    "vlc": 0.25,
    "microsoft_paint": 0.20,
    "libreoffice_calc": 0.10,
    "libreoffice_writer": 0.20,
}
DEFAULT_SUCCESS_CHANCE = 0.35


def draw_score(rng: random.Random, task_id: str) -> float:
    """One draw from `rng` (the job's seeded generator) for the run `task_id` (a task id or a
    run key: its domain is its task's), so the sequence of draws, and with it every other
    outcome of the job, is the same as before scores depended on the domain."""
    chance = SUCCESS_CHANCE.get(domain_of(task_id), DEFAULT_SUCCESS_CHANCE)
    return 1.0 if rng.random() < chance else 0.0
