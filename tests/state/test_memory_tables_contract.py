"""The in-memory TableClient against a real table on Azurite: same calls, same answers.

Each test takes `table` (tests/state/conftest.py), so it runs once on
`tests.fakes.memory_tables.MemoryTableClient` and once on `azure.data.tables.TableClient` talking
to Azurite, with the same assertions: the same values and metadata back, the same exception
types, status codes, error codes and transaction indexes. A fake that drifts from the client and
the emulator fails here, not in a slow end-to-end run.

Some of the Table service's limits are not enforced by Azurite (it stores 300 properties, a
1.2 MiB entity and 255+-character property names, and a 101-operation batch breaks the
connection instead of being refused); those are tested on the fake alone, at the bottom, and
`test_azurite_does_not_enforce` pins down that Azurite really does let each of them through, so
the day it starts enforcing one, that case can move into the contract.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import (
    EdmType,
    EntityProperty,
    RequestTooLargeError,
    TableClient,
    TableEntity,
    TableErrorCode,
    TableTransactionError,
    UpdateMode,
)
from azure.data.tables._deserialize import TablesEntityDatetime

from tests.fakes.memory_tables import MemoryTableClient, UnsupportedByFakeError

Outcome = tuple[Any, ...]


def outcome(call: Callable[[], Any]) -> Outcome:
    """What a call did, in the terms the store reacts to: ("ok",) or the exception's type,
    status code, error code and (for a transaction) the failing operation's index."""
    try:
        call()
    except Exception as error:
        return (
            type(error),
            getattr(error, "status_code", None),
            getattr(error, "error_code", None),
            getattr(error, "index", None),
        )
    return ("ok",)


def rows(table: TableClient, pk: str) -> dict[str, dict[str, Any]]:
    return {
        e["RowKey"]: dict(e)
        for e in table.query_entities("PartitionKey eq @pk", parameters={"pk": pk})
    }


NOT_FOUND = (ResourceNotFoundError, 404, TableErrorCode.RESOURCE_NOT_FOUND, None)
MODIFIED = (ResourceModifiedError, 412, TableErrorCode.UPDATE_CONDITION_NOT_SATISFIED, None)
# create_entity re-raises the generated client's error, which carries no error_code.
EXISTS_ON_CREATE = (ResourceExistsError, 409, None, None)
BAD_REQUEST_ON_CREATE = (HttpResponseError, 400, None, None)


# ----------------------------------------------------------------------------- entities
def test_values_and_metadata_round_trip(table: TableClient) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    answer = table.create_entity(
        {
            "PartitionKey": "p",
            "RowKey": "r",
            "text": "héllo",
            "count": -7,
            "max32": 2**31 - 1,
            "price": 0.25,
            "whole": 3.0,  # a double, even when it has no fraction
            "flag": True,
            "blob": b"\x00\x01\xff",
            "when": when,
            "id": uuid.UUID(int=5),
            "big": EntityProperty(2**40, EdmType.INT64),
            "absent": None,  # the SDK drops None: not stored at all
        }
    )
    entity = table.get_entity("p", "r")

    assert isinstance(entity, TableEntity)
    assert dict(entity) == {
        "PartitionKey": "p",
        "RowKey": "r",
        "text": "héllo",
        "count": -7,
        "max32": 2**31 - 1,
        "price": 0.25,
        "whole": 3.0,
        "flag": True,
        "blob": b"\x00\x01\xff",
        "when": when,
        "id": uuid.UUID(int=5),
        "big": EntityProperty(2**40, EdmType.INT64),
    }
    assert isinstance(entity["whole"], float)
    assert isinstance(entity["when"], TablesEntityDatetime)
    # The service owns Timestamp: it is metadata, not a property; the ETag is the weak
    # datetime ETag the service derives from it, and the one create_entity answered with.
    etag, timestamp = entity.metadata["etag"], entity.metadata["timestamp"]
    assert isinstance(etag, str) and etag.startswith("W/\"datetime'")
    assert etag == answer["etag"]
    assert isinstance(timestamp, datetime) and timestamp.tzinfo is not None
    assert "Timestamp" not in entity


def test_client_side_refusals_are_the_sdks(table: TableClient) -> None:
    # Raised by the SDK before anything is sent, so the fake must raise the same.
    assert (
        outcome(lambda: table.create_entity({"PartitionKey": "p", "RowKey": "l", "v": [1]}))[0]
        is TypeError
    )
    assert (
        outcome(lambda: table.create_entity({"PartitionKey": "p", "RowKey": "i", "v": 2**31}))[0]
        is TypeError
    )
    assert (
        outcome(
            lambda: table.update_entity(
                {"PartitionKey": "p", "RowKey": "x"}, match_condition=MatchConditions.IfNotModified
            )
        )[0]
        is ValueError
    )
    assert rows(table, "p") == {}


def test_create_get_and_their_errors(table: TableClient) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "a", "v": 1})
    assert outcome(lambda: table.create_entity({"PartitionKey": "p", "RowKey": "a", "v": 2})) == (
        EXISTS_ON_CREATE
    )
    assert table.get_entity("p", "a")["v"] == 1
    assert outcome(lambda: table.get_entity("p", "missing")) == NOT_FOUND
    # Empty keys are valid keys.
    table.create_entity({"PartitionKey": "", "RowKey": ""})
    assert dict(table.get_entity("", "")) == {"PartitionKey": "", "RowKey": ""}
    table.delete_entity("", "")
    assert outcome(lambda: table.get_entity("", "")) == NOT_FOUND


def test_update_replace_and_merge(table: TableClient) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "a", "keep": "k", "v": 1})
    table.update_entity({"PartitionKey": "p", "RowKey": "a", "v": 2}, mode=UpdateMode.MERGE)
    assert dict(table.get_entity("p", "a")) == {
        "PartitionKey": "p",
        "RowKey": "a",
        "keep": "k",
        "v": 2,
    }
    # Merging a value of another type replaces the property's type as well.
    table.update_entity({"PartitionKey": "p", "RowKey": "a", "v": "two"}, mode=UpdateMode.MERGE)
    assert table.get_entity("p", "a")["v"] == "two"
    table.update_entity({"PartitionKey": "p", "RowKey": "a", "v": 3}, mode=UpdateMode.REPLACE)
    assert dict(table.get_entity("p", "a")) == {"PartitionKey": "p", "RowKey": "a", "v": 3}
    for mode in (UpdateMode.MERGE, UpdateMode.REPLACE):
        assert outcome(
            lambda mode=mode: table.update_entity({"PartitionKey": "p", "RowKey": "zz"}, mode=mode)
        ) == (NOT_FOUND)


def test_etags_guard_updates_and_deletes(table: TableClient) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "a", "v": 1})
    first = table.get_entity("p", "a")
    etag = first.metadata["etag"]

    answer = table.update_entity(
        {"PartitionKey": "p", "RowKey": "a", "v": 2},
        mode=UpdateMode.REPLACE,
        etag=etag,
        match_condition=MatchConditions.IfNotModified,
    )
    second = table.get_entity("p", "a")
    assert second.metadata["etag"] == answer["etag"] != etag

    # The same stale ETag now loses, in both modes, and changes nothing.
    for mode in (UpdateMode.REPLACE, UpdateMode.MERGE):
        assert outcome(
            lambda mode=mode: table.update_entity(
                {"PartitionKey": "p", "RowKey": "a", "v": 9},
                mode=mode,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        ) == (MODIFIED)
    assert table.get_entity("p", "a")["v"] == 2

    # The SDK takes the ETag of a TableEntity passed in without one.
    stale = table.get_entity("p", "a")
    table.upsert_entity({"PartitionKey": "p", "RowKey": "a", "v": 3})
    stale["v"] = 4
    assert outcome(
        lambda: table.update_entity(stale, match_condition=MatchConditions.IfNotModified)
    ) == (MODIFIED)

    # A missing entity is a 404 even with an ETag.
    assert outcome(
        lambda: table.update_entity(
            {"PartitionKey": "p", "RowKey": "zz"},
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )
    ) == (NOT_FOUND)

    assert outcome(
        lambda: table.delete_entity(
            "p", "a", etag=etag, match_condition=MatchConditions.IfNotModified
        )
    ) == (MODIFIED)
    current = table.get_entity("p", "a").metadata["etag"]
    table.delete_entity("p", "a", etag=current, match_condition=MatchConditions.IfNotModified)
    assert outcome(lambda: table.get_entity("p", "a")) == NOT_FOUND
    # Deleting what is not there is not an error (the SDK swallows the 404).
    assert table.delete_entity("p", "a") is None
    assert table.delete_entity(entity={"PartitionKey": "p", "RowKey": "b"}) is None


def test_upsert_creates_merges_and_replaces(table: TableClient) -> None:
    table.upsert_entity({"PartitionKey": "p", "RowKey": "a", "x": 1})
    table.upsert_entity({"PartitionKey": "p", "RowKey": "a", "y": 2})  # MERGE by default
    assert dict(table.get_entity("p", "a")) == {"PartitionKey": "p", "RowKey": "a", "x": 1, "y": 2}
    table.upsert_entity({"PartitionKey": "p", "RowKey": "a", "z": 3}, mode=UpdateMode.REPLACE)
    assert dict(table.get_entity("p", "a")) == {"PartitionKey": "p", "RowKey": "a", "z": 3}


# ----------------------------------------------------------------------------- queries
def test_the_stores_query_shapes(table: TableClient) -> None:
    for pk, rk in [
        ("eval-1", "evaluation"),
        ("eval-1", "task-b"),
        ("eval-1", "task-a"),
        ("eval-1", "task."),  # just past the "task-" range
        ("eval-1", "shard-000"),
        ("eval-2", "task-a"),
        ("o'brien", "x y"),  # a quote in a parameter, a space in a key
        ("evals", "0002"),
        ("evals", "0001"),
    ]:
        table.create_entity({"PartitionKey": pk, "RowKey": rk})

    def keys(query_filter: str, **kwargs: Any) -> list[tuple[str, str]]:
        found = table.query_entities(query_filter, **kwargs)
        return [(e["PartitionKey"], e["RowKey"]) for e in found]

    # StateStore._query: a whole partition, in RowKey order ...
    assert keys("PartitionKey eq @pk", parameters={"pk": "eval-1"}) == [
        ("eval-1", "evaluation"),
        ("eval-1", "shard-000"),
        ("eval-1", "task-a"),
        ("eval-1", "task-b"),
        ("eval-1", "task."),
    ]
    # ... or the rows of one RowKey prefix.
    assert keys(
        "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
        parameters={"pk": "eval-1", "lo": "task-", "hi": "task."},
    ) == [("eval-1", "task-a"), ("eval-1", "task-b")]
    assert keys("PartitionKey eq @pk", parameters={"pk": "o'brien"}) == [("o'brien", "x y")]
    # StateStore.list_evaluations: a literal filter, paged.
    pages = table.query_entities("PartitionKey eq 'evals'", results_per_page=1).by_page()
    assert [[e["RowKey"] for e in page] for page in pages] == [["0001"], ["0002"]]
    assert keys("PartitionKey eq @pk", parameters={"pk": "nothing"}) == []


def test_pages_of_a_query(table: TableClient) -> None:
    table.submit_transaction(
        [("create", {"PartitionKey": "p", "RowKey": f"{i:02d}"}) for i in range(7)]
    )
    pages = table.query_entities(
        "PartitionKey eq @pk", parameters={"pk": "p"}, results_per_page=3
    ).by_page()
    assert [len(list(page)) for page in pages] == [3, 3, 1]


# ----------------------------------------------------------------------------- transactions
def test_transaction_of_every_operation(table: TableClient) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "upd", "a": 1, "b": 1})
    table.create_entity({"PartitionKey": "p", "RowKey": "del"})
    etag = table.get_entity("p", "upd").metadata["etag"]

    results = table.submit_transaction(
        [
            ("create", {"PartitionKey": "p", "RowKey": "new", "v": 1}),
            (
                "upsert",
                {"PartitionKey": "p", "RowKey": "ups", "v": 2},
                {"mode": UpdateMode.REPLACE},
            ),
            (
                "update",
                {"PartitionKey": "p", "RowKey": "upd", "b": 2},
                {
                    "mode": UpdateMode.MERGE,
                    "etag": etag,
                    "match_condition": MatchConditions.IfNotModified,
                },
            ),
            ("delete", {"PartitionKey": "p", "RowKey": "del"}),
        ]
    )

    assert [sorted(r) for r in results] == [["etag"], ["etag"], ["etag"], []]
    assert rows(table, "p") == {
        "new": {"PartitionKey": "p", "RowKey": "new", "v": 1},
        "ups": {"PartitionKey": "p", "RowKey": "ups", "v": 2},
        "upd": {"PartitionKey": "p", "RowKey": "upd", "a": 1, "b": 2},
    }
    assert table.get_entity("p", "new").metadata["etag"] == results[0]["etag"]


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        (
            ("create", {"PartitionKey": "p", "RowKey": "old"}),
            (TableTransactionError, 409, "EntityAlreadyExists", 1),
        ),
        (
            ("update", {"PartitionKey": "p", "RowKey": "missing"}),
            (TableTransactionError, 404, "ResourceNotFound", 1),
        ),
        (
            ("delete", {"PartitionKey": "p", "RowKey": "missing"}),
            (TableTransactionError, 404, "ResourceNotFound", 1),
        ),
        (
            ("upsert", {"PartitionKey": "p", "RowKey": "first"}),
            (TableTransactionError, 400, "InvalidDuplicateRow", 1),
        ),
        (
            ("upsert", {"PartitionKey": "p", "RowKey": "big", "v": "x" * 32_769}),
            (TableTransactionError, 400, "PropertyValueTooLarge", 1),
        ),
    ],
    ids=["exists", "update-missing", "delete-missing", "duplicate-row", "value-too-large"],
)
def test_a_failed_operation_fails_the_whole_transaction(
    table: TableClient, second: tuple[str, dict[str, Any]], expected: Outcome
) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "old", "v": 1})
    before = rows(table, "p")
    result = outcome(
        lambda: table.submit_transaction(
            [("upsert", {"PartitionKey": "p", "RowKey": "first"}), second]
        )
    )
    assert result == expected
    assert rows(table, "p") == before  # nothing of it was applied


def test_a_stale_etag_fails_a_transaction(table: TableClient) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "a", "v": 1})
    etag = table.get_entity("p", "a").metadata["etag"]
    table.upsert_entity({"PartitionKey": "p", "RowKey": "a", "v": 2})
    update = (
        "update",
        {"PartitionKey": "p", "RowKey": "a", "v": 3},
        {
            "mode": UpdateMode.REPLACE,
            "etag": etag,
            "match_condition": MatchConditions.IfNotModified,
        },
    )
    assert outcome(lambda: table.submit_transaction([update])) == (
        TableTransactionError,
        412,
        "UpdateConditionNotSatisfied",
        0,
    )
    assert table.get_entity("p", "a")["v"] == 2


def test_a_transaction_spans_one_partition(table: TableClient) -> None:
    # Refused by the SDK before anything is sent.
    operations = [
        ("upsert", {"PartitionKey": "p", "RowKey": "a"}),
        ("upsert", {"PartitionKey": "q", "RowKey": "a"}),
    ]
    assert outcome(lambda: table.submit_transaction(operations))[0] is ValueError
    assert rows(table, "p") == {} and rows(table, "q") == {}


def test_a_transaction_payload_is_at_most_4_mib(table: TableClient) -> None:
    # Each entity is about 0.9 MiB as the service counts it (UTF-16) and 0.45 MB of JSON: ten
    # of them pass 4 MiB of payload, seven do not.
    def entity(i: int) -> dict[str, Any]:
        return {
            "PartitionKey": "p",
            "RowKey": f"r{i}",
            **{f"c{j}": "y" * 30_000 for j in range(15)},
        }

    assert outcome(
        lambda: table.submit_transaction([("upsert", entity(i)) for i in range(10)])
    ) == (
        RequestTooLargeError,
        413,
        "RequestBodyTooLarge",
        0,
    )
    assert rows(table, "p") == {}
    table.submit_transaction([("upsert", entity(i)) for i in range(7)])
    assert len(rows(table, "p")) == 7


# ----------------------------------------------------------------------------- limits both enforce
def test_key_rules(table: TableClient) -> None:
    # Understanding the Table service data model: keys up to 1 KiB (UTF-16: 512 characters),
    # without / \ # ? or control characters.
    table.create_entity({"PartitionKey": "p", "RowKey": "k" * 512})
    assert outcome(lambda: table.create_entity({"PartitionKey": "p", "RowKey": "k" * 513})) == (
        BAD_REQUEST_ON_CREATE
    )
    assert outcome(lambda: table.create_entity({"PartitionKey": "p" * 513, "RowKey": "r"})) == (
        BAD_REQUEST_ON_CREATE
    )
    for bad in ["a/b", "a\\b", "a#b", "a?b", "a\tb", "a\nb", "a\x00b", "a\x7fb", "a\x9fb"]:
        row = {"PartitionKey": "p", "RowKey": bad}
        assert outcome(lambda row=row: table.create_entity(row)) == BAD_REQUEST_ON_CREATE, row
        # In a transaction, an update and an upsert it is a 400 as well; the error code
        # differs (the service's OutOfRangeInput in the fake, InvalidInput in Azurite).
        for operation in ("create", "upsert"):
            assert outcome(
                lambda row=row, operation=operation: table.submit_transaction([(operation, row)])
            )[:2] == (TableTransactionError, 400), row
        if bad == "a/b":
            continue  # in a request URL, Azurite answers 500 (see the fake-only test below)
        for call in (table.update_entity, table.upsert_entity):
            assert outcome(lambda row=row, call=call: call(row))[:2] == (HttpResponseError, 400)
    assert list(rows(table, "p")) == ["k" * 512]


def test_a_string_or_binary_value_is_at_most_64_kib(table: TableClient) -> None:
    # Edm.String is UTF-16: 32,768 characters of the Basic Multilingual Plane, fewer of others.
    table.create_entity({"PartitionKey": "p", "RowKey": "s", "v": "é" * 32_768})
    table.create_entity({"PartitionKey": "p", "RowKey": "b", "v": b"x" * 65_536})
    for rk, value in [("s2", "x" * 32_769), ("s3", "😀" * 16_385), ("b2", b"x" * 65_537)]:
        assert outcome(
            lambda rk=rk, value=value: table.create_entity(
                {"PartitionKey": "p", "RowKey": rk, "v": value}
            )
        ) == (BAD_REQUEST_ON_CREATE), rk
    too_large = (HttpResponseError, 400, TableErrorCode.PROPERTY_VALUE_TOO_LARGE, None)
    big = {"PartitionKey": "p", "RowKey": "s", "v": "x" * 32_769}
    assert outcome(lambda: table.upsert_entity(big)) == too_large
    assert outcome(lambda: table.update_entity(big)) == too_large
    assert len(table.get_entity("p", "s")["v"]) == 32_768


# ----------------------------------------------------------------------------- fake only
# Azurite does not enforce these limits of the service, so only the fake is tested.
AZURITE_DOES_NOT_ENFORCE: dict[str, Callable[[TableClient], Any]] = {
    "253 properties": lambda t: t.create_entity(
        {"PartitionKey": "p", "RowKey": "many", **{f"p{i}": i for i in range(253)}}
    ),
    "1.2 MiB entity": lambda t: t.create_entity(
        {"PartitionKey": "p", "RowKey": "huge", **{f"c{i}": "y" * 20_000 for i in range(30)}}
    ),
    "256-character property name": lambda t: t.create_entity(
        {"PartitionKey": "p", "RowKey": "name", "n" * 256: 1}
    ),
}


@pytest.mark.azurite
@pytest.mark.parametrize("case", sorted(AZURITE_DOES_NOT_ENFORCE))
def test_azurite_does_not_enforce(azurite_connection_string: str, case: str) -> None:
    """Why the cases below are fake-only: Azurite stores what the service refuses."""
    table = TableClient.from_connection_string(
        azurite_connection_string, f"t{uuid.uuid4().hex[:20]}"
    )
    table.create_table()
    try:
        AZURITE_DOES_NOT_ENFORCE[case](table)
    finally:
        table.delete_table()


@pytest.mark.parametrize("case", sorted(AZURITE_DOES_NOT_ENFORCE))
def test_fake_enforces_what_azurite_does_not(case: str) -> None:
    fake = MemoryTableClient()
    assert outcome(lambda: AZURITE_DOES_NOT_ENFORCE[case](fake)) == BAD_REQUEST_ON_CREATE
    assert rows(fake, "p") == {}


def test_fake_property_count_includes_the_system_properties() -> None:
    # Understanding the Table service data model, "Property limitations": 255 properties
    # including PartitionKey, RowKey and Timestamp, so 252 of the caller's own.
    fake = MemoryTableClient()
    fake.create_entity({"PartitionKey": "p", "RowKey": "ok", **{f"p{i}": i for i in range(252)}})
    assert len(fake.get_entity("p", "ok")) == 254  # 252 + PartitionKey + RowKey
    too_many = (HttpResponseError, 400, TableErrorCode.TOO_MANY_PROPERTIES, None)
    assert outcome(
        lambda: fake.upsert_entity({"PartitionKey": "p", "RowKey": "ok", "one_more": 1})
    ) == (too_many)
    assert outcome(
        lambda: fake.submit_transaction(
            [("upsert", {"PartitionKey": "p", "RowKey": "x", **{f"p{i}": i for i in range(253)}})]
        )
    ) == (TableTransactionError, 400, "TooManyProperties", 0)


def test_fake_entity_size_by_the_documented_formula() -> None:
    # 4 + 2 x len(PartitionKey + RowKey) + per property 8 + 2 x len(name) + 2 x len(value) + 4:
    # 8 + 16 x (8 + 6 + 64,004) = 1,024,296 bytes; a 17th property "c16" of n characters adds
    # 18 + 2n, so n = 12,131 reaches 1 MiB (1,048,576) exactly and one more passes it.
    fake = MemoryTableClient()
    props = {f"c{i:02d}": "y" * 32_000 for i in range(16)}
    fake.create_entity({"PartitionKey": "p", "RowKey": "r", **props})
    assert outcome(
        lambda: fake.update_entity({"PartitionKey": "p", "RowKey": "r", "c16": "y" * 12_132})
    ) == (HttpResponseError, 400, TableErrorCode.ENTITY_TOO_LARGE, None)
    fake.update_entity({"PartitionKey": "p", "RowKey": "r", "c16": "y" * 12_131})
    assert len(fake.get_entity("p", "r")["c16"]) == 12_131


def test_fake_refuses_a_transaction_of_101_operations() -> None:
    # Azurite answers with a response the SDK cannot parse (http.client.BadStatusLine); the
    # service refuses it and the SDK's own live test expects TableTransactionError.
    fake = MemoryTableClient()
    operations = [("upsert", {"PartitionKey": "p", "RowKey": f"{i:03d}"}) for i in range(101)]
    assert outcome(lambda: fake.submit_transaction(operations)) == (
        TableTransactionError,
        400,
        "InvalidInput",
        0,
    )
    assert rows(fake, "p") == {}
    assert len(fake.submit_transaction(operations[:100])) == 100


@pytest.mark.azurite
def test_azurite_breaks_on_a_transaction_of_101_operations(azurite_connection_string: str) -> None:
    """What DESIGN.md recorded: Azurite writes nothing but its answer is no valid response."""
    table = TableClient.from_connection_string(
        azurite_connection_string, f"t{uuid.uuid4().hex[:20]}"
    )
    table.create_table()
    try:
        operations = [("upsert", {"PartitionKey": "p", "RowKey": f"{i:03d}"}) for i in range(101)]
        result = outcome(lambda: table.submit_transaction(operations))
        assert result[0] is not TableTransactionError and result != ("ok",)
        assert rows(table, "p") == {}
    finally:
        table.delete_table()


def test_fake_upsert_with_a_forbidden_key_is_a_400() -> None:
    # Azurite answers 500 here; the rule is the service's (characters disallowed in key fields).
    fake = MemoryTableClient()
    assert outcome(lambda: fake.upsert_entity({"PartitionKey": "p", "RowKey": "a/b"})) == (
        HttpResponseError,
        400,
        TableErrorCode.OUT_OF_RANGE_INPUT,
        None,
    )


def test_fake_empty_transaction_is_an_empty_answer() -> None:
    # The SDK turns the service's 400 for an empty batch into [] (TableClient.submit_transaction);
    # Azurite answers 500 instead.
    assert MemoryTableClient().submit_transaction([]) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.query_entities("RowKey eq 'a' or RowKey eq 'b'"),
        lambda t: t.query_entities("PartitionKey eq @n", parameters={"n": 3}),
        lambda t: t.query_entities("status eq 'running'"),
        lambda t: t.query_entities("(PartitionKey eq 'p')"),
        lambda t: t.query_entities("PartitionKey eq 'p'", select=["RowKey"]),
        lambda t: t.get_entity("p", "r", select="RowKey"),
        lambda t: t.upsert_entity({"PartitionKey": "p", "RowKey": "r"}, timeout=5),
    ],
    ids=["or", "number", "other-property", "parentheses", "query-select", "get-select", "kwarg"],
)
def test_fake_refuses_what_it_does_not_model(call: Callable[[MemoryTableClient], Any]) -> None:
    with pytest.raises(UnsupportedByFakeError):
        call(MemoryTableClient())
