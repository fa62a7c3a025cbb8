"""The document store on MongoDB (PyMongo's async API, ``AsyncMongoClient``): production's database.

One database per service, one MongoDB collection per port collection, the port's filters passed through
after a check that they stay inside the subset the SQLite adapter also speaks. A transaction is a
multi-document transaction on a client session, so the server must be a replica set (or a sharded
cluster); ``start`` refuses a standalone ``mongod`` rather than failing at the first transaction.

Failure behaviour: every operation is bounded by the client's timeouts, so a lost connection surfaces as
``StoreUnavailable`` (503 at the edge) within seconds instead of a hung request. A write conflict is
retried here when it hits a single operation (the port promises those are atomic), and raised as
``WriteConflict`` inside a transaction, whose body only the caller can run again.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

import pymongo
from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import (
    CollectionInvalid,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
)
from pymongo.read_concern import ReadConcern
from pymongo.uri_parser import parse_uri
from pymongo.write_concern import WriteConcern

from shared.store.base import (
    Collection,
    Document,
    DocumentStore,
    DuplicateKey,
    Filter,
    Index,
    Session,
    StoreUnavailable,
    WriteConflict,
    check_limit,
)

T = TypeVar("T")

# Used unless the URL sets them: a request waits seconds for the database, never indefinitely.
DEFAULT_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 5_000,
    "connectTimeoutMS": 5_000,
    "socketTimeoutMS": 15_000,
    "timeoutMS": 10_000,
}
HEALTH_TIMEOUT = 2.0
HEALTH_TIMEOUT_NO_PRIMARY = 0.25
CONFLICT_RETRIES = 5
COMMIT_RETRIES = 3

_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_OPERATORS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$exists"}
_NAMESPACE_EXISTS = 48
_WRITE_CONFLICT = 112


def check_filter(where: Filter | None) -> Filter:
    """Accept exactly the filter language of the port (base.py), so no query works on one adapter only."""
    if not where:
        return {}
    for path, cond in where.items():
        if path in ("$or", "$and"):
            if not isinstance(cond, list) or not cond:
                raise ValueError(f"{path} takes a non-empty list of filters")
            for sub in cond:
                check_filter(sub)
            continue
        _check_path(path)
        ops = cond if isinstance(cond, dict) else {"$eq": cond}
        for op, value in ops.items():
            if op not in _OPERATORS:
                raise ValueError(f"unsupported operator {op}")
            if op == "$in":
                for item in value:
                    _scalar(item)
            elif op == "$exists":
                if not isinstance(value, bool):
                    raise ValueError("$exists takes true or false")
            else:
                _scalar(value)
    return where


def _check_path(path: str) -> None:
    if path != "_id" and not _PATH.match(path):
        raise ValueError(f"invalid field path {path!r}")


def _scalar(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        raise ValueError("filters compare scalar values only")
    return value


def _is_conflict(exc: PyMongoError) -> bool:
    return exc.has_error_label("TransientTransactionError") or (
        isinstance(exc, OperationFailure) and exc.code == _WRITE_CONFLICT
    )


def _translate(exc: PyMongoError) -> Exception:
    """The port's exception for a driver error, or the error itself when it is a bug, not an outage."""
    if isinstance(exc, DuplicateKeyError):
        return DuplicateKey(_index_of(exc))
    # Before the conflict test: inside a transaction the driver labels network errors transient too, and
    # a caller that re-runs transactions on WriteConflict must not loop through an outage.
    if isinstance(exc, (ConnectionFailure, ExecutionTimeout)) or exc.timeout:
        return StoreUnavailable(type(exc).__name__)
    if _is_conflict(exc):
        return WriteConflict("the transaction conflicted with a concurrent write")
    return exc


def _reraise(exc: PyMongoError) -> NoReturn:
    translated = _translate(exc)
    if translated is exc:
        raise exc
    raise translated from exc


def _index_of(exc: DuplicateKeyError) -> str:
    details = exc.details or {}
    match = re.search(r"index: (\S+)", str(details.get("errmsg", "")))
    if match:
        return match.group(1)
    return ",".join(details.get("keyPattern", {})) or "unique index"


def client_options(url: str, **overrides: Any) -> dict[str, Any]:
    """The client's keyword options: our defaults, except where the URL (or the caller) says otherwise."""
    given = {name.lower() for name in parse_uri(url)["options"]}
    options = {k: v for k, v in DEFAULT_OPTIONS.items() if k.lower() not in given}
    return {**options, **overrides}


class _MongoSession(Session):
    def __init__(self, store: MongoStore, inner: AsyncClientSession) -> None:
        super().__init__()
        self.store = store
        self.inner = inner


class MongoStore(DocumentStore):
    def __init__(self, url: str, *, database: str, **options: Any) -> None:
        self._url = url
        self._database = database
        self._options = client_options(url, appname=f"lhcie-{database}", **options)
        self._collections: dict[str, MongoCollection] = {}
        self._client: AsyncMongoClient[Document] | None = None

    def collection(self, name: str, indexes: Sequence[Index] = ()) -> Collection:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"invalid collection name {name!r}")
        existing = self._collections.get(name)
        if existing is None:
            existing = self._collections[name] = MongoCollection(self, name, tuple(indexes))
        elif indexes:
            existing.indexes = tuple({*existing.indexes, *indexes})
        return existing

    @property
    def client(self) -> AsyncMongoClient[Document]:
        if self._client is None:
            raise RuntimeError("start() first")
        return self._client

    @property
    def database(self) -> Any:
        return self.client[self._database]

    async def start(self) -> None:
        # Constructing the client does no I/O; the first command below is the first connection.
        self._client = AsyncMongoClient(self._url, document_class=dict, **self._options)
        try:
            try:
                hello = await self._client.admin.command("hello")
            except PyMongoError as exc:
                _reraise(exc)
            if "setName" not in hello and hello.get("msg") != "isdbgrid":
                raise RuntimeError(
                    "MongoDB must be a replica set or a sharded cluster: the store needs multi-document "
                    "transactions (start mongod with --replSet and run rs.initiate())"
                )
            await self._create_collections()
        except BaseException:
            await self.close()
            raise

    async def _create_collections(self) -> None:
        db = self.database
        try:
            existing = set(await db.list_collection_names())
            for coll in self._collections.values():
                # Made up front: a transaction may write to a collection nobody has written to yet.
                if coll.name not in existing:
                    try:
                        await db.create_collection(coll.name)
                    except CollectionInvalid:
                        pass
                    except OperationFailure as exc:
                        if exc.code != _NAMESPACE_EXISTS:  # another replica made it first
                            raise
                if coll.indexes:
                    await db[coll.name].create_indexes([index_model(i) for i in coll.indexes])
        except PyMongoError as exc:
            _reraise(exc)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        inner = self.client.start_session()
        try:
            try:
                await inner.start_transaction(
                    read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority")
                )
            except PyMongoError as exc:
                _reraise(exc)
            session = _MongoSession(self, inner)
            try:
                yield session
            except BaseException:
                session._ended(False)
                await _abort(inner)
                raise
            try:
                await _commit(inner)
            except BaseException:
                session._ended(False)
                raise
            session._ended(True)
        finally:
            await inner.end_session()

    def inner_session(self, session: Session | None) -> AsyncClientSession | None:
        if session is None:
            return None
        if not isinstance(session, _MongoSession) or session.store is not self or not session.inner.in_transaction:
            raise RuntimeError("session is not an active transaction of this store")
        return session.inner

    async def run(self, session: Session | None, op: Callable[[AsyncClientSession | None], Awaitable[T]]) -> T:
        """Run one driver call with the port's error mapping; retry conflicts outside a transaction."""
        inner = self.inner_session(session)
        attempt = 0
        while True:
            try:
                return await op(inner)
            except PyMongoError as exc:
                if inner is None and isinstance(_translate(exc), WriteConflict) and attempt < CONFLICT_RETRIES:
                    attempt += 1
                    await asyncio.sleep(0.01 * 2**attempt)
                    continue
                _reraise(exc)

    async def is_healthy(self) -> bool:
        if self._client is None:
            return False
        # Once the driver's monitor has lost the primary a ping would only wait out server selection; a
        # short one still wakes the monitor, so readiness comes back as soon as the primary does.
        has_primary = self._client.topology_description.has_writable_server()
        try:
            with pymongo.timeout(HEALTH_TIMEOUT if has_primary else HEALTH_TIMEOUT_NO_PRIMARY):
                await self._client.admin.command("ping")
            return True
        except Exception:
            return False


async def _abort(inner: AsyncClientSession) -> None:
    if not inner.in_transaction:
        return
    try:
        await inner.abort_transaction()
    except PyMongoError:
        # The server aborts an abandoned transaction itself when its lifetime runs out.
        pass


async def _commit(inner: AsyncClientSession) -> None:
    for attempt in range(COMMIT_RETRIES):
        try:
            await inner.commit_transaction()
            return
        except PyMongoError as exc:
            # Committing again is safe: the server remembers a transaction's outcome.
            if exc.has_error_label("UnknownTransactionCommitResult") and attempt + 1 < COMMIT_RETRIES:
                continue
            await _abort(inner)
            _reraise(exc)


def plain(value: Any) -> Any:
    """The value as the SQLite adapter stores it (JSON, anything else as its ``str``), so that a document
    reads back the same from either adapter: tuples become lists, datetimes ISO-like strings."""
    return json.loads(json.dumps(value, default=str))


def index_model(index: Index) -> IndexModel:
    keys = [(field, pymongo.ASCENDING) for field in index.fields]
    if not index.unique:
        return IndexModel(keys, name=index.name)
    # MongoDB indexes a missing field as null, so a plain unique index admits one document without the
    # field; SQLite admits any number. A partial index over documents that have the fields matches SQLite.
    partial = {field: {"$exists": True} for field in index.fields}
    return IndexModel(keys, name=index.name, unique=True, partialFilterExpression=partial)


class MongoCollection(Collection):
    def __init__(self, store: MongoStore, name: str, indexes: tuple[Index, ...]) -> None:
        self.name = name
        self.indexes = indexes
        self._store = store

    @property
    def _coll(self) -> Any:
        return self._store.database[self.name]

    async def insert(self, doc: Document, *, session: Session | None = None) -> None:
        if "_id" not in doc:
            raise KeyError("_id")  # the port's documents carry their own key; MongoDB would invent one
        body = plain(doc)
        await self._store.run(session, lambda s: self._coll.insert_one(body, session=s))

    async def get(self, key: str, *, session: Session | None = None) -> Document | None:
        return await self._store.run(session, lambda s: self._coll.find_one({"_id": key}, session=s))

    async def replace(self, doc: Document, *, session: Session | None = None, upsert: bool = False) -> bool:
        body = plain(doc)
        result = await self._store.run(
            session, lambda s: self._coll.replace_one({"_id": body["_id"]}, body, upsert=upsert, session=s)
        )
        return result.matched_count > 0 or result.upserted_id is not None

    async def update(self, where: Filter, changes: Document, *, session: Session | None = None) -> int:
        if not changes:
            return 0
        for path in changes:
            if path == "_id" or not _PATH.match(path):
                raise ValueError(f"cannot set field {path!r}")
        query, values = check_filter(where), plain(changes)
        result = await self._store.run(session, lambda s: self._coll.update_many(query, {"$set": values}, session=s))
        return int(result.matched_count)

    async def delete(self, where: Filter, *, session: Session | None = None) -> int:
        query = check_filter(where)
        result = await self._store.run(session, lambda s: self._coll.delete_many(query, session=s))
        return int(result.deleted_count)

    async def find(
        self,
        where: Filter | None = None,
        *,
        sort: Sequence[tuple[str, int]] = (),
        limit: int = 100,
        skip: int = 0,
        session: Session | None = None,
    ) -> list[Document]:
        check_limit(limit)
        if skip < 0:
            raise ValueError("skip must not be negative")
        query = check_filter(where)
        order = [(path, pymongo.DESCENDING if d < 0 else pymongo.ASCENDING) for path, d in sort]
        for path, _ in order:
            _check_path(path)
        # The key breaks ties, as in SQLite, so that pages never overlap or skip a document.
        if all(path != "_id" for path, _ in order):
            order.append(("_id", pymongo.ASCENDING))

        async def page(s: AsyncClientSession | None) -> list[Document]:
            cursor = self._coll.find(query, sort=order, skip=skip, limit=limit, session=s)
            found: list[Document] = await cursor.to_list(length=limit)
            return found

        return await self._store.run(session, page)

    async def count(self, where: Filter | None = None) -> int:
        query = check_filter(where)
        return await self._store.run(None, lambda s: self._coll.count_documents(query, session=s))
