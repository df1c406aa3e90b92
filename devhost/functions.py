"""Discovers an app's Durable functions and calls them the way the Functions host and worker do."""

from __future__ import annotations

import asyncio
import inspect
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter

from devhost.errors import UnknownFunctionError

_INDEXES: weakref.WeakKeyDictionary[Any, FunctionIndex] = weakref.WeakKeyDictionary()
_INDEX_LOCK = threading.Lock()
_OUT_OF_PROC_MARKER = "$OutOfProcData$:"
ORCHESTRATION_TRIGGER = "orchestrationTrigger"
ACTIVITY_TRIGGER = "activityTrigger"


@dataclass(frozen=True)
class _Registered:
    name: str
    trigger_param: str
    func: Callable[..., Any]


class FunctionIndex:
    """The orchestrators and activities an app registers, by function name.

    Other functions (HTTP, Event Grid, timer, client bindings) are kept in `functions` for the
    HTTP half of the devhost; this class only invokes the Durable ones.
    """

    def __init__(self, functions: list[Any]) -> None:
        self.functions = functions
        self._orchestrators: dict[str, _Registered] = {}
        self._activities: dict[str, _Registered] = {}
        for fn in functions:
            trigger = fn.get_trigger()
            if trigger is None:
                continue
            reg = _Registered(fn.get_function_name(), trigger.name, fn.get_user_function())
            if trigger.type == ORCHESTRATION_TRIGGER:
                self._orchestrators[reg.name] = reg
            elif trigger.type == ACTIVITY_TRIGGER:
                self._activities[reg.name] = reg

    @classmethod
    def from_app(cls, app: Any) -> FunctionIndex:
        # `get_functions()` indexes the app and refuses to run twice on the same app object
        # (it sees its own earlier result as duplicate names), so one index per app is kept.
        with _INDEX_LOCK:
            index = _INDEXES.get(app)
            if index is None:
                index = cls(list(app.get_functions()))
                _INDEXES[app] = index
            return index

    @property
    def orchestrator_names(self) -> list[str]:
        return sorted(self._orchestrators)

    @property
    def activity_names(self) -> list[str]:
        return sorted(self._activities)

    def invoke_orchestrator(self, name: str, context_json: str) -> str:
        """Run one orchestrator episode; returns the OrchestratorState JSON the SDK produced.

        The DFApp decorator registered `Orchestrator.create(fn)`'s `handle`, which accepts the
        context JSON string itself. On an orchestrator exception the SDK raises with the state JSON
        appended after `$OutOfProcData$:`; the Functions host reads the state from there too.
        """
        reg = self._orchestrators.get(name)
        if reg is None:
            raise UnknownFunctionError(f"no orchestrator function named {name!r}")
        try:
            return str(reg.func(context_json))
        except Exception as exc:
            message = str(exc)
            idx = message.find(_OUT_OF_PROC_MARKER)
            if idx < 0:
                raise
            return message[idx + len(_OUT_OF_PROC_MARKER) :]

    def invoke_activity(self, name: str, input_json: str | None) -> str:
        """Call an activity like the Python worker: decode the trigger input, encode the result."""
        reg = self._activities.get(name)
        if reg is None:
            raise UnknownFunctionError(f"no activity function named {name!r}")
        datum = meta.Datum(input_json if input_json is not None else "null", "json")
        arg = ActivityTriggerConverter.decode(datum, trigger_metadata=None)
        result = reg.func(**{reg.trigger_param: arg})
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        return str(ActivityTriggerConverter.encode(result, expected_type=None).value)

    def is_orchestrator(self, name: str) -> bool:
        return name in self._orchestrators

    def is_activity(self, name: str) -> bool:
        return name in self._activities


async def _await(awaitable: Any) -> Any:
    return await awaitable
