"""The runner's exit codes and the adapters' copy of them are the same numbers.

The runner ships as one self-contained file, so it cannot import `adapters.compute.
runner_exit_codes`; this test is what keeps the two from drifting (a renumbered NO_KVM would
turn "no nested virtualization" into an endless retry on Batch and the VM tier).
"""

from __future__ import annotations

from adapters.compute import runner_exit_codes
from shard_runner import runner


def test_adapters_read_the_runners_exit_codes() -> None:
    in_runner = {name: value for name, value in vars(runner).items() if name.startswith("EXIT_")}
    assert in_runner == runner_exit_codes.BY_RUNNER_NAME
