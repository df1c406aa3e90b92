"""The process's simulated Azure: one `SimulatedCloud` per process, which `adapters.runtime`
hands to the app when `COMPUTE_BACKEND=simulated`.

The devhost and the tests install their own (on their clock); under `func start` nobody does,
and the first use builds a wall-clock one from the app settings.
"""

from __future__ import annotations

import threading

from adapters.compute.simulated.cloud import SimulatedCloud
from adapters.compute.simulated.delivery import eventgrid_url_for

_installed: SimulatedCloud | None = None
_install_lock = threading.Lock()


def install_cloud(cloud: SimulatedCloud | None) -> None:
    """Make `cloud` the process's simulated Azure (the devhost and tests hand in their clock);
    None uninstalls it."""
    global _installed
    with _install_lock:
        _installed = cloud


def current_cloud() -> SimulatedCloud:
    """The installed cloud, or a wall-clock one built from the app settings (for `func start`)."""
    global _installed
    with _install_lock:
        if _installed is None:
            from adapters.compute.realtime import ThreadingScheduler
            from adapters.settings import load_settings

            settings = load_settings()
            _installed = SimulatedCloud(
                ThreadingScheduler(),
                profile=settings.sim_profile,
                seed=settings.sim_seed,
                eventgrid_url=eventgrid_url_for(settings.public_base_url),
                upload_artifacts=True,  # the app answers 409 when artifacts are off
            )
        return _installed
