"""The extension points of the simulator: a new fault is one class plus one hook, a new tier is
one `TierBehaviour`, and the profile draw follows the registry's order."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

from adapters.compute.simulated import RUN_FAULTS, TIERS, RunFault, TierFaults
from adapters.compute.simulated.delivery import Delivery
from adapters.compute.simulated.jobs import Job
from adapters.compute.simulated.lifecycle import JobLifecycle
from domain.jobs import FailureKind, JobState, Tier
from tests.simulated.support import make_cloud, spec


@dataclass(frozen=True)
class DiskFullAtBoot(RunFault):
    """A fault the simulator does not know: one class, one hook, no change anywhere else."""

    def on_booted(self, life: JobLifecycle, job: Job) -> list[Delivery] | None:
        return life.end(job, JobState.FAILED, "no space left on device", FailureKind.JOB_FAILED)


@pytest.mark.parametrize("tier", list(Tier))
def test_a_new_fault_is_one_class_and_one_hook(tier: Tier) -> None:
    cloud, sched, rec = make_cloud()
    cloud.script("eval1-s0-a1", DiskFullAtBoot())
    backend = cloud.backend(tier)
    backend.submit(spec(tier=tier))
    sched.run_all()
    status = backend.status("eval1-s0-a1")
    assert (status.state, status.detail) == (JobState.FAILED, "no space left on device")
    entry = cloud.ledger["eval1-s0-a1"]
    assert entry.fault == "DiskFullAtBoot" and entry.started_at is not None
    assert entry.tasks_run == 0 and rec.messages("eval1-s0-a1") == []


def test_every_tier_has_a_behaviour() -> None:
    assert set(TIERS) == set(Tier)
    assert all(b.tier is t for t, b in TIERS.items())


def test_every_registered_run_fault_has_a_profile_probability() -> None:
    names = {f.name for f in fields(TierFaults)}
    assert [f.profile_field for f in RUN_FAULTS if f.profile_field not in names] == []
    # The draw order is the registry's order: moving a fault would change every seed's world.
    assert [f.__name__ for f in RUN_FAULTS] == [
        "NeverStarts",
        "NoNestedVirtualization",
        "ImagePullFailure",
        "HangAfter",
        "SpotEviction",
        "RunnerCrash",
    ]
