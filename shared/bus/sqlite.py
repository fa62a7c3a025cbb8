"""The embedded bus on SQLite: RabbitMQ's routing, ack and dead-letter semantics, kept in one file.

It is the bus of the one-command local run (``<data_dir>/bus.sqlite3``). A published message is a row,
committed (``synchronous=FULL``, WAL) before ``publish`` returns; a consumer marks the rows it takes and
deletes each only on ack. A process killed with messages in flight leaves them marked: the next bus on
the same file hands them back to their queue with one more delivery counted, as RabbitMQ does when a
channel dies, so a message past its delivery limit goes to ``<queue>.dead`` instead of looping.

One connection on one thread does all the work; whatever is queued for it while a transaction runs goes
into the next one (group commit), so concurrent publishes and acks share one fsync. Only a transaction
holding a publish waits for the disk (``synchronous=FULL``): a lost take or ack can only cause a
redelivery, which consumers drop by event id, and WAL keeps it across a killed process anyway. One process
owns the file at a time (the embedded run is one process).
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from shared.bus.base import (
    DEFAULT_DELIVERY_LIMIT,
    Bus,
    BusUnavailable,
    Consumer,
    Disposition,
    Handler,
    Heard,
    QueueSpec,
    Watch,
    topic_matches,
)
from shared.bus.local import LocalConsumer, LocalWatches
from shared.events import Event
from shared.files import private_dir, private_file
from shared.waiting import wait_until_set

T = TypeVar("T")
FILE_NAME = "bus.sqlite3"
IDLE_POLL = 1.0  # seconds an idle consumer waits before looking at the file again
# Most operations per transaction: bounds how long one commit holds everyone queued behind it.
GROUP_LIMIT = 512

SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY, bindings TEXT NOT NULL, delivery_limit INTEGER NOT NULL, dead INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body BLOB NOT NULL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    taken INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, taken, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('published', 0);
"""


@dataclass(frozen=True)
class Backlog:
    """What the bus holds at one instant: messages published so far, and per queue (ready, unacked)."""

    published: int
    queues: dict[str, tuple[int, int]]

    def live(self) -> int:
        """Messages ready or unacknowledged outside the dead-letter queues."""
        return sum(r + u for name, (r, u) in self.queues.items() if not name.endswith(".dead"))


def read_backlog(conn: sqlite3.Connection) -> Backlog:
    published = conn.execute("SELECT value FROM counters WHERE name = 'published'").fetchone()[0]
    rows = conn.execute(
        "SELECT q.name, COUNT(m.id) - COALESCE(SUM(m.taken), 0), COALESCE(SUM(m.taken), 0) "
        "FROM queues q LEFT JOIN messages m ON m.queue = q.name GROUP BY q.name"
    ).fetchall()
    # One read transaction: the counter and the queues are the same instant.
    return Backlog(published, {name: (ready, unacked) for name, ready, unacked in rows})


def backlog_of_file(path: Path) -> Backlog:
    """The backlog of a bus file, read from outside the process that owns it (tests, operations)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        return read_backlog(conn)
    finally:
        conn.close()


class _Op(NamedTuple):
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    durable: bool


class _Worker:
    """One connection on one thread; operations queued together commit in one transaction."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._ops: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._main, args=(opened,), name="bus sqlite", daemon=True)
        self._thread.start()
        await opened

    async def close(self) -> None:
        if self._thread is not None:
            self._ops.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = False) -> T:
        if self._thread is None or self._loop is None:
            raise BusUnavailable("embedded bus is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._ops.put(_Op(fn, future, durable))
        return await asyncio.shield(future)

    def _settle(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def _main(self, opened: asyncio.Future[None]) -> None:
        assert self._loop is not None
        try:
            # Queued messages name patients: the file is this process's alone, as the stores' files are.
            private_dir(self._path.parent, tighten=True)
            private_file(self._path)
            for suffix in ("-wal", "-shm"):
                if (sidecar := self._path.with_name(self._path.name + suffix)).exists():
                    private_file(sidecar)
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.executescript(SCHEMA)
        except Exception as exc:
            self._loop.call_soon_threadsafe(self._settle, opened, None, BusUnavailable(f"bus file: {exc}"))
            return
        self._loop.call_soon_threadsafe(self._settle, opened, None, None)
        try:
            while (first := self._ops.get()) is not None:
                batch = [first]
                closing = False
                while len(batch) < GROUP_LIMIT:
                    try:
                        op = self._ops.get_nowait()
                    except queue.Empty:
                        break
                    if op is None:
                        closing = True
                        break
                    batch.append(op)
                self._commit(conn, batch)
                if closing:
                    break
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        assert self._loop is not None
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute(f"PRAGMA synchronous={'FULL' if any(op.durable for op in batch) else 'NORMAL'}")
            conn.execute("BEGIN IMMEDIATE")
            for fn, future, _ in batch:
                # A savepoint each: one failing operation does not undo the others in its transaction.
                conn.execute("SAVEPOINT op")
                try:
                    results.append((future, fn(conn), None))
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    results.append((future, None, exc))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = BusUnavailable(f"bus commit failed: {exc}")
            results = [(op.future, None, failure) for op in batch]
        for future, result, error in results:
            self._loop.call_soon_threadsafe(self._settle, future, result, error)


@dataclass
class _Taken:
    id: int
    body: bytes
    delivery_count: int


class SqliteBus(Bus):
    def __init__(self, path: Path, *, delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> None:
        self.path = path
        self._delivery_limit = delivery_limit
        self._worker = _Worker(path)
        self._specs: dict[str, QueueSpec] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._consumers: set[_SqliteConsumer] = set()
        self._watches = LocalWatches()
        self._open = False

    async def start(self) -> None:
        await self._worker.start()
        specs = await self._worker.run(self._recover)
        self._specs.update(specs)
        self._open = True

    @staticmethod
    def _recover(conn: sqlite3.Connection) -> dict[str, QueueSpec]:
        """Load the declared queues, and hand back what a dead process had taken but not acked."""
        specs = {
            name: QueueSpec(name, tuple(json.loads(bindings)), delivery_limit=limit)
            for name, bindings, limit in conn.execute(
                "SELECT name, bindings, delivery_limit FROM queues WHERE dead = 0"
            )
        }
        conn.execute("UPDATE messages SET taken = 0, delivery_count = delivery_count + 1 WHERE taken = 1")
        for name, spec in specs.items():
            conn.execute(
                "UPDATE messages SET queue = ?, delivery_count = 0 WHERE queue = ? AND delivery_count >= ?",
                (spec.dead_letter_queue, name, spec.delivery_limit),
            )
        return specs

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()
        self._open = False
        await self._worker.close()

    def _event(self, name: str) -> asyncio.Event:
        return self._ready.setdefault(name, asyncio.Event())

    def _wake(self, *names: str) -> None:
        for name in names:
            self._event(name).set()

    async def declare(self, queues: Sequence[QueueSpec]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            for spec in queues:
                conn.execute(
                    "INSERT OR REPLACE INTO queues (name, bindings, delivery_limit, dead) VALUES (?, ?, ?, 0)",
                    (spec.name, json.dumps(spec.bindings), spec.limit(self._delivery_limit)),
                )
                conn.execute(
                    "INSERT OR IGNORE INTO queues (name, bindings, delivery_limit, dead) VALUES (?, '[]', 0, 1)",
                    (spec.dead_letter_queue,),
                )

        await self._worker.run(write)
        for spec in queues:
            self._specs[spec.name] = spec

    async def publish(self, event: Event) -> None:
        await self.publish_batch([event])

    async def publish_batch(self, events: Sequence[Event]) -> None:
        rows = [
            (name, event.to_bytes())
            for event in events
            for name, spec in self._specs.items()
            if any(topic_matches(b, event.type) for b in spec.bindings)
        ]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO messages (queue, body) VALUES (?, ?)", rows)
            conn.execute("UPDATE counters SET value = value + ? WHERE name = 'published'", (len(events),))

        await self._worker.run(write, durable=True)
        self._wake(*{name for name, _ in rows})
        self._watches.published(events)

    async def watch(self, bindings: Sequence[str], heard: Heard) -> Watch:
        # One process owns the file (the module's docstring), so every publish a watch could hear is its own.
        return self._watches.add(bindings, heard)

    async def consume(self, queue: QueueSpec, handler: Handler, *, prefetch: int = 16) -> Consumer:
        await self.declare([queue])
        consumer = _SqliteConsumer(self, queue, handler, prefetch)
        self._consumers.add(consumer)
        consumer.begin()
        return consumer

    async def _take(self, queue_name: str, limit: int) -> list[_Taken]:
        def take(conn: sqlite3.Connection) -> list[_Taken]:
            rows = conn.execute(
                "UPDATE messages SET taken = 1 WHERE id IN (SELECT id FROM messages WHERE queue = ? AND taken = 0 "
                "ORDER BY id LIMIT ?) RETURNING id, body, delivery_count",
                (queue_name, limit),
            ).fetchall()
            return sorted((_Taken(*row) for row in rows), key=lambda t: t.id)

        return await self._worker.run(take)

    async def _settle(self, spec: QueueSpec, message: _Taken, outcome: str) -> None:
        if outcome == Disposition.ACK:
            await self._worker.run(lambda c: c.execute("DELETE FROM messages WHERE id = ?", (message.id,)))
            return
        count = message.delivery_count + 1
        if outcome == Disposition.DEAD_LETTER or count >= spec.limit(self._delivery_limit):
            target, count = spec.dead_letter_queue, 0
        else:
            target = spec.name
        await self._worker.run(
            lambda c: c.execute(
                "UPDATE messages SET queue = ?, taken = 0, delivery_count = ? WHERE id = ?", (target, count, message.id)
            )
        )
        self._wake(target)

    async def get(self, queue_name: str) -> bytes | None:
        def take_one(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "DELETE FROM messages WHERE id = (SELECT id FROM messages WHERE queue = ? AND taken = 0 "
                "ORDER BY id LIMIT 1) RETURNING body",
                (queue_name,),
            ).fetchone()
            return bytes(row[0]) if row else None

        return await self._worker.run(take_one)

    async def peek(self, queue_name: str, limit: int) -> list[bytes]:
        rows = await self._worker.run(
            lambda c: c.execute(
                "SELECT body FROM messages WHERE queue = ? AND taken = 0 ORDER BY id LIMIT ?", (queue_name, limit)
            ).fetchall()
        )
        return [bytes(body) for (body,) in rows]

    async def replay(self, queue_name: str, limit: int) -> int:
        target = queue_name.removesuffix(".dead")

        def move(conn: sqlite3.Connection) -> int:
            ids = [
                i
                for (i,) in conn.execute(
                    "SELECT id FROM messages WHERE queue = ? AND taken = 0 ORDER BY id LIMIT ?", (queue_name, limit)
                )
            ]
            # Re-inserted rather than relabelled: a replayed message joins the back of its queue, afresh.
            for message_id in ids:
                conn.execute(
                    "INSERT INTO messages (queue, body) SELECT ?, body FROM messages WHERE id = ?", (target, message_id)
                )
                conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            return len(ids)

        moved = await self._worker.run(move)
        self._wake(target)
        return moved

    async def backlog(self) -> Backlog:
        """Published count and per-queue ready/unacked, at one instant (the tests' settle barrier)."""
        return await self._worker.run(read_backlog)

    async def is_healthy(self) -> bool:
        if not self._open:
            return False
        try:
            await self._worker.run(lambda c: c.execute("SELECT 1").fetchone())
        except BusUnavailable:
            return False
        return True


def _untake(message_id: int, conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE messages SET taken = 0 WHERE id = ?", (message_id,))


class _SqliteConsumer(LocalConsumer[_Taken]):
    def __init__(self, bus: SqliteBus, spec: QueueSpec, handler: Handler, prefetch: int) -> None:
        super().__init__(spec, handler)
        self._bus = bus
        self._prefetch = prefetch
        self._slot_freed = asyncio.Event()

    async def _run(self) -> None:
        ready = self._bus._event(self._spec.name)
        while not self._stopping.is_set():
            free = self._prefetch - len(self._in_flight)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            # Cleared before looking: a publish committed after the look sets it again, so none is missed.
            ready.clear()
            try:
                taken = await self._bus._take(self._spec.name, free)
            except BusUnavailable:
                return  # the bus is closing
            if self._stopping.is_set():
                # Taken as the consumer stopped: straight back, not counted as a delivery.
                for message in taken:
                    await self._bus._worker.run(partial(_untake, message.id))
                self._bus._wake(self._spec.name)
                return
            for message in taken:
                self._dispatch(message)
            if not taken:
                # Woken at once by this process's publishes; the timeout also picks up rows another
                # process wrote to the file (an operator's replay of dead letters, say).
                await wait_until_set(ready, IDLE_POLL)

    async def _settle(self, message: _Taken, outcome: str) -> None:
        await self._bus._settle(self._spec, message, outcome)

    def _released(self) -> None:
        self._slot_freed.set()

    async def _wake(self) -> None:
        self._bus._wake(self._spec.name)
        self._slot_freed.set()

    def _detach(self) -> None:
        self._bus._consumers.discard(self)
