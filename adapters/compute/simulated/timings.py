"""How long things take in the simulated Azure (seconds), and where an image comes from.

The ranges are what the real tiers showed: a Docker Hub pull of the ~5 GB WAA image takes 5-10
minutes, a registry in the compute's region under 2; task durations spread around the
planner's per-domain expectation so that its estimates are right on average but never exact.
"""

from __future__ import annotations

import re

from domain.planning import expected_minutes
from domain.tasksets import TaskRef, domain_of

QUEUE_SECONDS = (2.0, 30.0)
PROVISION_SECONDS = (180.0, 300.0)
DOCKER_HUB_PULL_SECONDS = (300.0, 600.0)
REGIONAL_PULL_SECONDS = (30.0, 110.0)
BOOT_SECONDS = (60.0, 120.0)
# How long an invalid image takes to be rejected (manifest lookup).
INVALID_IMAGE_SECONDS = (10.0, 40.0)
# From the runner's last message (finished / failure) to the tier reporting the job ended.
EXIT_SECONDS = 5.0
# From the container's start to the runner's KVM check failing (the first thing it does).
NO_KVM_CHECK_SECONDS = 2.0
# From the last task's result to the runner's `finished` message.
FINISH_SECONDS = 1.0
# Event Grid's usual delivery latency.
EVENT_LATENCY_SECONDS = (1.0, 3.0)
# The shard runner's and Event Grid's retry delays for a post that failed (5xx, refused).
MESSAGE_RETRY_DELAYS = (2.0, 5.0, 15.0)
EVENT_RETRY_DELAYS = (10.0, 30.0, 60.0)
DEFAULT_IDLE_SECONDS = 600.0

# Actual task durations spread +-20% around the planner's per-domain expectation, so the
# planner's estimates are right on average but not exact.
TASK_SPREAD = 0.2

TASK_FAILURE_REASONS = (
    "agent crashed: model endpoint returned HTTP 500 three times",
    "task setup failed: the application did not open within 120 s",
    "evaluator error: result file missing",
)

_IMAGE_REF = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9.-]+(?::[0-9]+)?)/)?"
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


def image_registry(image: str) -> str | None:
    """The registry host of an image reference (None for Docker Hub), or raise ValueError."""
    m = _IMAGE_REF.match(image)
    if not m:
        raise ValueError("invalid image reference")
    registry = m.group("registry")
    # Docker's rule: the first path part is a registry host only if it looks like one.
    if registry and ("." in registry or ":" in registry or registry == "localhost"):
        return None if registry in ("docker.io", "index.docker.io") else registry
    return None


def regional_registry(registry: str | None) -> bool:
    return registry is not None and registry.endswith(".azurecr.io")


def task_mean_seconds(task_id: str) -> float:
    return 60.0 * expected_minutes(TaskRef(task_id=task_id, domain=domain_of(task_id)))
