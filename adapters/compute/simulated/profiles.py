"""Fault profiles: per tier, how likely each fault is. `PROFILES` are the named ones
(`SIM_PROFILE`, the demo's `--profile`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from adapters.compute.simulated.faults import RUN_FAULTS
from domain.jobs import Tier


@dataclass(frozen=True)
class TierFaults:
    """Probabilities for one tier. The run faults (`faults.RUN_FAULTS`: never starts, no nested
    virtualization, image pull failure, hang, spot eviction, runner crash) are exclusive: at
    most one per job, so their probabilities add up to at most 1."""

    never_starts: float = 0.0
    no_nested_virtualization: float = 0.0
    image_pull_failure: float = 0.0
    hang: float = 0.0
    # Only spot / low-priority jobs can be evicted.
    spot_eviction: float = 0.0
    runner_crash: float = 0.0
    transient_submit: float = 0.0
    max_transient_submit_errors: int = 2
    # Per (evaluation, tier): the subscription has no quota left for the VM family.
    quota_exhausted: float = 0.0
    # A task the agent ran but that failed (agent crash, task setup error).
    task_failure: float = 0.0
    # Per runner message: lost on the network after the runner's retries gave up.
    message_loss: float = 0.0
    # Per Azure ML Event Grid event.
    event_loss: float = 0.0
    event_duplicate: float = 0.0
    event_late: float = 0.0
    event_late_seconds: tuple[float, float] = (60.0, 600.0)

    def __post_init__(self) -> None:
        run = sum(getattr(self, fault.profile_field) for fault in RUN_FAULTS)
        if run > 1.0:
            raise ValueError(f"run-fault probabilities add up to {run:.2f} > 1")
        for f in fields(self):
            if f.type != "float":  # counts and ranges are not probabilities
                continue
            value = getattr(self, f.name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{f.name} must be a probability, got {value}")


@dataclass(frozen=True)
class FaultProfile:
    name: str
    azureml: TierFaults = field(default_factory=TierFaults)
    batch: TierFaults = field(default_factory=TierFaults)
    vm: TierFaults = field(default_factory=TierFaults)

    def for_tier(self, tier: Tier) -> TierFaults:
        return {Tier.AZURE_ML: self.azureml, Tier.BATCH: self.batch, Tier.VM: self.vm}[tier]


PROFILES: dict[str, FaultProfile] = {
    "none": FaultProfile("none"),
    # The motivating incident: on Azure ML about half the jobs never get their container up,
    # some hang mid-run, a few submissions are throttled; Batch and plain VMs are healthier.
    # Slow pulls are the default behaviour for Docker Hub images (5-10 min), not a fault.
    "seed": FaultProfile(
        "seed",
        azureml=TierFaults(
            never_starts=0.5,
            hang=0.1,
            image_pull_failure=0.02,
            spot_eviction=0.05,
            transient_submit=0.05,
            task_failure=0.02,
        ),
        batch=TierFaults(
            never_starts=0.05,
            hang=0.03,
            spot_eviction=0.05,
            transient_submit=0.02,
            task_failure=0.02,
        ),
        vm=TierFaults(
            never_starts=0.05,
            hang=0.03,
            transient_submit=0.02,
            task_failure=0.02,
        ),
    ),
    "chaos": FaultProfile(
        "chaos",
        azureml=TierFaults(
            never_starts=0.5,
            no_nested_virtualization=0.05,
            image_pull_failure=0.05,
            hang=0.15,
            spot_eviction=0.2,
            transient_submit=0.2,
            max_transient_submit_errors=3,
            task_failure=0.05,
            message_loss=0.05,
            event_loss=0.1,
            event_duplicate=0.1,
            event_late=0.1,
            runner_crash=0.03,
        ),
        batch=TierFaults(
            never_starts=0.1,
            runner_crash=0.03,
            image_pull_failure=0.05,
            hang=0.1,
            spot_eviction=0.2,
            transient_submit=0.1,
            max_transient_submit_errors=3,
            quota_exhausted=0.1,
            task_failure=0.05,
            message_loss=0.05,
        ),
        vm=TierFaults(
            never_starts=0.08,
            runner_crash=0.03,
            hang=0.08,
            spot_eviction=0.1,
            transient_submit=0.1,
            task_failure=0.05,
            message_loss=0.05,
        ),
    ),
}


def get_profile(profile: FaultProfile | str) -> FaultProfile:
    if isinstance(profile, FaultProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown fault profile {profile!r}; known: {sorted(PROFILES)}") from None
