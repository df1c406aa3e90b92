"""Durable state of orchestration instances: in memory, or in Azure Table Storage.

An instance's state is its history (one event per item) and everything else the engine needs to
resume it after a restart (status fields, the SDK id counter, the actions seen so far, and its
pending work: activities scheduled but not completed, timers not fired, events not yet delivered,
retry state, sub-orchestration links). `InstanceState` is that record; the engine owns and
mutates it, a store persists snapshots of it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote, unquote

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode

from devhost.errors import StoreLimitError

ACTIVE_STATUSES = ("Pending", "Running", "ContinuedAsNew")
FINISHED_STATUSES = ("Completed", "Failed", "Terminated")


@dataclass
class InstanceState:
    instance_id: str
    name: str
    runtime_status: str
    input_json: str | None
    created_time: datetime
    last_updated_time: datetime
    output_json: str | None = None
    custom_status_json: str | None = None
    parent_instance_id: str | None = None
    # The parent's task id (the EventId of its SubOrchestrationInstanceCreated).
    parent_task_id: int | None = None
    # Bumped on continue-as-new, so stale history rows of an older execution are never read.
    generation: int = 0
    # The SDK's next sequence number (ids of scheduled tasks, timers and retry no-ops).
    next_id: int = 0
    # Every atomic action the orchestrator yielded so far: [actionType, name, id or None].
    actions: list[list[Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    # New events not yet delivered to the orchestrator, in arrival order.
    inbox: list[dict[str, Any]] = field(default_factory=list)
    # task id -> {"name", "input"}: activities scheduled and not yet completed.
    activities: dict[str, dict[str, Any]] = field(default_factory=dict)
    # timer id -> {"fire_at": iso}: durable timers not yet fired and not cancelled.
    timers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # current task or retry-timer id -> retry bookkeeping of a *_with_retry call.
    retries: dict[str, dict[str, Any]] = field(default_factory=dict)
    # task id -> child instance id of running sub-orchestrations.
    children: dict[str, str] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """Everything except the history, JSON-ready."""
        # Not dataclasses.asdict: it deep-copies the history only for it to be dropped here.
        rec = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "history"}
        rec["created_time"] = self.created_time.isoformat()
        rec["last_updated_time"] = self.last_updated_time.isoformat()
        return rec

    @classmethod
    def from_record(cls, rec: dict[str, Any], history: list[dict[str, Any]]) -> InstanceState:
        rec = dict(rec)
        rec["created_time"] = datetime.fromisoformat(rec["created_time"])
        rec["last_updated_time"] = datetime.fromisoformat(rec["last_updated_time"])
        return cls(**rec, history=history)


class InstanceStore(Protocol):
    def save(self, state: InstanceState) -> None:
        """Persist the instance's current state (atomically as far as the backend allows)."""
        ...

    def load_all(self) -> list[InstanceState]: ...

    def delete(self, instance_id: str) -> bool: ...


class MemoryInstanceStore:
    """Keeps JSON snapshots, so what a restarted engine sees is exactly what was saved."""

    def __init__(self, snapshot: dict[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, str] = dict(snapshot or {})

    def save(self, state: InstanceState) -> None:
        encoded = json.dumps({"rec": state.to_record(), "history": state.history})
        with self._lock:
            self._data[state.instance_id] = encoded
        self._after_save()

    def snapshot(self) -> dict[str, str]:
        """The whole store's content; `MemoryInstanceStore(snapshot)` starts from it."""
        with self._lock:
            return dict(self._data)

    def _after_save(self) -> None:
        """Hook for subclasses (tests record every persisted state as a possible crash point)."""

    def load_all(self) -> list[InstanceState]:
        with self._lock:
            snapshots = list(self._data.values())
        out = []
        for snap in snapshots:
            data = json.loads(snap)
            out.append(InstanceState.from_record(data["rec"], data["history"]))
        return out

    def delete(self, instance_id: str) -> bool:
        with self._lock:
            return self._data.pop(instance_id, None) is not None


# Table Storage limits (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model):
# a string property is at most 64 KiB as UTF-16, an entity at most 1 MiB, a transaction is one
# partition with at most 100 operations and 4 MiB. Azurite does not enforce all of them.
MAX_BATCH_OPS = 100
# 16,000 characters are at most 64,000 bytes in UTF-16 even if every one is a surrogate pair.
CHUNK_CHARS = 16_000
# Chunk properties per entity: 14 x 64,000 bytes stays under 1 MiB with the keys and counters.
MAX_CHUNKS_PER_ENTITY = 14
# A transaction's body is at most 4 MiB; keep a margin for the multipart framing.
MAX_BATCH_BYTES = 3_500_000
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")


def _encode_key(value: str) -> str:
    # PartitionKey/RowKey may not contain / \ # ? or control characters; quote() is reversible.
    return quote(value, safe="-_.:~!$&'()*+,;=@ ")


def _chunks(text: str, what: str) -> dict[str, str]:
    parts = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]
    if len(parts) > MAX_CHUNKS_PER_ENTITY:
        raise StoreLimitError(
            f"{what} is {len(text)} characters; a Table Storage entity holds at most "
            f"{MAX_CHUNKS_PER_ENTITY * CHUNK_CHARS}"
        )
    return {f"d{i}": p for i, p in enumerate(parts)}


def _wire_size(op: tuple[Any, ...]) -> int:
    # ASCII-escaped JSON is an upper bound of the entity's size in the transaction body.
    return len(json.dumps(op[1])) + 200


def _unchunk(entity: dict[str, Any]) -> str:
    parts = []
    i = 0
    while f"d{i}" in entity:
        parts.append(entity[f"d{i}"])
        i += 1
    return "".join(parts)


class TableInstanceStore:
    """Instances in one table `<task_hub>Instances`, one partition per instance.

    Rows: `meta` (status columns for listing, the state record's row count, history length and
    execution generation), `s:NNNN` (the state record, chunked), `h:GGGGGG:NNNNNNNN` (one history
    event per row). A save first writes the new history rows, then the state rows and the meta row
    in one transaction: the meta row is the commit point, so a crash in between leaves extra
    history rows that a later load ignores.
    """

    def __init__(self, connection_string: str, task_hub: str) -> None:
        table = f"{task_hub}Instances"
        if not _TABLE_NAME.match(table):
            raise ValueError(f"task hub name {task_hub!r} does not give a valid table name")
        service = TableServiceClient.from_connection_string(connection_string)
        self._table = service.create_table_if_not_exists(table)
        self._lock = threading.Lock()
        # instance id -> (generation, history rows known to be stored)
        self._saved: dict[str, tuple[int, int]] = {}

    def save(self, state: InstanceState) -> None:
        pk = _encode_key(state.instance_id)
        gen = state.generation
        with self._lock:
            saved_gen, saved_len = self._saved.get(state.instance_id, (-1, 0))
        start = saved_len if saved_gen == gen else 0
        start = min(start, len(state.history))
        history_ops = [
            (
                "upsert",
                {
                    "PartitionKey": pk,
                    "RowKey": f"h:{gen:06d}:{i:08d}",
                    **_chunks(
                        json.dumps(ev, ensure_ascii=False),
                        f"history event {i} of {state.instance_id!r}",
                    ),
                },
                {"mode": UpdateMode.REPLACE},
            )
            for i, ev in enumerate(state.history[start:], start)
        ]
        record = json.dumps(state.to_record(), ensure_ascii=False)
        per_row = CHUNK_CHARS * MAX_CHUNKS_PER_ENTITY
        rows = [record[i : i + per_row] for i in range(0, len(record), per_row)] or [""]
        final_ops = [
            (
                "upsert",
                {"PartitionKey": pk, "RowKey": f"s:{i:04d}", **_chunks(part, "state record")},
                {"mode": UpdateMode.REPLACE},
            )
            for i, part in enumerate(rows)
        ]
        meta = {
            "PartitionKey": pk,
            "RowKey": "meta",
            "InstanceId": state.instance_id,
            "Name": state.name,
            "RuntimeStatus": state.runtime_status,
            "StateRows": len(rows),
            "HistoryLength": len(state.history),
            "Generation": gen,
        }
        final_ops.append(("upsert", meta, {"mode": UpdateMode.REPLACE}))
        final_size = sum(_wire_size(op) for op in final_ops)
        if final_size > MAX_BATCH_BYTES:
            raise StoreLimitError(
                f"state of instance {state.instance_id!r} needs {final_size} bytes; one "
                f"Table Storage transaction carries at most {MAX_BATCH_BYTES}"
            )
        batches: list[list[Any]] = []
        current: list[Any] = []
        current_size = 0
        for op in history_ops:
            size = _wire_size(op)
            if current and (len(current) >= MAX_BATCH_OPS or current_size + size > MAX_BATCH_BYTES):
                batches.append(current)
                current, current_size = [], 0
            current.append(op)
            current_size += size
        # The last history rows ride in the final (atomic) transaction when they fit.
        if (
            len(current) + len(final_ops) <= MAX_BATCH_OPS
            and current_size + final_size <= MAX_BATCH_BYTES
        ):
            final_ops = [*current, *final_ops]
        elif current:
            batches.append(current)
        for batch in batches:
            self._table.submit_transaction(batch)
        self._table.submit_transaction(final_ops)
        with self._lock:
            self._saved[state.instance_id] = (gen, len(state.history))
        if saved_gen not in (-1, gen):
            current = f"h:{gen:06d}:"
            self._delete_rows(pk, lambda rk: rk.startswith("h:") and not rk.startswith(current))

    def load_all(self) -> list[InstanceState]:
        metas = list(self._table.query_entities("RowKey eq @rk", parameters={"rk": "meta"}))
        return [s for s in (self._load(m) for m in metas) if s is not None]

    def _load(self, meta: dict[str, Any]) -> InstanceState | None:
        pk = meta["PartitionKey"]
        rows = list(self._table.query_entities("PartitionKey eq @pk", parameters={"pk": pk}))
        state_rows = {r["RowKey"]: r for r in rows if r["RowKey"].startswith("s:")}
        record = "".join(_unchunk(state_rows[f"s:{i:04d}"]) for i in range(meta["StateRows"]))
        gen = meta["Generation"]
        prefix = f"h:{gen:06d}:"
        by_index = {
            int(r["RowKey"][len(prefix) :]): r for r in rows if r["RowKey"].startswith(prefix)
        }
        history = [json.loads(_unchunk(by_index[i])) for i in range(meta["HistoryLength"])]
        state = InstanceState.from_record(json.loads(record), history)
        with self._lock:
            self._saved[state.instance_id] = (gen, len(history))
        return state

    def delete(self, instance_id: str) -> bool:
        pk = _encode_key(instance_id)
        with self._lock:
            self._saved.pop(instance_id, None)
        return self._delete_rows(pk, lambda rk: True) > 0

    def _delete_rows(self, pk: str, should_delete: Callable[[str], bool]) -> int:
        keys = [
            r["RowKey"]
            for r in self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": pk}, select=["RowKey"]
            )
            if should_delete(r["RowKey"])
        ]
        # The meta row goes last, so an interrupted purge never leaves a meta without its rows.
        keys.sort(key=lambda k: k == "meta")
        ops: list[Iterable[Any]] = [("delete", {"PartitionKey": pk, "RowKey": k}) for k in keys]
        try:
            for i in range(0, len(ops), MAX_BATCH_OPS):
                self._table.submit_transaction(ops[i : i + MAX_BATCH_OPS])  # type: ignore[arg-type]
        except ResourceNotFoundError:
            pass
        return len(keys)


def decode_key(key: str) -> str:
    return unquote(key)
