"""An in-memory stand-in for `azure.data.tables.TableClient`, with ETags and the service's limits.

It covers exactly what `adapters.state.table_store.StateStore` calls, and refuses anything else
loudly (a filter shape, a keyword, `select`) instead of guessing what the service would do:
`get_entity`, `query_entities`, `create_entity`, `update_entity`, `upsert_entity`,
`delete_entity`, `submit_transaction`.

It starts where the real client's HTTP request would. Entities go in through the SDK's own
serializer (`azure.data.tables._serialize._add_entity_properties`, so a `list` value or an int
past Int32 is the same `TypeError`) and come back through its own deserializer
(`_deserialize._convert_to_entity`), so what a caller gets is a real `TableEntity` whose
`.metadata` holds the `etag` and `timestamp` the way the SDK builds them from a service answer.
Those helpers are private; the SDK version is pinned in constraints.txt and
tests/state/test_memory_tables_contract.py runs the same calls against Azurite, so a change in
them shows up there.

The exceptions are the ones azure-data-tables 12.7 raises for the same service answer (read in
`_table_client.py`, `_error.py`, `_base_client.py` and the generated `_operations.py`):
- `create_entity` re-raises the generated client's error unchanged, whose type comes from the
  generated `error_map` (404 ResourceNotFoundError, 409 ResourceExistsError, else
  HttpResponseError), without an `error_code`;
- `get_entity`, `update_entity`, `upsert_entity` and `delete_entity` go through
  `_process_table_error` -> `_decode_error`, which picks the type from the service's error
  code (UpdateConditionNotSatisfied -> ResourceModifiedError, ResourceNotFound ->
  ResourceNotFoundError, EntityAlreadyExists -> ResourceExistsError, anything else,
  TooManyProperties included, -> HttpResponseError) and sets `error_code`;
  `delete_entity` swallows a 404;
- `submit_transaction` raises ValueError before sending for a second partition or a missing
  key, returns [] for an empty list (the SDK's answer to the service's 400), raises
  `RequestTooLargeError` for a 413 and `TableTransactionError` (a plain-string `error_code`,
  `index` parsed from the "N:" message prefix) for a failed operation.

Limits of the Table service enforced here, Azurite enforcing only some of them (DESIGN.md:
it accepted more than 252 properties, and a 101-operation batch broke the connection):
- https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model
  "Property limitations": up to 255 properties including the 3 system properties
  (PartitionKey, RowKey, Timestamp), so 252 of the caller's own; all of an entity's data at
  most 1 MiB. "Property types": Edm.String is UTF-16 and up to 64 KiB, Edm.Binary up to 64 KiB.
  PartitionKey and RowKey: strings up to 1 KiB. "Characters disallowed in key fields":
  / \\ # ? and the control characters U+0000-U+001F and U+007F-U+009F. "Property names": up to
  255 characters.
- https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions
  one PartitionKey, an entity at most once, at most 100 entities, a payload of at most 4 MiB.
- The entity size is counted with the formula Microsoft published for it ("How the size of an
  entity is calculated in Windows Azure table storage", learn.microsoft.com/archive/blogs/
  avkashchauhan): 4 bytes + 2 x len(PartitionKey + RowKey) + for each property 8 bytes +
  2 x len(name) + its value (string 2 x len + 4, binary len + 4, bool 1, int32 4,
  int64/double/datetime 8, guid 16).
The 4 MiB payload is estimated from the operations' JSON bodies alone (no multipart framing),
so it can only under-count: the fake never refuses a transaction the service would take.

Error codes: the service's own names from `TableErrorCode`; a key with a forbidden character is
`OutOfRangeInput` as the service answers it (Microsoft's support blog "Unexpected response code
for operation", a '?' in a PartitionKey), where Azurite says InvalidInput; both are a 400 and
the same exception type. A batch of more than 100 operations is a `TableTransactionError`
(400, InvalidInput, "0:The batch request operation exceeds the maximum 100 changes per change
set.", Azurite's copy of the service's message in src/table/batch/BatchErrorConstants.ts);
the SDK's own live test `test_batch_too_many_ops` (sdk/tables/azure-data-tables/tests/
test_table_batch.py) expects TableTransactionError from the real service.

Strings compare by code point here; the service compares UTF-16 code units, which orders the
same for every character in the Basic Multilingual Plane (all the store's keys are ASCII).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
)
from azure.core.paging import ItemPaged
from azure.data.tables import (
    RequestTooLargeError,
    TableEntity,
    TableErrorCode,
    TableTransactionError,
    UpdateMode,
)
from azure.data.tables._deserialize import _convert_to_entity
from azure.data.tables._serialize import (
    _add_entity_properties,
    _get_match_condition,
    _parameter_filter_substitution,
    _prepare_key,
)

API_VERSION = "2019-02-02"  # the SDK's default x-ms-version, which the service echoes
MAX_PROPERTIES = 255  # including PartitionKey, RowKey and Timestamp
SYSTEM_PROPERTIES = 3
MAX_VALUE_BYTES = 64 * 1024  # one Edm.String (UTF-16) or Edm.Binary value
MAX_ENTITY_BYTES = 1024 * 1024
MAX_KEY_BYTES = 1024  # PartitionKey / RowKey, UTF-16
MAX_PROPERTY_NAME = 255
MAX_TRANSACTION_OPERATIONS = 100
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024
# The service returns at most 1,000 entities per page of a query.
MAX_PAGE = 1000

_KEYS = ("PartitionKey", "RowKey")
_FORBIDDEN_IN_KEY = re.compile("[/\\\\#?\u0000-\u001f\u007f-\u009f]")
_ODATA_TYPE = "@odata.type"
_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
}
# The generated client's error_map (azure/data/tables/_generated/operations/_operations.py).
_RAW_ERROR_TYPES: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
    304: ResourceNotModifiedError,
}
# `_decode_error`'s choice of type by the service's error code (azure/data/tables/_error.py).
_DECODED_ERROR_TYPES: dict[str, type[HttpResponseError]] = {
    TableErrorCode.CONDITION_NOT_MET.value: ResourceModifiedError,
    TableErrorCode.UPDATE_CONDITION_NOT_SATISFIED.value: ResourceModifiedError,
    TableErrorCode.INVALID_AUTHENTICATION_INFO.value: ClientAuthenticationError,
    TableErrorCode.AUTHENTICATION_FAILED.value: ClientAuthenticationError,
    TableErrorCode.RESOURCE_NOT_FOUND.value: ResourceNotFoundError,
    TableErrorCode.TABLE_NOT_FOUND.value: ResourceNotFoundError,
    TableErrorCode.ENTITY_NOT_FOUND.value: ResourceNotFoundError,
    TableErrorCode.RESOURCE_ALREADY_EXISTS.value: ResourceExistsError,
    TableErrorCode.TABLE_ALREADY_EXISTS.value: ResourceExistsError,
    TableErrorCode.ACCOUNT_ALREADY_EXISTS.value: ResourceExistsError,
    TableErrorCode.ENTITY_ALREADY_EXISTS.value: ResourceExistsError,
}


class UnsupportedByFakeError(Exception):
    """The call is outside what the fake models, so it refuses it rather than guess (a test
    that reaches this uses the real client in a way the fake was never checked against):
    extend the fake, and its contract test against Azurite, first."""


@dataclass(frozen=True)
class ServiceError:
    """What the service answers to a refused request: the status and its error code."""

    status: int
    code: str
    message: str


class _Refused(Exception):
    def __init__(self, answer: ServiceError) -> None:
        super().__init__(answer.message)
        self.answer = answer


def _refuse(status: int, code: TableErrorCode | str, message: str) -> _Refused:
    return _Refused(ServiceError(status, str(getattr(code, "value", code)), message))


def _finish(error: HttpResponseError, answer: ServiceError) -> HttpResponseError:
    # Built without a transport response, so the attributes the response would have set are
    # set here.
    error.status_code = answer.status
    error.reason = _REASONS.get(answer.status, "")
    return error


def _raw_error(answer: ServiceError) -> Exception:
    """The generated client's exception, as `create_entity` re-raises it."""
    error_type = _RAW_ERROR_TYPES.get(answer.status, HttpResponseError)
    reason = _REASONS.get(answer.status, "")
    return _finish(error_type(message=f"Operation returned an invalid status '{reason}'"), answer)


def _decoded_error(answer: ServiceError) -> Exception:
    """`_decode_error`'s exception, as `_process_table_error` raises it."""
    error_type = _DECODED_ERROR_TYPES.get(answer.code, HttpResponseError)
    error = _finish(error_type(message=f"{answer.message}\nErrorCode:{answer.code}"), answer)
    try:
        error.error_code = TableErrorCode(answer.code)  # type: ignore[attr-defined]
    except ValueError:
        error.error_code = answer.code  # type: ignore[attr-defined]
    return error


def _transaction_error(answer: ServiceError, index: int | None) -> Exception:
    """`_batch_send`'s exception: `error_type` given, so `error_code` stays the plain string."""
    error_type = RequestTooLargeError if answer.status == 413 else TableTransactionError
    prefix = "" if index is None else f"{index}:"
    error = _finish(
        error_type(message=f"{prefix}{answer.message}\nErrorCode:{answer.code}"), answer
    )
    error.error_code = answer.code  # type: ignore[attr-defined]
    return error


# ----------------------------------------------------------------------------- limits
def _utf16_bytes(value: str) -> int:
    return len(value.encode("utf-16-le"))


def _value_type(wire: Mapping[str, Any], name: str) -> str:
    annotated = wire.get(name + _ODATA_TYPE)
    if annotated:
        return str(annotated)
    value = wire[name]
    if isinstance(value, bool):
        return "Edm.Boolean"
    if isinstance(value, int):
        return "Edm.Int32"
    if isinstance(value, float):
        return "Edm.Double"
    return "Edm.String"


def _value_bytes(edm_type: str, value: Any) -> int:
    if edm_type == "Edm.String":
        return _utf16_bytes(str(value)) + 4
    if edm_type == "Edm.Binary":
        return _binary_length(value) + 4
    return {"Edm.Boolean": 1, "Edm.Int32": 4, "Edm.Guid": 16}.get(edm_type, 8)


def _binary_length(value: Any) -> int:
    return len(base64.b64decode(str(value)))


def _check_key(name: str, key: Any) -> None:
    if not isinstance(key, str):
        raise _refuse(400, TableErrorCode.INVALID_INPUT, f"{name} must be a string.")
    if _utf16_bytes(key) > MAX_KEY_BYTES:
        raise _refuse(
            400,
            TableErrorCode.OUT_OF_RANGE_INPUT,
            f"{name} is {_utf16_bytes(key)} bytes as UTF-16 (at most {MAX_KEY_BYTES}).",
        )
    if _FORBIDDEN_IN_KEY.search(key):
        raise _refuse(
            400,
            TableErrorCode.OUT_OF_RANGE_INPUT,
            f"{name} {key!r} contains a character not allowed in key fields.",
        )


def _check_entity(wire: Mapping[str, Any]) -> None:
    """The service's limits on one entity (see the module docstring for the sources)."""
    for key_name in ("PartitionKey", "RowKey"):
        if key_name not in wire:
            raise _refuse(
                400,
                TableErrorCode.PROPERTIES_NEED_VALUE,
                "The values are not specified for all properties in the entity.",
            )
        _check_key(key_name, wire[key_name])
    names = [n for n in wire if not n.endswith(_ODATA_TYPE) and n not in _KEYS]
    if len(names) > MAX_PROPERTIES - SYSTEM_PROPERTIES:
        raise _refuse(
            400,
            TableErrorCode.TOO_MANY_PROPERTIES,
            f"The entity has {len(names)} properties besides the system properties "
            f"(at most {MAX_PROPERTIES - SYSTEM_PROPERTIES}).",
        )
    size = 4 + _utf16_bytes(wire["PartitionKey"]) + _utf16_bytes(wire["RowKey"])
    for name in names:
        if len(name) > MAX_PROPERTY_NAME:
            raise _refuse(
                400, TableErrorCode.PROPERTY_NAME_TOO_LONG, f"Property name {name[:40]!r}..."
            )
        edm_type = _value_type(wire, name)
        value_bytes = _value_bytes(edm_type, wire[name])
        if edm_type in ("Edm.String", "Edm.Binary") and value_bytes - 4 > MAX_VALUE_BYTES:
            raise _refuse(
                400,
                TableErrorCode.PROPERTY_VALUE_TOO_LARGE,
                f"The property value exceeds the maximum allowed size (64KB): {name!r} is "
                f"{value_bytes - 4} bytes as {edm_type}.",
            )
        size += 8 + 2 * len(name) + value_bytes
    if size > MAX_ENTITY_BYTES:
        raise _refuse(
            400,
            TableErrorCode.ENTITY_TOO_LARGE,
            f"The entity is {size} bytes (at most {MAX_ENTITY_BYTES}).",
        )


# ----------------------------------------------------------------------------- filters
_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<bad>\S))")
_COMPARE: dict[str, Callable[[str, str], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


@dataclass(frozen=True)
class _Condition:
    key: str  # "PartitionKey" or "RowKey"
    op: str
    value: str

    def holds(self, pk: str, rk: str) -> bool:
        return _COMPARE[self.op](pk if self.key == "PartitionKey" else rk, self.value)


def _parse_filter(text: str) -> list[_Condition]:
    """The filters the store sends, after the SDK's parameter substitution: comparisons of
    PartitionKey / RowKey with string literals, joined by `and`. Anything else is refused."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:  # only trailing whitespace is left
            break
        pos = match.end()
        kind = match.lastgroup or "bad"
        tokens.append((kind, match.group(kind)))
    conditions: list[_Condition] = []
    i = 0
    while True:
        part = tokens[i : i + 3]
        if (
            len(part) != 3
            or part[0] != ("word", part[0][1])
            or part[0][1] not in _KEYS
            or part[1][0] != "word"
            or part[1][1] not in _COMPARE
            or part[2][0] != "str"
        ):
            raise UnsupportedByFakeError(
                f"filter {text!r}: the fake understands only PartitionKey/RowKey compared with "
                "string literals (eq ne gt ge lt le), joined by 'and'"
            )
        conditions.append(_Condition(part[0][1], part[1][1], part[2][1][1:-1].replace("''", "'")))
        i += 3
        if i == len(tokens):
            return conditions
        if tokens[i] != ("word", "and"):
            raise UnsupportedByFakeError(f"filter {text!r}: only 'and' joins comparisons here")
        i += 1


# ----------------------------------------------------------------------------- the table
@dataclass
class _Page:
    entities: list[TableEntity]
    continuation: tuple[str, str] | None  # the last key shown, when more follow


@dataclass
class _Row:
    wire: dict[str, Any]  # the properties as the request body carried them, keys included
    timestamp: str
    etag: str


def _no_kwargs(operation: str, kwargs: Mapping[str, Any]) -> None:
    if kwargs:
        raise UnsupportedByFakeError(f"{operation}: keyword(s) {sorted(kwargs)} not modelled")


def _wire(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The request body the SDK would send, as the service would parse it. The service owns
    Timestamp, so a Timestamp the caller passes in is not stored."""
    body = json.loads(json.dumps(_add_entity_properties(entity)))
    body.pop("Timestamp", None)
    body.pop("Timestamp" + _ODATA_TYPE, None)
    return body


def _existing(rows: dict[tuple[str, str], _Row], key: tuple[str, str], etag: str | None) -> _Row:
    """The row an update or delete acts on: 404 when there is none, 412 when `etag` (If-Match)
    is not the row's."""
    current = rows.get(key)
    if current is None:
        raise _refuse(
            404, TableErrorCode.RESOURCE_NOT_FOUND, "The specified resource does not exist."
        )
    if etag is not None and etag != current.etag:
        raise _refuse(
            412,
            TableErrorCode.UPDATE_CONDITION_NOT_SATISFIED,
            "The update condition specified in the request was not satisfied.",
        )
    return current


class MemoryTableClient:
    """One table, in memory, behind the methods of `TableClient` that `StateStore` uses.

    Thread-safe: every call holds one lock, so a read-modify-write from two threads can
    interleave between calls (and lose on the ETag) exactly as it can against the service.
    """

    def __init__(self, table_name: str = "memorystate") -> None:
        self.table_name = table_name
        self._rows: dict[tuple[str, str], _Row] = {}
        self._lock = threading.RLock()
        self._last_ticks = 0

    # ------------------------------------------------------------------------- helpers
    def _stamp(self) -> tuple[str, str]:
        """A fresh Timestamp (100 ns ticks, strictly increasing) and the weak ETag the service
        derives from it, as Azurite and the service format them."""
        ticks = max(time.time_ns() // 100, self._last_ticks + 1)
        self._last_ticks = ticks
        seconds, fraction = divmod(ticks, 10**7)
        stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        timestamp = f"{stamp}.{fraction:07d}Z"
        return timestamp, "W/\"datetime'" + quote(timestamp) + "'\""

    def _entity(self, row: _Row) -> TableEntity:
        body = {
            "odata.etag": row.etag,
            **copy.deepcopy(row.wire),
            "Timestamp": row.timestamp,
            "Timestamp" + _ODATA_TYPE: "Edm.DateTime",
        }
        return _convert_to_entity(body)

    @staticmethod
    def _answer(row: _Row) -> dict[str, Any]:
        return {
            "date": datetime.now(UTC).replace(microsecond=0),
            "etag": row.etag,
            "version": API_VERSION,
        }

    def _write(
        self, rows: dict[tuple[str, str], _Row], key: tuple[str, str], wire: dict[str, Any]
    ) -> _Row:
        timestamp, etag = self._stamp()
        row = _Row(wire=wire, timestamp=timestamp, etag=etag)
        rows[key] = row
        return row

    @staticmethod
    def _key(wire: Mapping[str, Any]) -> tuple[str, str]:
        return str(wire["PartitionKey"]), str(wire["RowKey"])

    @staticmethod
    def _merged(current: _Row, wire: dict[str, Any], mode: UpdateMode) -> dict[str, Any]:
        if mode == UpdateMode.REPLACE:
            return wire
        if mode == UpdateMode.MERGE:
            merged = dict(current.wire)
            for name in wire:
                if not name.endswith(_ODATA_TYPE):
                    merged.pop(name + _ODATA_TYPE, None)
            merged.update(wire)
            return merged
        raise ValueError(f"Mode type '{mode}' is not supported.")

    # The service's semantics of each operation, on `rows` (the table, or a transaction's
    # working copy). Each raises _Refused with the service's answer.
    def _do_create(self, rows: dict[tuple[str, str], _Row], wire: dict[str, Any]) -> _Row:
        _check_entity(wire)
        key = self._key(wire)
        if key in rows:
            raise _refuse(
                409, TableErrorCode.ENTITY_ALREADY_EXISTS, "The specified entity already exists."
            )
        return self._write(rows, key, wire)

    def _do_update(
        self,
        rows: dict[tuple[str, str], _Row],
        wire: dict[str, Any],
        mode: UpdateMode,
        etag: str | None,
    ) -> _Row:
        # A key no entity may have is a 400, not a 404 (Azurite checks it first as well).
        _check_key("PartitionKey", wire.get("PartitionKey"))
        _check_key("RowKey", wire.get("RowKey"))
        key = self._key(wire)
        current = _existing(rows, key, etag)
        new = self._merged(current, wire, mode)
        _check_entity(new)
        return self._write(rows, key, new)

    def _do_upsert(
        self, rows: dict[tuple[str, str], _Row], wire: dict[str, Any], mode: UpdateMode
    ) -> _Row:
        key = self._key(wire)
        current = rows.get(key)
        new = wire if current is None else self._merged(current, wire, mode)
        _check_entity(new)
        return self._write(rows, key, new)

    def _do_delete(
        self, rows: dict[tuple[str, str], _Row], key: tuple[str, str], etag: str | None
    ) -> None:
        _existing(rows, key, etag)
        del rows[key]

    # ------------------------------------------------------------------------- TableClient
    def get_entity(
        self, partition_key: str, row_key: str, *, select: Any = None, **kwargs: Any
    ) -> TableEntity:
        if select is not None:
            raise UnsupportedByFakeError("get_entity(select=...) is not modelled")
        _no_kwargs("get_entity", kwargs)
        _prepare_key(partition_key)  # the SDK's TypeError for a key that is not a str
        _prepare_key(row_key)
        with self._lock:
            row = self._rows.get((partition_key, row_key))
            if row is None:
                raise _decoded_error(
                    ServiceError(
                        404,
                        TableErrorCode.RESOURCE_NOT_FOUND.value,
                        "The specified resource does not exist.",
                    )
                )
            return self._entity(row)

    def query_entities(
        self,
        query_filter: str,
        *,
        results_per_page: int | None = None,
        select: Any = None,
        parameters: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ItemPaged[TableEntity]:
        if select is not None:
            raise UnsupportedByFakeError("query_entities(select=...) is not modelled")
        _no_kwargs("query_entities", kwargs)
        # The SDK substitutes the parameters before anything is sent (a missing one is its
        # KeyError); the service then sees the literal filter, and so does the fake.
        conditions = _parse_filter(_parameter_filter_substitution(parameters, query_filter))
        page_size = min(results_per_page or MAX_PAGE, MAX_PAGE)

        # Like the service, each page is read when it is fetched and continues after the last
        # key of the previous page; writes between pages are seen by the later pages.
        def get_next(token: tuple[str, str] | None) -> _Page:
            with self._lock:
                keys = sorted(
                    k
                    for k in self._rows
                    if (token is None or k > token) and all(c.holds(*k) for c in conditions)
                )
                shown = keys[:page_size]
                return _Page(
                    entities=[self._entity(self._rows[k]) for k in shown],
                    continuation=shown[-1] if len(keys) > page_size else None,
                )

        def extract_data(page: _Page) -> tuple[tuple[str, str] | None, Iterator[TableEntity]]:
            return page.continuation, iter(page.entities)

        return ItemPaged(get_next, extract_data)

    def create_entity(self, entity: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
        _no_kwargs("create_entity", kwargs)
        wire = _wire(entity)
        with self._lock:
            try:
                row = self._do_create(self._rows, wire)
            except _Refused as refused:
                if refused.answer.code == TableErrorCode.PROPERTIES_NEED_VALUE.value:
                    # `_validate_key_values` turns the service's PropertiesNeedValue into this.
                    missing = "PartitionKey" if "PartitionKey" not in wire else "RowKey"
                    raise ValueError(f"{missing} must be present in an entity") from None
                raise _raw_error(refused.answer) from None
            return {
                **self._answer(row),
                "preference_applied": "return-content",
                "content": dict(row.wire),
            }

    def update_entity(
        self,
        entity: Mapping[str, Any],
        mode: UpdateMode = UpdateMode.MERGE,
        *,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        _no_kwargs("update_entity", kwargs)
        if match_condition and not etag and isinstance(entity, TableEntity):
            etag = entity.metadata.get("etag")
        match_condition = _get_match_condition(
            etag=etag, match_condition=match_condition or MatchConditions.Unconditionally
        )
        wire = _wire(entity)
        _prepare_key(wire["PartitionKey"])
        _prepare_key(wire["RowKey"])
        with self._lock:
            try:
                row = self._do_update(
                    self._rows,
                    wire,
                    mode,
                    etag if match_condition == MatchConditions.IfNotModified else None,
                )
            except _Refused as refused:
                raise _decoded_error(refused.answer) from None
            return self._answer(row)

    def upsert_entity(
        self, entity: Mapping[str, Any], mode: UpdateMode = UpdateMode.MERGE, **kwargs: Any
    ) -> dict[str, Any]:
        _no_kwargs("upsert_entity", kwargs)
        if mode not in (UpdateMode.MERGE, UpdateMode.REPLACE):
            raise ValueError(
                f"Update mode {mode} is not supported. For a list of supported modes see the "
                "UpdateMode enum."
            )
        wire = _wire(entity)
        _prepare_key(wire["PartitionKey"])
        _prepare_key(wire["RowKey"])
        with self._lock:
            try:
                row = self._do_upsert(self._rows, wire, mode)
            except _Refused as refused:
                raise _decoded_error(refused.answer) from None
            return self._answer(row)

    def delete_entity(self, *args: Any, **kwargs: Any) -> None:
        # The SDK's two call shapes: (partition_key, row_key) or (entity), positional or named.
        # ("" is a valid key, so absence is tested with `in`, not truthiness.)
        entity = kwargs.pop("entity") if "entity" in kwargs else None
        if entity is None and len(args) == 1:
            entity = args[0]
        if isinstance(entity, Mapping):
            partition_key, row_key = entity["PartitionKey"], entity["RowKey"]
        else:
            named = [kwargs.pop(k) for k in ("partition_key", "row_key") if k in kwargs]
            partition_key, row_key = [*args, *named]
        match_condition = kwargs.pop("match_condition", None)
        etag = kwargs.pop("etag", None)
        _no_kwargs("delete_entity", kwargs)
        if match_condition and not etag and isinstance(entity, TableEntity):
            etag = entity.metadata.get("etag")
        match_condition = _get_match_condition(
            etag=etag, match_condition=match_condition or MatchConditions.Unconditionally
        )
        _prepare_key(partition_key)
        _prepare_key(row_key)
        with self._lock:
            try:
                self._do_delete(
                    self._rows,
                    (partition_key, row_key),
                    etag if match_condition == MatchConditions.IfNotModified else None,
                )
            except _Refused as refused:
                if refused.answer.status == 404:
                    return  # the SDK's delete_entity swallows a 404
                raise _decoded_error(refused.answer) from None

    def submit_transaction(
        self, operations: Iterable[Any], **kwargs: Any
    ) -> list[Mapping[str, Any]]:
        _no_kwargs("submit_transaction", kwargs)
        planned = [self._plan(operation) for operation in self._operations(operations)]
        if not planned:
            return []  # the service answers 400 and the SDK returns [] for an empty batch
        if len(planned) > MAX_TRANSACTION_OPERATIONS:
            raise _transaction_error(
                ServiceError(
                    400,
                    TableErrorCode.INVALID_INPUT.value,
                    "The batch request operation exceeds the maximum 100 changes per change set.",
                ),
                0,
            )
        payload = sum(len(json.dumps(p[1]).encode()) for p in planned)
        if payload > MAX_TRANSACTION_BYTES:
            raise _transaction_error(
                ServiceError(
                    413,
                    TableErrorCode.REQUEST_BODY_TOO_LARGE.value,
                    "The request body is too large and exceeds the maximum permissible limit.",
                ),
                None,
            )
        with self._lock:
            working = dict(self._rows)
            seen: set[tuple[str, str]] = set()
            results: list[Mapping[str, Any]] = []
            for index, (kind, wire, mode, etag) in enumerate(planned):
                key = self._key(wire)
                try:
                    if key in seen:
                        raise _refuse(
                            400,
                            TableErrorCode.INVALID_DUPLICATE_ROW,
                            f"A command with RowKey '{key[1]}' is already present in the batch. "
                            "An entity can appear only once in a batch.",
                        )
                    seen.add(key)
                    if kind == "create":
                        results.append({"etag": self._do_create(working, wire).etag})
                    elif kind == "update":
                        results.append({"etag": self._do_update(working, wire, mode, etag).etag})
                    elif kind == "upsert":
                        results.append({"etag": self._do_upsert(working, wire, mode).etag})
                    else:
                        self._do_delete(working, key, etag)
                        results.append({})
                except _Refused as refused:
                    raise _transaction_error(refused.answer, index) from None
            # All or nothing: the table changes only once every operation has succeeded.
            self._rows = working
            return results

    # ------------------------------------------------------------------------- transactions
    @staticmethod
    def _operations(operations: Iterable[Any]) -> Iterator[tuple[str, Mapping[str, Any], dict]]:
        partition: str | None = None
        for operation in operations:
            if len(operation) == 3:
                kind, entity, options = operation
            else:
                kind, entity, options = operation[0], operation[1], {}
            name = kind.lower()  # TransactionOperation is a str enum; the SDK lowercases it
            if name not in ("create", "update", "upsert", "delete"):
                raise ValueError(f"Unrecognized operation: {kind}")
            # TableBatchOperations._verify_partition_key, before anything is sent.
            if "PartitionKey" not in entity or "RowKey" not in entity:
                raise ValueError("PartitionKey and/or RowKey were not provided in entity")
            if partition is None:
                partition = entity["PartitionKey"]
            elif entity["PartitionKey"] != partition:
                raise ValueError("Partition Keys in the batch must all be the same.")
            yield name, entity, dict(options)

    @staticmethod
    def _plan(
        operation: tuple[str, Mapping[str, Any], dict],
    ) -> tuple[str, dict[str, Any], UpdateMode, str | None]:
        """One operation as TableBatchOperations builds its request: the body, the mode, and
        the If-Match ETag (None for unconditional)."""
        kind, entity, options = operation
        mode = options.pop("mode", UpdateMode.MERGE)
        etag = options.pop("etag", None)
        match_condition = options.pop("match_condition", None)
        _no_kwargs(f"transaction {kind}", options)
        if kind == "create":
            if etag is not None or match_condition is not None:
                raise UnsupportedByFakeError("a create with an ETag condition is not modelled")
            return kind, _wire(entity), mode, None
        if kind == "upsert":
            if mode not in (UpdateMode.MERGE, UpdateMode.REPLACE):
                raise ValueError(f"Mode type '{mode}' is not supported.")
            return kind, _wire(entity), mode, None
        if kind == "delete" and match_condition and not etag and isinstance(entity, TableEntity):
            # `delete` looks at the caller's TableEntity for its ETag; `update` checks the
            # already-serialized dict, so it never finds one (azure/data/tables/_table_batch.py).
            etag = entity.metadata.get("etag")
        condition = _get_match_condition(
            etag=etag, match_condition=match_condition or MatchConditions.Unconditionally
        )
        if_match = etag if condition == MatchConditions.IfNotModified else None
        if kind == "delete":
            keys = {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"]}
            return kind, keys, mode, if_match
        if mode not in (UpdateMode.MERGE, UpdateMode.REPLACE):
            raise ValueError(f"Mode type '{mode}' is not supported.")
        return kind, _wire(entity), mode, if_match
