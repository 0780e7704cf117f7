"""The table and queue layer against a real Azurite."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.data.tables import EdmType, EntityProperty

from sync_core.clock import now
from sync_core.store.blockers import Blocker, BlockerRepository
from sync_core.store.blockers import _entity as blocker_entity
from sync_core.store.mappings import Mapping, MappingRepository
from sync_core.store.queues import QueueStore, decode_message, encode_message
from sync_core.store.records import BookingStates
from sync_core.store.tables import (
    ConflictError,
    Entity,
    NotFoundError,
    TableStore,
    decode_key,
    encode_key,
)


def mapping(resource_id: str, mailbox: str = "room@contoso.example") -> Mapping:
    moment = now()
    return Mapping(resource_id, mailbox, "full", True, moment, moment)


def test_tables_are_created_on_first_use(tables: TableStore) -> None:
    assert tables.get("fresh", "p", "r") is None
    names = [t.name for t in tables._service.list_tables()]
    assert "fresh" in names


def test_etag_guards_replace_and_delete(tables: TableStore) -> None:
    etag = tables.insert("things", {"PartitionKey": "p", "RowKey": "r", "Value": 1})
    newer = tables.replace("things", {"PartitionKey": "p", "RowKey": "r", "Value": 2}, etag)
    assert newer != etag
    with pytest.raises(ConflictError, match="changed by someone else"):
        tables.replace("things", {"PartitionKey": "p", "RowKey": "r", "Value": 3}, etag)
    with pytest.raises(ConflictError):
        tables.delete("things", "p", "r", etag=etag)
    entity = tables.get("things", "p", "r")
    assert entity is not None
    assert entity["Value"] == 2  # the stale writes changed nothing
    assert tables.delete("things", "p", "r", etag=newer) is True
    assert tables.delete("things", "p", "r") is False
    with pytest.raises(NotFoundError):
        tables.replace("things", {"PartitionKey": "p", "RowKey": "r", "Value": 4}, newer)


def test_insert_of_an_existing_entity_is_a_conflict(tables: TableStore) -> None:
    tables.insert("things", {"PartitionKey": "p", "RowKey": "r"})
    with pytest.raises(ConflictError, match="already exists"):
        tables.insert("things", {"PartitionKey": "p", "RowKey": "r"})


def test_paging_visits_every_entity_once(tables: TableStore) -> None:
    for i in range(23):
        tables.insert("paged", {"PartitionKey": "p", "RowKey": f"{i:03d}"})
    seen: list[str] = []
    continuation = None
    pages = 0
    while True:
        page = tables.query_page(
            "paged", "PartitionKey eq @pk", {"pk": "p"}, page_size=5, continuation=continuation
        )
        seen += [e["RowKey"] for e in page.items]
        pages += 1
        continuation = page.continuation
        if continuation is None:
            break
    assert pages == 5
    assert seen == [f"{i:03d}" for i in range(23)]


def test_a_forged_continuation_token_is_rejected(tables: TableStore) -> None:
    with pytest.raises(ValueError, match="continuation"):
        tables.query_page("paged", "PartitionKey eq @pk", {"pk": "p"}, continuation="%%%")


@pytest.mark.parametrize(
    "hostile",
    [
        "o'brien",
        "x' or PartitionKey ne 'y",
        "room-1' or '1' eq '1",
        "''",
        'quote"double',
    ],
)
def test_filter_values_with_quotes_match_only_themselves(tables: TableStore, hostile: str) -> None:
    tables.insert("people", {"PartitionKey": "p", "RowKey": "a", "Name": hostile})
    tables.insert("people", {"PartitionKey": "p", "RowKey": "b", "Name": "someone else"})
    found = list(tables.query("people", "Name eq @name", {"name": hostile}))
    assert [e["RowKey"] for e in found] == ["a"]


def test_keys_with_forbidden_characters_round_trip(tables: TableStore) -> None:
    raw = "desk/12#b?x\\y%20'z"
    key = encode_key(raw)
    assert not set("/\\#?") & set(key)
    assert decode_key(key) == raw
    tables.insert("keys", {"PartitionKey": "p", "RowKey": key})
    assert tables.get("keys", "p", key) is not None


def test_mapping_repository(tables: TableStore) -> None:
    repo = MappingRepository(tables)
    created = repo.create(mapping("room-1"))
    assert created.etag
    with pytest.raises(ConflictError):
        repo.create(mapping("room-1"))
    updated = repo.replace(replace(created, privacy="busy_only"))
    with pytest.raises(ConflictError):
        repo.replace(replace(created, enabled=False))  # stale ETag
    fetched = repo.get("room-1")
    assert fetched is not None
    assert fetched.privacy == "busy_only"
    assert fetched.etag == updated.etag
    repo.create(mapping("room-2", "other@contoso.example"))
    assert [m.resource_id for m in repo.by_mailbox("ROOM@contoso.example")] == ["room-1"]
    first, token = repo.list_page(page_size=1)
    second, last = repo.list_page(page_size=1, continuation=token)
    assert [m.resource_id for m in first + second] == ["room-1", "room-2"]
    assert last is None
    assert repo.delete("room-1") is True
    assert repo.get("room-1") is None


def test_queue_messages_use_the_functions_encoding(queues: QueueStore) -> None:
    payload = {"booking_id": "bk_1", "note": "Grüße"}
    assert (
        decode_message(encode_message(payload))
        == b'{"booking_id":"bk_1","note":"Gr\\u00fc\\u00dfe"}'
    )
    queues.send("work-items", payload)
    assert queues.depth("work-items") == 1
    message = next(iter(queues.queue("work-items").receive_messages()))
    # What a queue trigger decodes is the JSON the sender meant, byte for byte.
    assert json.loads(decode_message(message.content)) == payload
    assert message.content == encode_message(payload)


def test_recent_mappings_are_remembered_until_changed_here(tables: TableStore) -> None:
    repo, other = MappingRepository(tables), MappingRepository(tables)  # two instances
    assert repo.recent("room-1") is None  # not found: not remembered
    created = other.create(Mapping("room-1", "a@contoso.example", "full", True, now(), now()))
    assert repo.recent("room-1") == created  # so a new mapping counts at once

    # Another instance's change shows once the remembered read is old enough.
    changed = other.replace(replace(created, enabled=False))
    assert repo.recent("room-1") == created
    repo._recent.max_age = 0
    assert repo.recent("room-1") == changed

    # A change through this instance counts at once.
    repo._recent.max_age = 60
    again = repo.replace(replace(changed, enabled=True))
    assert repo.recent("room-1") == again


def test_the_conflict_mirror_sees_blockers_written_here_at_once(tables: TableStore) -> None:
    blockers = BlockerRepository(tables)
    day = datetime(2026, 12, 1, tzinfo=UTC)
    span = (day.replace(hour=9), day.replace(hour=10))
    assert blockers.overlapping("a@contoso.example", *span) == []
    busy = Blocker(
        "blk-1", "a@contoso.example", "room-1", "evt-1", None,
        day.replace(hour=9, minute=30), day.replace(hour=11), False, "busy", None,
    )  # fmt: skip
    blockers.put(busy)
    assert [b.id for b in blockers.overlapping("a@contoso.example", *span)] == ["blk-1"]
    assert (
        blockers.overlapping("a@contoso.example", day.replace(hour=11), day.replace(hour=12)) == []
    )
    # The same occurrence blocking a second resource of the mailbox: one conflict, not two.
    blockers.put(replace(busy, resource_id="desk-1"))
    assert [b.id for b in blockers.overlapping("a@contoso.example", *span)] == ["blk-1"]
    assert set(blockers.for_resource("a@contoso.example", "desk-1")) == {"blk-1"}
    blockers.delete("a@contoso.example", "room-1", "blk-1")
    assert [b.resource_id for b in blockers.in_mailbox("a@contoso.example")] == ["desk-1"]
    blockers.delete("a@contoso.example", "desk-1", "blk-1")
    assert blockers.overlapping("a@contoso.example", *span) == []


def test_a_blocker_row_keyed_by_the_blocker_alone_moves_to_its_resource_key(
    tables: TableStore,
) -> None:
    """Rows written before resources could share a mailbox are keyed by the blocker id alone:
    the first read moves them, so that deleting the blocker of its resource finds it."""
    blockers = BlockerRepository(tables)
    day = datetime(2026, 12, 1, tzinfo=UTC)
    old = Blocker(
        "blk-1", "a@contoso.example", "room-1", "evt-1", None,
        day.replace(hour=9), day.replace(hour=10), False, "busy", None, "digest", 7,
    )  # fmt: skip
    entity = blocker_entity(old)
    tables.upsert(BlockerRepository.TABLE, {**entity, "RowKey": "blk-1"})
    assert blockers.for_resource("a@contoso.example", "room-1") == {"blk-1": old}
    keys = [e["RowKey"] for e in tables.query(BlockerRepository.TABLE, "PartitionKey eq @pk",
                                              {"pk": entity["PartitionKey"]})]  # fmt: skip
    assert keys == [entity["RowKey"]]
    blockers.delete("a@contoso.example", "room-1", "blk-1")
    assert blockers.in_mailbox("a@contoso.example") == []


def test_booking_states_keep_the_newest_version_across_instances(tables: TableStore) -> None:
    here, elsewhere = BookingStates(tables), BookingStates(tables)  # two processes
    reads: list[str] = []
    get = tables.get

    def counted_get(table: str, partition: str, row: str) -> Entity | None:
        reads.append(row)
        return get(table, partition, row)

    tables.get = counted_get  # type: ignore[method-assign]
    assert here.save("b-1", 1, {"v": 1}, "wh-1") == "first"
    assert here.save("b-1", 2, {"v": 2}, "wh-2") == "new"
    assert reads == []  # it replaced what it wrote itself, guarded by that ETag
    assert elsewhere.save("b-1", 4, {"v": 4}, "wh-3") == "new"
    assert here.save("b-1", 3, {"v": 3}, "wh-4") == "stale"  # its ETag is stale: read, older
    assert here.save("b-1", 4, {"v": "again"}, "wh-5") == "stale"
    stored = here.get("b-1")
    assert stored is not None
    assert (stored.version, stored.event) == (4, {"v": 4})
    assert here.save("b-1", 5, {"v": 5}, "wh-6") == "new"
    assert elsewhere.save("b-1", 6, {"v": 6}, "wh-7") == "new"  # its own ETag is stale too
    final = elsewhere.get("b-1")
    assert final is not None
    assert (final.version, final.event) == (6, {"v": 6})


def test_a_redelivered_webhook_is_a_duplicate_in_every_process(tables: TableStore) -> None:
    here, elsewhere = BookingStates(tables), BookingStates(tables)  # two processes
    assert here.save("b-2", 1, {"v": 1}, "msg-1") == "first"
    assert elsewhere.save("b-2", 1, {"v": 1}, "msg-1") == "duplicate"
    assert here.save("b-2", 2, {"v": 2}, "msg-2") == "new"
    assert elsewhere.save("b-2", 1, {"v": 1}, "msg-1") == "duplicate"  # older, but delivered
    assert elsewhere.save("b-2", 1, {"v": 1}, "msg-other") == "stale"
    assert here.save("b-2", 2, {"v": "changed"}, "msg-2") == "duplicate"
    stored = here.get("b-2")
    assert stored is not None and (stored.version, stored.event) == (2, {"v": 2})


def test_an_entity_read_can_be_written_back(tables: TableStore) -> None:
    tables.insert("things", {"PartitionKey": "p", "RowKey": "r", "Value": 1})
    read = tables.get("things", "p", "r")
    assert read is not None and read["etag"] and read["timestamp"]
    tables.replace("things", {**read, "Value": 2}, read["etag"])
    again = tables.get("things", "p", "r")
    assert again is not None
    tables.upsert("things", {**again, "Value": 3})
    tables.upsert_many("things", [{**again, "RowKey": "copy"}])
    for row, value in (("r", 3), ("copy", 2)):
        raw = tables.table("things").get_entity("p", row)  # the stored properties only
        assert dict(raw) == {
            "PartitionKey": "p",
            "RowKey": row,
            "Value": EntityProperty(value, EdmType.INT64),
        }


# -- integers: every one is stored as Edm.Int64 and read back as a plain int ------------------

LARGE = [0, 1, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**32, 2**53 + 1, 2**63 - 1, -(2**63)]


def test_integers_of_any_64_bit_size_round_trip_exactly(tables: TableStore) -> None:
    for index, value in enumerate(LARGE):
        row = f"{index:02d}"
        entity = {"PartitionKey": "p", "RowKey": row, "Value": value, "On": True, "Off": False}
        tables.insert("numbers", entity)
        read = tables.get("numbers", "p", row)
        assert read is not None
        assert type(read["Value"]) is int and read["Value"] == value
        assert read["On"] is True and read["Off"] is False  # bools stay bools
        tables.replace(
            "numbers", {**read, "Value": value - 1 if value > 0 else value + 1}, read["etag"]
        )
    tables.upsert_many(
        "numbers", [{"PartitionKey": "q", "RowKey": str(v), "Value": v} for v in LARGE]
    )
    listed = {
        e["RowKey"]: e["Value"] for e in tables.query("numbers", "PartitionKey eq @pk", {"pk": "q"})
    }
    assert listed == {str(v): v for v in LARGE}
    assert all(type(v) is int for v in listed.values())


def test_rows_written_as_int32_before_read_back_as_int(tables: TableStore) -> None:
    tables.table("old").create_entity({"PartitionKey": "p", "RowKey": "r", "Version": 7})  # Int32
    read = tables.get("old", "p", "r")
    assert read is not None and read["Version"] == 7 and type(read["Version"]) is int
    tables.replace("old", {**read, "Version": 2**40}, read["etag"])
    again = tables.get("old", "p", "r")
    assert again is not None and again["Version"] == 2**40


def test_integer_filters_compare_as_int64(tables: TableStore) -> None:
    values = [3, 5, 2**31, 2**53 + 1]
    for value in values:
        tables.insert("counted", {"PartitionKey": "p", "RowKey": str(value), "Value": value})

    def rows(filter: str, **parameters: object) -> list[int]:
        return sorted(e["Value"] for e in tables.query("counted", filter, parameters))

    assert rows("Value eq @v", v=5) == [5]
    assert rows("Value gt @v", v=4) == [5, 2**31, 2**53 + 1]
    assert rows("Value ge @v", v=2**31) == [2**31, 2**53 + 1]
    assert rows("Value lt @v and PartitionKey eq @pk", v=2**53 + 1, pk="p") == [3, 5, 2**31]
    page = tables.query_page("counted", "Value le @v", {"v": 5})
    assert sorted(e["Value"] for e in page.items) == [3, 5]


def test_an_integer_beyond_64_bits_is_refused_before_any_request(tables: TableStore) -> None:
    for value in (2**63, -(2**63) - 1, 10**30):
        with pytest.raises(ValueError, match="64-bit"):
            tables.insert("numbers", {"PartitionKey": "p", "RowKey": "r", "Value": value})
    assert tables.get("numbers", "p", "r") is None


@pytest.mark.parametrize("first", [2**31, 2**53 + 1, 2**63 - 2])
def test_booking_versions_past_int32_are_stored_and_compared_exactly(
    tables: TableStore, first: int
) -> None:
    here, elsewhere = BookingStates(tables), BookingStates(tables)
    assert here.save("b-big", first, {"v": first}, "wh-8") == "first"
    stored = elsewhere.get("b-big")
    assert stored is not None and stored.version == first and stored.event == {"v": first}
    assert elsewhere.save("b-big", first - 1, {"v": "older"}, "wh-9") == "stale"
    assert elsewhere.save("b-big", first, {"v": "same"}, "wh-10") == "stale"
    assert here.save("b-big", first + 1, {"v": first + 1}, "wh-11") == "new"
    assert elsewhere.save("b-big", first, {"v": "stale"}, "wh-12") == "stale"
    final = here.get("b-big")
    assert final is not None and (final.version, final.event) == (first + 1, {"v": first + 1})


def test_the_largest_booking_version_is_stored_and_nothing_is_newer(tables: TableStore) -> None:
    states = BookingStates(tables)
    assert states.save("b-max", 2**53 + 1, {"v": 1}, "wh-13") == "first"
    assert states.save("b-max", 2**63 - 1, {"v": 2}, "wh-14") == "new"
    stored = BookingStates(tables).get("b-max")
    assert stored is not None and stored.version == 2**63 - 1
    assert BookingStates(tables).save("b-max", 2**63 - 1, {"v": 3}, "wh-15") == "stale"


def test_get_many_reads_rows_of_one_partition_in_few_queries(
    tables: TableStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 keys (two full queries and a short one), some missing, one with a quote: every row
    that exists, by its key, and nothing of another partition."""
    keys = [encode_key(f"room-{i}") for i in range(29)] + [encode_key("o'brien")]
    tables.upsert_many("many", [{"PartitionKey": "p", "RowKey": k, "N": i}
                                for i, k in enumerate(keys) if i % 3])  # fmt: skip
    tables.upsert("many", {"PartitionKey": "other", "RowKey": keys[0], "N": -1})
    queries: list[str] = []
    query = tables.query

    def counted(table: str, filter: str, parameters: Any = None) -> Any:
        queries.append(filter)
        return query(table, filter, parameters)

    monkeypatch.setattr(tables, "query", counted)
    found = tables.get_many("many", "p", keys)
    assert sorted(found) == sorted(k for i, k in enumerate(keys) if i % 3)
    assert all(found[k]["N"] == keys.index(k) for k in found)
    assert len(queries) == 3
    assert tables.get_many("many", "p", []) == {}
