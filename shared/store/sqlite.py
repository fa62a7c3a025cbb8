"""The document store on SQLite (stdlib ``sqlite3``): the embedded run's database, one file per service.

Each collection is a table of JSON documents; indexes are expression indexes on ``json_extract``. One
writer connection serialises writes (SQLite has a single writer anyway) and a second connection reads
without waiting for it (WAL mode). ``synchronous=FULL``: a committed write survives a power cut, which
is what lets a consumer ack a message after its write.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson

from shared.files import private_dir, private_file
from shared.store.base import (
    Collection,
    Document,
    DocumentStore,
    DuplicateKey,
    Filter,
    Index,
    Session,
    StoreUnavailable,
    check_limit,
)
from shared.store.statistics import PlannerStatistics, analyse, page_count

T = TypeVar("T")
log = logging.getLogger(__name__)
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
# SQLite's primary result codes that mean the file cannot be used just now (an extended code keeps its
# primary one in the low byte).
_OUTAGES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)
_BEGIN = "BEGIN IMMEDIATE"
_COMPARE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _field(path: str) -> str:
    if path == "_id":
        return "id"
    if not _PATH.match(path):
        raise ValueError(f"invalid field path {path!r}")
    return f"json_extract(doc, '$.{path}')"


def _scalar(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        raise ValueError("filters compare scalar values only")
    return value


def compile_filter(where: Filter | None) -> tuple[str, list[Any]]:
    """Translate the port's MongoDB-style filter into a SQL condition and its parameters."""
    if not where:
        return "1", []
    clauses: list[str] = []
    params: list[Any] = []
    for path, cond in where.items():
        if path in ("$or", "$and"):
            if not isinstance(cond, list) or not cond:
                raise ValueError(f"{path} takes a non-empty list of filters")
            parts = [compile_filter(sub) for sub in cond]
            joiner = " OR " if path == "$or" else " AND "
            clauses.append("(" + joiner.join(f"({sql})" for sql, _ in parts) + ")")
            for _, sub_params in parts:
                params.extend(sub_params)
            continue
        column = _field(path)
        ops = cond if isinstance(cond, dict) else {"$eq": cond}
        for op, value in ops.items():
            if op == "$eq" and value is None:
                clauses.append(f"{column} IS NULL")
            elif op == "$eq":
                if path == "_id":
                    clauses.append("id = ?")
                    params.append(_scalar(value))
                else:
                    # MongoDB semantics: equality also matches an element of an array field.
                    clauses.append(
                        f"({column} = ? OR (json_type(doc, '$.{path}') = 'array' AND EXISTS "
                        f"(SELECT 1 FROM json_each(doc, '$.{path}') AS e WHERE e.value = ?)))"
                    )
                    params.extend([_scalar(value), _scalar(value)])
            elif op == "$ne":
                clauses.append(f"({column} IS NULL OR {column} != ?)" if value is not None else f"{column} IS NOT NULL")
                if value is not None:
                    params.append(_scalar(value))
            elif op in _COMPARE:
                clauses.append(f"{column} {_COMPARE[op]} ?")
                params.append(_scalar(value))
            elif op == "$in":
                values = [_scalar(v) for v in value]
                if not values:
                    clauses.append("0")
                else:
                    clauses.append(f"{column} IN ({','.join('?' * len(values))})")
                    params.extend(values)
            elif op == "$exists":
                target = "id" if path == "_id" else f"json_type(doc, '$.{path}')"
                clauses.append(f"{target} IS {'NOT ' if value else ''}NULL")
            else:
                raise ValueError(f"unsupported operator {op}")
    return " AND ".join(clauses), params


class _SqliteSession(Session):
    def __init__(self) -> None:
        super().__init__()
        self.begun = False
        # Statements owed before the next one (BEGIN, SAVEPOINT): they travel with it, in the same hop.
        self.owed: list[str] = []
        self.savepoints = 0


class SqliteStore(DocumentStore):
    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._collections: dict[str, SqliteCollection] = {}
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        # The event loop's own reader, for reads of one row by its key: it never waits for a lock.
        self._point_reader: sqlite3.Connection | None = None
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-w-{path.stem}")
        self._read_thread = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-r-{path.stem}")
        self._write_lock = asyncio.Lock()
        self._active: _SqliteSession | None = None
        self._statistics = PlannerStatistics()
        self._analysing: asyncio.Task[None] | None = None

    @property
    def path(self) -> Path:
        return self._path

    def collection(self, name: str, indexes: Sequence[Index] = ()) -> Collection:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"invalid collection name {name!r}")
        existing = self._collections.get(name)
        if existing is None:
            existing = self._collections[name] = SqliteCollection(self, name, tuple(indexes))
        elif indexes:
            existing.indexes = tuple({*existing.indexes, *indexes})
        return existing

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare_files)
        self._writer = await self._on_writer(self._connect)
        self._reader = await self._on_reader(self._connect)
        self._point_reader = await self._on_reader(self._connect_point_reader)
        for coll in self._collections.values():
            await self._on_writer(coll.create_sql_objects, self._writer)
        await self._keep_statistics()

    def _wrote(self) -> None:
        if self._statistics.wrote() and (self._analysing is None or self._analysing.done()):
            self._analysing = asyncio.create_task(self._keep_statistics())

    async def _keep_statistics(self) -> None:
        """``ANALYZE`` when the file is due (shared/store/statistics.py). A lock or an outage only puts it
        off to the next check: the plans stay as they were."""
        try:
            async with self._write_lock:
                if self._writer is None:
                    return
                pages = await self._on_writer(_translate, page_count, self._writer)
                if self._statistics.due(pages):
                    await self._on_writer(_translate, analyse, self._writer)
                    self._statistics.analysed_pages = pages
        except StoreUnavailable as exc:
            log.warning("store.statistics_put_off file=%s reason=%s", self._path.name, exc, extra={"code": "DB002"})

    def _prepare_files(self) -> None:
        # SQLite gives its -wal and -shm files the database file's mode, so creating that one 0600 first
        # covers all three; files left by an older, looser run are narrowed.
        private_dir(self._path.parent, tighten=True)
        private_file(self._path)
        for suffix in ("-wal", "-shm", "-journal"):
            sidecar = self._path.with_name(self._path.name + suffix)
            if sidecar.exists():
                private_file(sidecar)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
        return conn

    def _connect_point_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA busy_timeout=0")  # it runs on the event loop: a lock sends its read elsewhere
        return conn

    async def close(self) -> None:
        if self._analysing is not None:
            await asyncio.gather(self._analysing, return_exceptions=True)
        async with self._write_lock:
            if self._writer is not None:
                await self._on_writer(self._writer.close)
            if self._reader is not None:
                await self._on_reader(self._reader.close)
            if self._point_reader is not None:
                self._point_reader.close()
            self._writer = self._reader = self._point_reader = None
        self._write_thread.shutdown(wait=True)
        self._read_thread.shutdown(wait=True)

    async def _on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        # A job handed to the writer thread runs to its end even if its caller is cancelled (a consumer's
        # task when the broker drops the channel): cancelled before it ran, a COMMIT would be dropped and
        # the transaction left open on the one writer connection. What the job's caller did not see, the
        # transaction's end (_end_if_open, queued after it) sorts out.
        future = asyncio.get_running_loop().run_in_executor(self._write_thread, fn, *args)
        future.add_done_callback(_retrieved)
        return await asyncio.shield(future)

    async def _on_reader(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._read_thread, fn, *args)

    savepoints = True

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with self._write_lock:
            assert self._writer is not None, "start() first"
            # BEGIN travels with the first statement and COMMIT is the last hop: every hop to the writer
            # thread costs a wake-up on each side, and a transaction is held under the write lock.
            session = self._active = _SqliteSession()
            session.owed.append(_BEGIN)
            try:
                yield session
                if session.begun:
                    await self._on_writer(_translate, lambda c: c.execute("COMMIT"), self._writer)
            except BaseException:
                session._ended(False)
                # An error, a failed COMMIT or a cancelled task: the transaction ends here, rolled back if it
                # is still open. Asked on the writer thread, after every job handed to it, not of
                # ``session.begun``: a caller cancelled while its BEGIN waited on the busy timeout stopped
                # waiting before the thread began the transaction, and the thread went on to begin and
                # write (issue 17: left open, every later transaction of the process failed with
                # "cannot start a transaction within a transaction", a 500 at the edge).
                await self._on_writer(_end_if_open, self._writer)
                raise
            finally:
                self._active = None
            session._ended(True)
            if session.begun:
                self._wrote()

    @asynccontextmanager
    async def savepoint(self, session: Session) -> AsyncIterator[None]:
        if session is not self._active:
            raise RuntimeError("session is not the active transaction")
        assert isinstance(session, _SqliteSession) and self._writer is not None
        session.savepoints += 1
        name = f"sp{session.savepoints}"
        # Like BEGIN, SAVEPOINT waits for the block's first statement; a block that writes nothing costs no
        # hop. It is never released: COMMIT ends them all, and a later ROLLBACK TO names its own.
        statement = f"SAVEPOINT {name}"
        session.owed.append(statement)
        mark = session._mark()
        try:
            yield
        except BaseException:
            session._drop_since(mark)  # what the block announced is undone with its writes
            if statement in session.owed:
                session.owed.remove(statement)
            else:
                # If SQLite has rolled the whole transaction back (an I/O error), this fails too, and so
                # does the transaction: every block in it is undone.
                _translate(_statement(f"ROLLBACK TO {name}"), self._writer)  # in the transaction: see write()
            raise

    async def write(self, session: Session | None, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer: inside ``session`` if given, else as its own transaction."""
        assert self._writer is not None, "start() first"
        if session is not None:
            if session is not self._active:
                raise RuntimeError("session is not the active transaction")
            assert isinstance(session, _SqliteSession)
            if _BEGIN in session.owed:
                return await self._on_writer(_owed_then, session, fn, self._writer)
            # Inside a begun transaction a statement waits for nobody: BEGIN IMMEDIATE took the file's write
            # lock, and in WAL mode nothing else is needed before COMMIT. So it runs here, on the event loop:
            # the hop to the writer thread and back cost more CPU than the statement (10-20 % of each
            # consumer's Python time under load, py-spy --gil). BEGIN and COMMIT, which may wait (for the
            # lock, for the fsync), stay on the writer thread. The write lock keeps the connection to one
            # user at a time.
            if session.owed:
                return _owed_then(session, fn, self._writer)
            return _still_in(fn, self._writer)
        async with self._write_lock:
            result: T = await self._on_writer(_translate, fn, self._writer)
        self._wrote()
        return result

    async def read(self, session: Session | None, fn: Callable[[sqlite3.Connection], T]) -> T:
        if session is not None:
            return await self.write(session, fn)
        assert self._reader is not None, "start() first"
        return await self._on_reader(_translate, fn, self._reader)

    async def read_point(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read of one row by its key, outside any transaction: on the event loop, where it costs a few
        microseconds, instead of a hop to the reader thread and back (≈25 µs of CPU, more than the read; a
        stored document cost notification four of them, its sharing-policy look-ups). In WAL mode a read
        waits for no writer; should it meet a lock all the same (a WAL file being recovered), it does not
        wait on the loop but goes to the reader thread, which waits as any read does."""
        assert self._point_reader is not None, "start() first"
        try:
            return _translate(fn, self._point_reader)
        except StoreUnavailable:
            return await self.read(None, fn)

    async def is_healthy(self) -> bool:
        try:
            await self.read(None, lambda c: c.execute("SELECT 1").fetchone())
            return True
        except Exception:
            return False


# A document's stored text is orjson's (a tenth of the standard library's time for a document of a few KB),
# written as ``json.dumps(doc, default=str)`` wrote it where JSON has no type of its own: a datetime, a date
# or a dataclass becomes its str(); so do whatever orjson does not know (Decimal, set). Floats are written
# in orjson's shortest form (0.00001 where json wrote 1e-05): the same number to every reader. Rows are read
# by the standard library: orjson reads an integer past 64 bits as a float, and such a one is written here.
_AS_BEFORE = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS


def _text(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str, option=_AS_BEFORE).decode()
    except TypeError:  # an integer past 64 bits, which the standard library writes
        return json.dumps(value, separators=(",", ":"), default=str)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a writer job's failure as seen: its caller may have been cancelled and never look."""
    if not future.cancelled():
        future.exception()


def _end_if_open(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _owed_then(session: _SqliteSession, fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    if session.begun and not conn.in_transaction:
        raise StoreUnavailable("sqlite: the transaction was rolled back")  # see _still_in
    while session.owed:
        statement = session.owed[0]
        _translate(_statement(statement), conn)
        session.owed.pop(0)
        if statement == _BEGIN:
            session.begun = True  # from here on the transaction must end in COMMIT or ROLLBACK
    return _translate(fn, conn)


def _statement(sql: str) -> Callable[[sqlite3.Connection], sqlite3.Cursor]:
    return lambda c: c.execute(sql)


def _still_in(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    # SQLite rolls a whole transaction back by itself on some errors (I/O, disk full): a statement run
    # after that would commit on its own, outside the transaction its caller believes it is in.
    if not conn.in_transaction:
        raise StoreUnavailable("sqlite: the transaction was rolled back")
    return _translate(fn, conn)


def _translate(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    try:
        return fn(conn)
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" in str(exc):
            raise DuplicateKey(str(exc).split(":")[-1].strip()) from None
        raise
    except sqlite3.OperationalError as exc:
        # Another writer held the file past the busy timeout (a backup, a long transaction), the disk is
        # full or failing, the file cannot be opened: an outage like a lost MongoDB connection, so 503 at
        # the edge and a retry in place in a consumer, never a 500 or a failed delivery that counts
        # towards the dead-letter limit. Any other error is a fault of the statement or of this code.
        if (exc.sqlite_errorcode or 0) & 0xFF in _OUTAGES or "locked" in str(exc):
            raise StoreUnavailable(f"sqlite: {exc}") from None
        raise


class SqliteCollection(Collection):
    def __init__(self, store: SqliteStore, name: str, indexes: tuple[Index, ...]) -> None:
        self.name = name
        self.indexes = indexes
        self._store = store
        self._table = f"c_{name}"

    def _order_by(self, sort: Sequence[tuple[str, int]]) -> str:
        order = ", ".join(f"{_field(p)} {'DESC' if d < 0 else 'ASC'}" for p, d in sort)
        if not order:
            return "id"
        # The id tiebreak makes paging stable, but SQLite cannot take it from the sort field's index and sorts
        # every row it steps over ("TEMP B-TREE FOR RIGHT PART OF ORDER BY"): the audit log's newest-first
        # and chain-order pages cost O(offset log offset) per page (137 ms against 10 ms at 15,000 records).
        # Sorted by a unique index's fields, only rows lacking them can tie, and SQLite walks equal index keys
        # in rowid order, so pages stay stable without the tiebreak.
        fields = [p for p, _ in sort]
        if any(index.unique and list(index.fields) == fields[: len(index.fields)] for index in self.indexes):
            return order
        return f"{order}, id"

    def create_sql_objects(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {self._table} (id TEXT PRIMARY KEY, doc TEXT NOT NULL)")
        for index in self.indexes:
            columns = ", ".join(_field(f) for f in index.fields)
            unique = "UNIQUE " if index.unique else ""
            conn.execute(f"CREATE {unique}INDEX IF NOT EXISTS {self._table}_{index.name} ON {self._table} ({columns})")
        # Equality also matches an array element, so it compiles to "value = ? OR (json_type = 'array' AND
        # EXISTS ...)". SQLite answers an OR from indexes only if every branch has one: index the JSON type
        # of each indexed field too, or each such lookup scans the whole table (measured: 40 ms -> 0.09 ms
        # at 15,000 audit records).
        for path in sorted({f for index in self.indexes for f in index.fields if f != "_id"}):
            name = path.replace(".", "_")
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {self._table}_jt_{name} ON {self._table} (json_type(doc, '$.{path}'))"
            )

    async def insert(self, doc: Document, *, session: Session | None = None) -> None:
        key, body = str(doc["_id"]), _text(doc)
        await self._store.write(
            session, lambda c: c.execute(f"INSERT INTO {self._table} (id, doc) VALUES (?, ?)", (key, body))
        )

    async def insert_many(self, docs: Sequence[Document], *, session: Session | None = None) -> None:
        rows = [(str(d["_id"]), _text(d)) for d in docs]
        if rows:
            # One hop to the writer thread for the lot: a hop costs more than a row's insert.
            await self._store.write(
                session, lambda c: c.executemany(f"INSERT INTO {self._table} (id, doc) VALUES (?, ?)", rows)
            )

    async def insert_serialized(self, rows: Sequence[tuple[str, str]], *, session: Session | None = None) -> None:
        """Insert ``(key, JSON text)`` rows as given: for a caller that has already serialised its documents
        (the audit chain stores the exact bytes it hashed). The text must be a JSON object holding ``_id``."""
        rows = list(rows)
        if rows:
            await self._store.write(
                session, lambda c: c.executemany(f"INSERT INTO {self._table} (id, doc) VALUES (?, ?)", rows)
            )

    @property
    def path(self) -> Path:
        """The file this collection is kept in."""
        return self._store.path

    def select_sql(
        self, where: Filter | None, *, sort: Sequence[tuple[str, int]], serialized: bool, fields: Sequence[str] = ()
    ) -> str:
        """The query ``find_serialized`` (``serialized``) or ``find`` runs, its parameters those of ``where``'s
        values in order then the limit: for a process of its own that reads the file as this store would."""
        condition, _ = compile_filter(where)
        column = "CAST(doc AS BLOB)" if serialized else "doc"
        columns = "".join(f", {_field(f)}" for f in fields)
        return f"SELECT {column}{columns} FROM {self._table} WHERE {condition} ORDER BY {self._order_by(sort)} LIMIT ?"

    async def find_serialized(
        self, where: Filter | None, *, sort: Sequence[tuple[str, int]], limit: int, fields: Sequence[str] = ()
    ) -> list[tuple[Any, ...]]:
        """Rows of ``(stored JSON as UTF-8 bytes, *fields)`` without parsing the documents in Python (the
        fields are extracted by SQLite): for a caller that hashes what was stored, bytes spare decoding the
        text only to encode it again."""
        check_limit(limit)
        _, params = compile_filter(where)
        sql = self.select_sql(where, sort=sort, serialized=True, fields=fields)
        return await self._store.read(None, lambda c: c.execute(sql, [*params, limit]).fetchall())

    async def get(self, key: str, *, session: Session | None = None) -> Document | None:
        sql = f"SELECT doc FROM {self._table} WHERE id = ?"
        if session is None:
            row = await self._store.read_point(lambda c: c.execute(sql, (key,)).fetchone())
        else:
            row = await self._store.read(session, lambda c: c.execute(sql, (key,)).fetchone())
        return json.loads(row[0]) if row else None

    async def replace(self, doc: Document, *, session: Session | None = None, upsert: bool = False) -> bool:
        key, body = str(doc["_id"]), _text(doc)
        if upsert:
            sql = f"INSERT INTO {self._table} (id, doc) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc"
            params: tuple[str, ...] = (key, body)
        else:
            sql, params = f"UPDATE {self._table} SET doc = ? WHERE id = ?", (body, key)
        count = await self._store.write(session, lambda c: c.execute(sql, params).rowcount)
        return count > 0

    async def update(self, where: Filter, changes: Document, *, session: Session | None = None) -> int:
        if not changes:
            return 0
        condition, params = compile_filter(where)
        setter = "doc"
        set_params: list[Any] = []
        for path in changes:
            if path == "_id" or not _PATH.match(path):
                raise ValueError(f"cannot set field {path!r}")
            setter = f"json_set({setter}, '$.{path}', json(?))"
            set_params.append(_text(changes[path]))
        sql = f"UPDATE {self._table} SET doc = {setter} WHERE {condition}"
        return await self._store.write(session, lambda c: c.execute(sql, [*set_params, *params]).rowcount)

    async def delete(self, where: Filter, *, session: Session | None = None) -> int:
        condition, params = compile_filter(where)
        sql = f"DELETE FROM {self._table} WHERE {condition}"
        return await self._store.write(session, lambda c: c.execute(sql, params).rowcount)

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
        condition, params = compile_filter(where)
        sql = f"SELECT doc FROM {self._table} WHERE {condition} ORDER BY {self._order_by(sort)} LIMIT ? OFFSET ?"
        rows = await self._store.read(session, lambda c: c.execute(sql, [*params, limit, skip]).fetchall())
        return [json.loads(r[0]) for r in rows]

    async def count(self, where: Filter | None = None) -> int:
        condition, params = compile_filter(where)
        sql = f"SELECT COUNT(*) FROM {self._table} WHERE {condition}"
        row = await self._store.read(None, lambda c: c.execute(sql, params).fetchone())
        return int(row[0])
