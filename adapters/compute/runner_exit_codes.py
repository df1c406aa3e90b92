"""The shard runner's exit codes, as the compute adapters read them.

A tier that only sees how the container ended (Batch's task exit code, `docker inspect` on a VM)
learns the runner's verdict from these numbers; NO_KVM above all, which makes a failure
permanent for the tier instead of a retry on the same kind of node.

The runner cannot import this module: it is one stdlib-only file that the SSH tier uploads on
its own (`shard_runner/runner.py`, Python 3.9 in the image). So it spells the same numbers as
its `EXIT_*` constants, and `tests/shard_runner/test_exit_codes.py` fails if the two drift. The
adapters import from here, never the runner program itself.
"""

from __future__ import annotations

from typing import Final

OK: Final = 0
TASKS_FAILED: Final = 1
CONFIG: Final = 2
NO_KVM: Final = 3
NOT_READY: Final = 4
SETUP_FAILED: Final = 5
INTERNAL: Final = 6
TERMINATED: Final = 143  # SIGTERM (128 + 15): the tier stopped the container

# Every code by the runner's own constant name, for the drift test.
BY_RUNNER_NAME: Final = {
    "EXIT_OK": OK,
    "EXIT_TASKS_FAILED": TASKS_FAILED,
    "EXIT_CONFIG": CONFIG,
    "EXIT_NO_KVM": NO_KVM,
    "EXIT_NOT_READY": NOT_READY,
    "EXIT_SETUP_FAILED": SETUP_FAILED,
    "EXIT_INTERNAL": INTERNAL,
    "EXIT_TERMINATED": TERMINATED,
}
