"""One contract for the document-store port, run against SQLite, SecantusDB and (when configured) MongoDB.

Every test takes ``new_store`` (tests/contract/conftest.py), so each runs once per adapter. The last
tests are about the wire adapter only: a lost connection, and a server that cannot do transactions.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.store import (
    ASCENDING,
    DESCENDING,
    Collection,
    DocumentStore,
    DuplicateKey,
    Index,
    StoreUnavailable,
    WriteConflict,
)
from shared.store.base import MAX_PAGE
from shared.store.mongo import MongoStore, client_options
from shared.store.sqlite import SqliteStore
from tests.contract.conftest import StoreFactory
from tests.contract.secantus import Secantus, secantus
from tests.helpers import eventually

PEOPLE: list[dict[str, Any]] = [
    {
        "_id": "p1",
        "name": "Ada",
        "age": 36,
        "email": "ada@example.org",
        "tags": ["maths", "poetry"],
        "address": {"city": "London", "postcode": "N1"},
    },
    {
        "_id": "p2",
        "name": "Bea",
        "age": 29,
        "email": "bea@example.org",
        "tags": ["physics"],
        "address": {"city": "Leeds"},
    },
    {"_id": "p3", "name": "Cy", "age": 41, "tags": [], "address": {"city": "London"}, "nickname": None},
    {"_id": "p4", "name": "Di", "age": 29, "email": "di@example.org", "tags": ["maths"]},
    {"_id": "p5", "name": "Ed", "age": 52},
]
PEOPLE_INDEXES = [Index(("email",), unique=True), Index(("age",)), Index(("tags",)), Index(("address.city",))]


def declare(store: DocumentStore) -> tuple[Collection, Collection]:
    return store.collection("people", PEOPLE_INDEXES), store.collection("counters")


async def people_store(new_store: StoreFactory, *, seed: bool = True) -> tuple[DocumentStore, Collection, Collection]:
    store = new_store()
    people, counters = declare(store)
    await store.start()
    if seed:
        for person in PEOPLE:
            await people.insert(copy.deepcopy(person))
    return store, people, counters


async def ids(coll: Collection, where: dict[str, Any] | None = None, **kw: Any) -> list[str]:
    return [d["_id"] for d in await coll.find(where, **kw)]


# --- single documents ------------------------------------------------------------------------------


async def test_insert_then_get_returns_the_same_document(new_store: StoreFactory) -> None:
    _, people, _ = await people_store(new_store)
    for person in PEOPLE:
        assert await people.get(person["_id"]) == person
    assert await people.get("nobody") is None


async def test_values_round_trip_unchanged(new_store: StoreFactory) -> None:
    _, people, _ = await people_store(new_store, seed=False)
    doc = {
        "_id": "v",
        "s": "Zoë – ü",
        "i": -7,
        "f": 2.5,
        "t": True,
        "n": None,
        "empty": {},
        "list": [1, "a", None],
        "nested": {"a": [{"b": 1}, {"b": 2}], "deep": {"x": False}},
    }
    await people.insert(copy.deepcopy(doc))
    assert await people.get("v") == doc


async def test_values_outside_json_are_stored_as_json_would_hold_them(new_store: StoreFactory) -> None:
    _, people, _ = await people_store(new_store, seed=False)
    when = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    await people.insert({"_id": "w", "when": when, "pair": (1, 2)})
    assert await people.update({"_id": "w"}, {"later": when, "triple": (1, 2, 3)}) == 1
    assert await people.get("w") == {
        "_id": "w",
        "when": str(when),
        "pair": [1, 2],
        "later": str(when),
        "triple": [1, 2, 3],
    }
    assert await people.replace({"_id": "w", "when": when}) is True
    assert await people.get("w") == {"_id": "w", "when": str(when)}


async def test_a_document_needs_its_key(new_store: StoreFactory) -> None:
    _, people, _ = await people_store(new_store, seed=False)
    with pytest.raises(KeyError):
        await people.insert({"name": "no key"})


async def test_inserting_an_existing_key_is_a_duplicate_and_changes_nothing(new_store: StoreFactory) -> None:
    _, people, _ = await people_store(new_store)
    with pytest.raises(DuplicateKey):
        await people.insert({"_id": "p1", "name": "Impostor"})
    assert await people.get("p1") == PEOPLE[0]


async def test_replace_overwrites_the_whole_document_or_reports_nothing_written(new_store: StoreFactory) -> None:
    _, people, _ = await people_store(new_store)
    assert await people.replace({"_id": "p1", "name": "Ada L."}) is True
    assert await people.get("p1") == {"_id": "p1", "name": "Ada L."}

    assert await people.replace({"_id": "p9", "name": "Ghost"}) is False
    assert await people.get("p9") is None

    assert await people.replace({"_id": "p9", "name": "Guest"}, upsert=True) is True
    assert await people.get("p9") == {"_id": "p9", "name": "Guest"}
    assert await people.replace({"_id": "p9", "name": "Guest 2"}, upsert=True) is True
    assert await people.get("p9") == {"_id": "p9", "name": "Guest 2"}


async def test_update_sets_top_level_and_dotted_fields_on_every_match(new_store: StoreFactory) -> None:
    _, people, _ = await people_store(new_store)
    assert await people.update({"age": 29}, {"status": "young", "address.city": "York"}) == 2
    assert await people.get("p2") == {**PEOPLE[1], "status": "young", "address": {"city": "York"}}
    # A missing parent object is created, as MongoDB's $set does.
    assert await people.get("p4") == {**PEOPLE[3], "status": "young", "address": {"city": "York"}}
    assert await people.get("p1") == PEOPLE[0]

    # A document that already holds the values still counts as matched.
    assert await people.update({"_id": "p2"}, {"status": "young"}) == 1
    assert await people.update({"_id": "nobody"}, {"status": "x"}) == 0
    assert await people.update({"_id": "p2"}, {}) == 0
    assert await people.update({"_id": "p5"}, {"tags": ["a", "b"], "meta": {"k": 1}}) == 1
    assert await people.get("p5") == {**PEOPLE[4], "tags": ["a", "b"], "meta": {"k": 1}}


@pytest.mark.parametrize("field", ["_id", "bad path", "$set", ""])
async def test_update_refuses_to_set_the_key_or_an_invalid_path(new_store: StoreFactory, field: str) -> None:
    _, people, _ = await people_store(new_store)
    with pytest.raises(ValueError):
        await people.update({"_id": "p1"}, {field: "x"})
    assert await people.get("p1") == PEOPLE[0]


async def test_delete_removes_every_match_and_says_how_many(new_store: StoreFactory) -> None:
    _, people, _ = await people_store(new_store)
    assert await people.delete({"address.city": "London"}) == 2
    assert await ids(people) == ["p2", "p4", "p5"]
    assert await people.delete({"_id": "p1"}) == 0
    assert await people.delete({}) == 3
    assert await people.count() == 0


# --- unique indexes ----------------------------------------------------------------------------------


async def test_unique_index_refuses_a_second_document_with_the_value(new_store: StoreFactory) -> None:
    _, people, _ = await people_store(new_store)
    with pytest.raises(DuplicateKey):
        await people.insert({"_id": "p9", "email": "ada@example.org"})
    with pytest.raises(DuplicateKey):
        await people.update({"_id": "p2"}, {"email": "ada@example.org"})
    with pytest.raises(DuplicateKey):
        await people.replace({"_id": "p2", "email": "ada@example.org"})
    with pytest.raises(DuplicateKey):
        await people.replace({"_id": "p9", "email": "di@example.org"}, upsert=True)
    assert await people.get("p9") is None
    assert await people.get("p2") == PEOPLE[1]


async def test_unique_index_allows_any_number_of_documents_without_the_field(new_store: StoreFactory) -> None:
    # p3 and p5 already have no email; MongoDB would treat both as email=null without a partial index.
    _, people, _ = await people_store(new_store)
    await people.insert({"_id": "p6", "name": "Fay"})
    assert await ids(people, {"email": {"$exists": False}}) == ["p3", "p5", "p6"]
    # Freeing a value lets another document take it.
    assert await people.update({"_id": "p1"}, {"email": "ada@new.example.org"}) == 1
    assert await people.update({"_id": "p6"}, {"email": "ada@example.org"}) == 1


async def test_declaring_the_same_collections_again_over_existing_data_is_harmless(new_store: StoreFactory) -> None:
    await people_store(new_store)
    _, people, _ = await people_store(new_store, seed=False)
    assert await people.count() == len(PEOPLE)
    with pytest.raises(DuplicateKey):
        await people.insert({"_id": "p9", "email": "bea@example.org"})


# --- queries -----------------------------------------------------------------------------------------

FILTERS: list[tuple[dict[str, Any] | None, list[str]]] = [
    (None, ["p1", "p2", "p3", "p4", "p5"]),
    ({}, ["p1", "p2", "p3", "p4", "p5"]),
    ({"age": 29}, ["p2", "p4"]),
    ({"age": {"$eq": 52}}, ["p5"]),
    ({"address.city": "London"}, ["p1", "p3"]),
    ({"tags": "maths"}, ["p1", "p4"]),
    ({"tags": "maths", "age": 29}, ["p4"]),
    ({"age": {"$ne": 29}}, ["p1", "p3", "p5"]),
    ({"email": {"$ne": "ada@example.org"}}, ["p2", "p3", "p4", "p5"]),
    ({"email": {"$ne": None}}, ["p1", "p2", "p4"]),
    ({"age": {"$gt": 36}}, ["p3", "p5"]),
    ({"age": {"$gte": 36}}, ["p1", "p3", "p5"]),
    ({"age": {"$lt": 36}}, ["p2", "p4"]),
    ({"age": {"$lte": 36}}, ["p1", "p2", "p4"]),
    ({"age": {"$gte": 30, "$lt": 50}}, ["p1", "p3"]),
    ({"name": {"$gt": "Bea", "$lte": "Di"}}, ["p3", "p4"]),
    ({"name": {"$in": ["Ada", "Ed", "Zed"]}}, ["p1", "p5"]),
    ({"name": {"$in": []}}, []),
    ({"email": {"$exists": True}}, ["p1", "p2", "p4"]),
    ({"email": {"$exists": False}}, ["p3", "p5"]),
    ({"nickname": {"$exists": True}}, ["p3"]),
    ({"email": None}, ["p3", "p5"]),
    ({"address.postcode": "N1"}, ["p1"]),
    ({"_id": "p2"}, ["p2"]),
    ({"_id": {"$in": ["p1", "p5", "p9"]}}, ["p1", "p5"]),
    ({"_id": {"$gt": "p3"}}, ["p4", "p5"]),
    ({"_id": {"$ne": "p3"}, "age": 29}, ["p2", "p4"]),
    ({"$or": [{"age": 29}, {"address.city": "London"}]}, ["p1", "p2", "p3", "p4"]),
    ({"$or": [{"age": 29}, {"address.city": "London"}], "name": {"$ne": "Bea"}}, ["p1", "p3", "p4"]),
    ({"$or": [{"tags": "physics"}, {"email": {"$exists": False}, "age": {"$gt": 50}}]}, ["p2", "p5"]),
    # Two conditions on one field (a repeated search parameter), and an $or inside an $and.
    ({"$and": [{"age": {"$gt": 20}}, {"age": {"$lt": 40}}]}, ["p1", "p2", "p4"]),
    ({"$and": [{"$or": [{"age": 29}, {"tags": "physics"}]}, {"$or": [{"name": "Di"}, {"age": {"$gt": 50}}]}]}, ["p4"]),
    ({"name": "Nobody"}, []),
]


async def test_find_and_count_apply_every_filter_operator(new_store: StoreFactory) -> None:
    _, people, _ = await people_store(new_store)
    # One store for the whole table (it is read only); every filter that answers wrongly is reported.
    found = {str(where): (await ids(people, where), await people.count(where)) for where, _ in FILTERS}
    assert found == {str(where): (expected, len(expected)) for where, expected in FILTERS}


@pytest.mark.parametrize(
    "where",
    [
        {"age": {"$regex": "^2"}},
        {"age": {"$gt": [1]}},
        {"age": {"$in": [[1]]}},
        {"address": {"city": "London"}},
        {"bad path": 1},
        {"$nor": [{"age": 29}]},
        {"$and": []},
        {"$and": {"age": 29}},
    ],
)
async def test_filters_outside_the_port_language_are_refused(new_store: StoreFactory, where: dict[str, Any]) -> None:
    _, people, _ = await people_store(new_store)
    with pytest.raises(ValueError):
        await people.find(where)


async def test_sort_orders_by_each_key_in_turn_and_breaks_ties_by_key(new_store: StoreFactory) -> None:
    _, people, _ = await people_store(new_store)
    assert await ids(people, sort=[("age", ASCENDING)]) == ["p2", "p4", "p1", "p3", "p5"]
    assert await ids(people, sort=[("age", DESCENDING)]) == ["p5", "p3", "p1", "p2", "p4"]
    assert await ids(people, sort=[("age", ASCENDING), ("name", DESCENDING)]) == ["p4", "p2", "p1", "p3", "p5"]
    # A missing field sorts first, as null does in MongoDB and NULL in SQLite.
    assert await ids(people, sort=[("email", ASCENDING)]) == ["p3", "p5", "p1", "p2", "p4"]
    assert await ids(people, sort=[("address.city", ASCENDING)]) == ["p4", "p5", "p2", "p1", "p3"]
    assert await ids(people, sort=[("_id", DESCENDING)]) == ["p5", "p4", "p3", "p2", "p1"]
    assert (await people.find_one({"age": 29}, sort=[("name", DESCENDING)]) or {}).get("_id") == "p4"
    assert await people.find_one({"age": 99}) is None


async def test_limit_and_skip_page_through_everything_once(new_store: StoreFactory) -> None:
    _, people, _ = await people_store(new_store, seed=False)
    for n in range(25):
        await people.insert({"_id": f"d{n:02d}", "rank": n % 7})
    expected = sorted((f"d{n:02d}" for n in range(25)), key=lambda key: (int(key[1:]) % 7, key))
    pages = [await ids(people, sort=[("rank", ASCENDING)], limit=10, skip=skip) for skip in (0, 10, 20, 30)]
    assert [len(p) for p in pages] == [10, 10, 5, 0]
    assert [key for page in pages for key in page] == expected
    top = await ids(people, {"rank": {"$gte": 5}}, sort=[("rank", DESCENDING)], limit=3, skip=1)
    assert top == ["d13", "d20", "d05"]
    assert await people.count() == 25


@pytest.mark.parametrize("limit", [0, -1, MAX_PAGE + 1])
async def test_every_find_is_bounded(new_store: StoreFactory, limit: int) -> None:
    _, people, _ = await people_store(new_store)
    with pytest.raises(ValueError):
        await people.find({}, limit=limit)


async def test_the_largest_page_is_allowed(new_store: StoreFactory) -> None:
    _, people, _ = await people_store(new_store)
    assert len(await people.find({}, limit=MAX_PAGE)) == len(PEOPLE)


# --- transactions ------------------------------------------------------------------------------------


async def test_a_transaction_commits_all_its_writes_together(new_store: StoreFactory) -> None:
    store, people, counters = await people_store(new_store)
    async with store.transaction() as session:
        await people.insert({"_id": "p6", "name": "Fay"}, session=session)
        await people.update({"_id": "p1"}, {"age": 37}, session=session)
        await people.delete({"_id": "p5"}, session=session)
        await counters.replace({"_id": "people", "n": 5}, upsert=True, session=session)
        # Its own writes are visible inside it ...
        assert await ids(people, {"age": {"$gt": 35}}, session=session) == ["p1", "p3"]
        assert (await people.get("p6", session=session) or {}).get("name") == "Fay"
        # ... and nowhere else until it commits.
        assert await people.get("p6") is None
        assert (await people.get("p1") or {}).get("age") == 36
        assert await people.count() == 5
    assert (await people.get("p6") or {}).get("name") == "Fay"
    assert (await people.get("p1") or {}).get("age") == 37
    assert await people.get("p5") is None
    assert await counters.get("people") == {"_id": "people", "n": 5}


async def test_an_exception_rolls_back_every_write_of_the_transaction(new_store: StoreFactory) -> None:
    store, people, counters = await people_store(new_store)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.transaction() as session:
            await people.insert({"_id": "p6", "name": "Fay"}, session=session)
            await people.update({}, {"age": 0}, session=session)
            await counters.insert({"_id": "people", "n": 6}, session=session)
            raise Boom
    assert await ids(people) == ["p1", "p2", "p3", "p4", "p5"]
    assert await people.count({"age": 0}) == 0
    assert await counters.count() == 0


async def test_a_duplicate_inside_a_transaction_rolls_back_its_earlier_writes(new_store: StoreFactory) -> None:
    store, people, counters = await people_store(new_store)
    with pytest.raises(DuplicateKey):
        async with store.transaction() as session:
            await counters.insert({"_id": "c", "n": 1}, session=session)
            await people.insert({"_id": "p9", "email": "bea@example.org"}, session=session)
    assert await counters.get("c") is None
    assert await people.get("p9") is None


async def test_a_savepoint_undoes_only_its_own_writes_and_the_transaction_goes_on(new_store: StoreFactory) -> None:
    store, people, counters = await people_store(new_store)
    if not store.savepoints:
        # Such a store says so and refuses, never pretends: deliveries there get a transaction each
        # (shared/context.py), which is what a batch falls back to.
        async with store.transaction() as session:
            with pytest.raises(NotImplementedError):
                store.savepoint(session)
        return

    class Boom(Exception):
        pass

    async with store.transaction() as session:
        async with store.savepoint(session):
            await counters.insert({"_id": "kept", "n": 1}, session=session)
        with pytest.raises(Boom):
            async with store.savepoint(session):
                await counters.insert({"_id": "undone", "n": 2}, session=session)
                await people.update({"_id": "p1"}, {"age": 0}, session=session)
                raise Boom
        with pytest.raises(DuplicateKey):
            async with store.savepoint(session):
                await counters.insert({"_id": "undone too", "n": 3}, session=session)
                await people.insert({"_id": "p9", "email": "bea@example.org"}, session=session)
        # A block that raises before writing anything owes no rollback.
        with pytest.raises(Boom):
            async with store.savepoint(session):
                raise Boom
        async with store.savepoint(session):
            await counters.insert({"_id": "kept too", "n": 4}, session=session)
        assert await ids(counters, session=session) == ["kept", "kept too"]
    assert await ids(counters) == ["kept", "kept too"]
    assert (await people.get("p1") or {}).get("age") == 36
    assert await people.get("p9") is None


async def test_a_transaction_tells_its_listeners_how_it_ended(new_store: StoreFactory) -> None:
    # The outbox hands a transaction's events to its relay this way: only once the COMMIT has returned.
    store, _, counters = await people_store(new_store)
    ended: list[tuple[str, bool]] = []

    class Boom(Exception):
        pass

    async with store.transaction() as session:
        await counters.insert({"_id": "a", "n": 1}, session=session)
        session.on_end(lambda committed: ended.append(("committed", committed)))
        assert ended == []  # nothing before the COMMIT
    assert ended == [("committed", True)]
    with pytest.raises(Boom):
        async with store.transaction() as session:
            await counters.insert({"_id": "b", "n": 1}, session=session)
            session.on_end(lambda committed: ended.append(("failed", committed)))
            raise Boom
    assert ended[1:] == [("failed", False)]
    assert await counters.get("b") is None
    if store.savepoints:
        # Announced inside a savepoint that is rolled back: dropped with the savepoint's writes.
        async with store.transaction() as session:
            with pytest.raises(Boom):
                async with store.savepoint(session):
                    await counters.insert({"_id": "c", "n": 1}, session=session)
                    session.on_end(lambda committed: ended.append(("undone", committed)))
                    raise Boom
            async with store.savepoint(session):
                await counters.insert({"_id": "d", "n": 1}, session=session)
                session.on_end(lambda committed: ended.append(("kept", committed)))
        assert ended[2:] == [("kept", True)]


async def test_a_session_is_only_good_inside_its_transaction(new_store: StoreFactory) -> None:
    store, people, _ = await people_store(new_store)
    async with store.transaction() as session:
        await people.insert({"_id": "p6"}, session=session)
    with pytest.raises(RuntimeError):
        await people.insert({"_id": "p7"}, session=session)
    assert await people.get("p7") is None


async def increment(
    store: DocumentStore,
    counters: Collection,
    key: str,
    *,
    pause: asyncio.Event | None = None,
    resume: asyncio.Event | None = None,
    conflicted: asyncio.Event | None = None,
) -> int:
    """Read-modify-write in a transaction, run again on a write conflict (as the audit chain does)."""
    attempts = 0
    while True:
        attempts += 1
        if conflicted is not None and attempts > 1:
            conflicted.set()
        try:
            async with store.transaction() as session:
                doc = await counters.get(key, session=session)
                value = (doc or {"n": 0})["n"] + 1
                await counters.replace({"_id": key, "n": value}, upsert=True, session=session)
                if pause is not None and resume is not None and attempts == 1:
                    pause.set()
                    await resume.wait()
            return attempts
        except WriteConflict:
            continue


def on_begin(store: SqliteStore, event: asyncio.Event) -> None:
    """Set ``event`` when the store's writer sends BEGIN: from then on it holds, or waits for, the file's
    write lock (the trace callback runs before SQLite's busy wait)."""
    loop = asyncio.get_running_loop()
    store._writer.set_trace_callback(  # type: ignore[union-attr]
        lambda sql: sql.startswith("BEGIN") and loop.call_soon_threadsafe(event.set)
    )


async def test_two_transactions_writing_one_document_never_lose_an_update(new_store: StoreFactory) -> None:
    # Two clients of the same database: the second transaction starts while the first holds its write.
    store_a, _, counters_a = await people_store(new_store, seed=False)
    store_b = new_store()
    _, counters_b = declare(store_b)
    await store_b.start()
    await counters_a.insert({"_id": "c", "n": 0})

    a_wrote, a_may_commit = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(increment(store_a, counters_a, "c", pause=a_wrote, resume=a_may_commit))
    await a_wrote.wait()
    # The first commits only once the second has really run into it (the overlap is what this test is
    # about): MongoDB fails the second with a write conflict, and it starts again; SQLite makes it wait for
    # the file's write lock, from the moment its writer sends BEGIN.
    ran_into_it = asyncio.Event()
    if isinstance(store_b, SqliteStore):
        on_begin(store_b, ran_into_it)
        second = asyncio.create_task(increment(store_b, counters_b, "c"))
    else:
        second = asyncio.create_task(increment(store_b, counters_b, "c", conflicted=ran_into_it))
    await asyncio.wait_for(ran_into_it.wait(), 30)
    assert not first.done()
    a_may_commit.set()
    await asyncio.gather(first, second)
    assert await counters_a.get("c") == {"_id": "c", "n": 2}


async def test_many_concurrent_transactions_from_two_clients_all_count(new_store: StoreFactory) -> None:
    store_a, _, counters_a = await people_store(new_store, seed=False)
    store_b = new_store()
    _, counters_b = declare(store_b)
    await store_b.start()
    jobs = [increment(store_a, counters_a, "c") for _ in range(8)] + [
        increment(store_b, counters_b, "c") for _ in range(8)
    ]
    await asyncio.gather(*jobs)
    assert await counters_b.get("c") == {"_id": "c", "n": 16}


async def test_two_transactions_taking_one_unique_value_let_exactly_one_win(new_store: StoreFactory) -> None:
    store_a, people_a, _ = await people_store(new_store, seed=False)
    store_b = new_store()
    people_b, _ = declare(store_b)
    await store_b.start()

    # Each holds its transaction open until the other has run into it (the overlap is what this test is
    # about): tried its insert (MongoDB), or sent BEGIN and so waits for the write lock (SQLite).
    reached = {"a": asyncio.Event(), "b": asyncio.Event()}
    for me, store in (("a", store_a), ("b", store_b)):
        if isinstance(store, SqliteStore):
            on_begin(store, reached[me])

    async def claim(store: DocumentStore, people: Collection, me: str, other: str) -> str:
        try:
            async with store.transaction() as session:
                try:
                    await people.insert({"_id": me, "email": "same@example.org"}, session=session)
                finally:
                    reached[me].set()
                await asyncio.wait_for(reached[other].wait(), 30)
            return "won"
        except (DuplicateKey, WriteConflict):
            return "lost"

    outcomes = await asyncio.gather(claim(store_a, people_a, "a", "b"), claim(store_b, people_b, "b", "a"))
    assert sorted(outcomes) == ["lost", "won"]
    assert await people_a.count({"email": "same@example.org"}) == 1


# --- the wire adapter only -------------------------------------------------------------------------


async def test_a_lost_connection_fails_fast_as_unavailable_and_recovers(tmp_path: Path) -> None:
    with secantus(tmp_path / "db") as server:
        store = MongoStore(server.url, database="lhcie_outage")
        people, _ = declare(store)
        await store.start()
        try:
            await people.insert({"_id": "p1"})
            assert await store.is_healthy() is True

            server.stop()
            assert await store.is_healthy() is False
            with pytest.raises(StoreUnavailable):
                await people.insert({"_id": "p2"})
            with pytest.raises(StoreUnavailable):
                await people.find({})
            # Unavailable, not a write conflict: a caller re-running conflicted transactions must stop here.
            with pytest.raises(StoreUnavailable) as raised:
                async with store.transaction() as session:
                    await people.insert({"_id": "p3"}, session=session)
            assert type(raised.value) is StoreUnavailable

            server.start()
            await eventually(store.is_healthy, timeout=90)
            await people.insert({"_id": "p4"})
            assert await ids(people) == ["p1", "p4"]
        finally:
            await store.close()


async def test_a_server_without_transactions_is_refused_at_start(tmp_path: Path) -> None:
    server = Secantus(tmp_path / "standalone", standalone=True)
    server.start()
    store = MongoStore(server.url, database="lhcie_standalone")
    try:
        with pytest.raises(RuntimeError, match="must be a replica set"):
            await store.start()
    finally:
        await store.close()
        server.stop(graceful=False)


def test_timeouts_default_to_seconds_and_the_url_overrides_them() -> None:
    assert client_options("mongodb://db:27017/?replicaSet=rs0") == {
        "serverSelectionTimeoutMS": 5_000,
        "connectTimeoutMS": 5_000,
        "socketTimeoutMS": 15_000,
        "timeoutMS": 10_000,
    }
    assert client_options("mongodb://db:27017/?timeoutMS=500&SERVERSELECTIONTIMEOUTMS=200", appname="x") == {
        "connectTimeoutMS": 5_000,
        "socketTimeoutMS": 15_000,
        "appname": "x",
    }
