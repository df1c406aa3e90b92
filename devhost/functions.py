"""An app's Durable functions, called through the real worker as the Durable extension does."""

from __future__ import annotations

from typing import Any

from devhost import protos
from devhost.errors import UnknownFunctionError
from devhost.worker import FunctionFailedError, WorkerApp

_OUT_OF_PROC_MARKER = "$OutOfProcData$:"
ORCHESTRATION_TRIGGER = "orchestrationTrigger"
ACTIVITY_TRIGGER = "activityTrigger"


class FunctionIndex:
    """The orchestrators and activities an app registers, by function name.

    Other functions (HTTP, Event Grid, timer, client bindings) are in `worker` for the HTTP half
    of the devhost; this class only invokes the Durable ones.
    """

    def __init__(self, worker: WorkerApp) -> None:
        self.worker = worker
        self._trigger_param: dict[str, dict[str, str]] = {
            ORCHESTRATION_TRIGGER: {},
            ACTIVITY_TRIGGER: {},
        }
        for name, indexed in worker.functions.items():
            trigger = indexed.function.get_trigger()
            if trigger is not None and trigger.type in self._trigger_param:
                self._trigger_param[trigger.type][name] = trigger.name

    @classmethod
    def from_app(cls, app: Any) -> FunctionIndex:
        return cls(WorkerApp.for_app(app))

    @property
    def functions(self) -> list[Any]:
        return [indexed.function for indexed in self.worker.functions.values()]

    @property
    def orchestrator_names(self) -> list[str]:
        return sorted(self._trigger_param[ORCHESTRATION_TRIGGER])

    @property
    def activity_names(self) -> list[str]:
        return sorted(self._trigger_param[ACTIVITY_TRIGGER])

    def invoke_orchestrator(self, name: str, context_json: str) -> str:
        """Run one orchestrator episode; returns the OrchestratorState JSON the SDK produced.

        The extension sends the orchestration context as a string. On an orchestrator exception
        the SDK raises with the state JSON appended after `$OutOfProcData$:`; the worker reports
        the failure with that message and the extension reads the state from there.
        """
        param = self._trigger_param[ORCHESTRATION_TRIGGER].get(name)
        if param is None:
            raise UnknownFunctionError(f"no orchestrator function named {name!r}")
        try:
            returned = self.worker.invoke(name, {param: protos.TypedData(string=context_json)})
        except FunctionFailedError as failed:
            idx = failed.message.find(_OUT_OF_PROC_MARKER)
            if idx < 0:
                raise
            return failed.message[idx + len(_OUT_OF_PROC_MARKER) :]
        return _payload(returned)

    def invoke_activity(self, name: str, input_json: str | None) -> str:
        """Call an activity: its input as the extension sends it (JSON), its result as JSON."""
        param = self._trigger_param[ACTIVITY_TRIGGER].get(name)
        if param is None:
            raise UnknownFunctionError(f"no activity function named {name!r}")
        data = protos.TypedData(json=input_json if input_json is not None else "null")
        return _payload(self.worker.invoke(name, {param: data}))

    def is_orchestrator(self, name: str) -> bool:
        return name in self._trigger_param[ORCHESTRATION_TRIGGER]

    def is_activity(self, name: str) -> bool:
        return name in self._trigger_param[ACTIVITY_TRIGGER]


def _payload(returned: protos.TypedData | None) -> str:
    """The JSON text of a Durable function's return value as the worker encoded it."""
    if returned is None:
        return "null"
    kind = returned.WhichOneof("data")
    if kind in ("json", "string"):
        return str(getattr(returned, kind))
    raise TypeError(f"a Durable function returned {kind!r} data, not JSON")
