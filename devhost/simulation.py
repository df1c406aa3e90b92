"""A whole simulated deployment on this machine: the app on the devhost, state in Azurite (or
in memory), and the simulated Azure driving the app through its real HTTP entry points.

Used by the demo (`python -m devhost.demo`), the end-to-end tests and the policy benchmark.
A development and test tool: the app never imports it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import requests

from adapters import runtime
from adapters.compute.simulated import (
    FaultProfile,
    SimulatedCloud,
    eventgrid_url_for,
    install_cloud,
)
from devhost.host import DevHost

TERMINAL_EVALUATION_STATES = {"completed", "cancelled", "failed"}
DEFAULT_SECRET = "local-simulation-heartbeat-secret"
# As in local.settings.sample.json: OpenAI credentials in a vault that is never called.
DEFAULT_MODEL_CREDENTIALS = {
    "MODEL_SECRETS_VAULT_URL": "https://waa-simulated.vault.azure.net",
    "OPENAI_API_KEY_SECRET": "openai-api-key",
}


class Simulation:
    def __init__(
        self,
        *,
        connection_string: str,
        profile: str = "seed",
        seed: int = 7,
        time_mode: Literal["skip", "real"] = "skip",
        store: Literal["memory", "table"] = "memory",
        table_prefix: str | None = None,
        task_hub: str | None = None,
        sweep_schedule: str = "0 */2 * * * *",
        heartbeat_interval_seconds: float = 30.0,
        crash_injector: Any = None,
        artifacts: bool = True,
    ) -> None:
        self.profile = profile
        # Simulated jobs upload each completed task's artifacts to Azurite Blob through the
        # heartbeat endpoint's upload URLs, as the runner does (the policy benchmark turns it
        # off: it measures the control plane, not uploads).
        self.artifacts = artifacts
        self.seed = seed
        self.heartbeat_interval_seconds = heartbeat_interval_seconds
        prefix = table_prefix or f"sim{uuid.uuid4().hex[:8]}"
        # The app reads its settings from the environment, as under `func start`.
        os.environ.update(
            {
                "AzureWebJobsStorage": connection_string,
                "STATE_TABLE_PREFIX": prefix,
                "COMPUTE_BACKEND": "simulated",
                "SIM_PROFILE": profile,
                "SIM_SEED": str(seed),
                "SWEEP_SCHEDULE": sweep_schedule,
            }
        )
        os.environ.setdefault("HEARTBEAT_SECRET", DEFAULT_SECRET)
        # The model's credentials, as Key Vault names (the simulator never fetches them): a
        # start request is refused when the model has none (domain.requests).
        for name, value in DEFAULT_MODEL_CREDENTIALS.items():
            os.environ.setdefault(name, value)
        os.environ.pop("PUBLIC_BASE_URL", None)
        self.host = DevHost(
            time_mode=time_mode,
            store=store,
            connection_string=connection_string,
            task_hub=task_hub or f"hub{prefix}",
            crash_injector=crash_injector,
        )
        os.environ["PUBLIC_BASE_URL"] = self.host.base_url
        runtime.reset_services()
        runtime.install_clock(self.host.clock)
        self.cloud = self.new_cloud(profile, seed)
        self.http = requests.Session()

    def new_cloud(self, profile: str | FaultProfile, seed: int) -> SimulatedCloud:
        """A fresh simulated Azure (e.g. to run a second evaluation on identical dice)."""
        cloud = SimulatedCloud(
            self.host.clock,
            profile=profile,
            seed=seed,
            eventgrid_url=eventgrid_url_for(self.host.base_url),
            heartbeat_interval_seconds=self.heartbeat_interval_seconds,
            upload_artifacts=self.artifacts,
        )
        install_cloud(cloud)
        # The app caches its backends per process: drop them so it talks to the new cloud.
        runtime.reset_services()
        self.cloud = cloud
        return cloud

    def start(self) -> Simulation:
        self.host.start()
        return self

    def stop(self) -> None:
        self.host.stop()
        install_cloud(None)
        runtime.install_clock(None)
        runtime.reset_services()

    def __enter__(self) -> Simulation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return self.host.base_url

    # ------------------------------------------------------------------ the API, over HTTP
    def start_evaluation(self, body: dict[str, Any]) -> requests.Response:
        return self.http.post(f"{self.base_url}/api/evaluations", json=body, timeout=60)

    def status(self, evaluation_id: str, *, tasks: bool = True) -> dict[str, Any]:
        r = self.http.get(
            f"{self.base_url}/api/evaluations/{evaluation_id}",
            params={"tasks": "true" if tasks else "false"},
            timeout=60,
        )
        r.raise_for_status()
        return dict(r.json())

    def cancel(self, evaluation_id: str) -> requests.Response:
        return self.http.post(f"{self.base_url}/api/evaluations/{evaluation_id}/cancel", timeout=60)

    def wait(
        self,
        evaluation_id: str,
        *,
        timeout: float = 300.0,
        poll: float = 0.2,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the status endpoint until the evaluation ended; returns the final status."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.status(evaluation_id, tasks=False)
            if on_progress is not None:
                on_progress(view)
            if view["state"] in TERMINAL_EVALUATION_STATES and view.get("runtime_status") in (
                "Completed",
                "Failed",
                "Terminated",
            ):
                return self.status(evaluation_id)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"evaluation {evaluation_id} still {view['state']} after {timeout} s"
                )
            time.sleep(poll)
