"""Errors the devhost engine raises to its callers (the HTTP half maps them to status codes)."""

from __future__ import annotations


class DevhostError(Exception):
    """Base class of every devhost engine error."""


class UnknownFunctionError(DevhostError):
    """No orchestrator or activity of that name is registered in the app (HTTP 404)."""


class UnknownInstanceError(DevhostError):
    """No orchestration instance with that id exists (HTTP 404)."""


class InstanceExistsError(DevhostError):
    """An instance with that id is already Pending or Running (HTTP 409)."""


class InstanceNotRunningError(DevhostError):
    """The instance already completed, failed or was terminated (HTTP 410)."""


class StoreLimitError(DevhostError):
    """A value does not fit the storage service's limits (Table Storage property/entity size)."""


class EngineCrashedError(DevhostError):
    """The engine stopped as if its process had died (crash injection); nothing more is recorded."""
