"""The faults a run injects into five service processes, their broker, their bucket and their stores.

Each fault is a real one: ``kill -9`` of a service process (restarted after a moment), a graceful restart
(SIGTERM, the process drains and exits, then comes back: what a rolling deployment does), the RabbitMQ node's
application stopped and started, the S3 server paused (SIGSTOP: it neither answers nor refuses, as a
hung endpoint does, and keeps its objects for when it resumes), a service's SQLite store locked by
another writer (what a long transaction or a backup holding the file looks like to the service). A
broker restart may come while a store is locked (``locked_restarts``): the service's consumers are then
cancelled while their transactions wait for the file, which once left one open for good (a 500 on every
later write of that process: ``tests/unit/test_store_sqlite_cancelled.py``).
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.processes import SERVICES, ServiceProcesses
from tests.faults.broker import PrivateRabbitMQ
from tests.s3server import MotoServer

LOCKED_RESTART = "store lock + rabbitmq restart"
# Storage's store is written by its consumer alone while documents flow, so what waits for the locked file
# when the channel drops is a consumer's transaction (intake's posts would queue first for its own file).
LOCKED_RESTART_TARGET = "storage"
STORE_SERVICES = ("intake", "storage", "notification", "audit")  # the four whose stores the pipeline writes
DRAIN_SECONDS = 10.0  # LHCIE_DRAIN_SECONDS for the run's services
# A graceful stop may take the drain limit plus this: closing the store and the bus connection, and the
# interpreter's exit, on a machine whose load average is in the twenties. Longer is a failed drain.
STOP_MARGIN = 10.0


@dataclass(frozen=True)
class Profile:
    """How much a run does. ``kills`` and ``graceful`` restarts go to the five services in turn (a shuffled
    round at a time)."""

    name: str
    kills: int
    graceful: int
    broker_restarts: int
    s3_pauses: int
    store_outages: int
    outage_seconds: tuple[float, float]  # the range an S3 pause lasts
    lock_seconds: tuple[float, float]  # and a store lock (SQLite's busy timeout is 30 s)
    gap_seconds: tuple[float, float]  # the random moment: how long the stream runs between two faults
    post_interval: float  # each sender's pace
    # How many of the broker restarts come while one of the store locks is held (one fault then, counted
    # as both).
    locked_restarts: int = 0


# make test's run: each service killed once and restarted gracefully once (a rolling restart inside the
# run: SIGTERM, drained, ready again before the next fault), one of each other fault, all in one stream.
SHORT = Profile(
    "short",
    kills=len(SERVICES),
    graceful=len(SERVICES),
    broker_restarts=1,
    s3_pauses=1,
    store_outages=1,
    outage_seconds=(4, 6),
    lock_seconds=(4, 6),
    gap_seconds=(1, 2),
    post_interval=0.3,
    locked_restarts=1,
)
# The long run's store locks outlast the busy timeout: writers give up and must see an outage, not an error.
LONG = Profile(
    "long",
    kills=100,
    graceful=10,
    broker_restarts=3,
    s3_pauses=3,
    store_outages=4,
    outage_seconds=(5, 20),
    lock_seconds=(32, 40),
    gap_seconds=(1, 6),
    post_interval=0.3,
    locked_restarts=1,
)


def rounds(kind: str, count: int, rng: random.Random) -> list[tuple[str, str]]:
    """``count`` faults of ``kind`` over the five services, a shuffled round of all five at a time."""
    faults: list[tuple[str, str]] = []
    while len(faults) < count:
        round_ = list(SERVICES)
        rng.shuffle(round_)
        faults += [(kind, name) for name in round_]
    return faults[:count]


def plan(profile: Profile, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, target) in order: the kills, with the other faults spread evenly between them."""
    kills = rounds("kill -9", profile.kills, rng)
    locks = [("store lock", STORE_SERVICES[i % len(STORE_SERVICES)]) for i in range(profile.store_outages)]
    locked = min(profile.locked_restarts, profile.broker_restarts, profile.store_outages)
    for _ in range(locked):  # a combined fault stands for one of the locks, storage's if there is one
        locks.remove(next((lock for lock in locks if lock[1] == LOCKED_RESTART_TARGET), locks[-1]))
    others = (
        rounds("SIGTERM", profile.graceful, rng)
        + [(LOCKED_RESTART, LOCKED_RESTART_TARGET)] * locked
        + [("rabbitmq restart", "broker")] * (profile.broker_restarts - locked)
        + [("s3 pause", "moto")] * profile.s3_pauses
        + locks
    )
    rng.shuffle(others)
    faults = list(kills)
    for i, other in enumerate(others):
        faults.insert(round((i + 1) * len(faults) / (len(others) + 1)), other)
    return faults


def lock_store(
    db: Path, seconds: float, held: threading.Event | None = None, until: threading.Event | None = None
) -> None:
    """Hold the write lock of a service's SQLite file (WAL: readers go on, writers wait) for ``seconds``,
    or until ``until`` is set; ``held`` is set once the lock is taken."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        if held is not None:
            held.set()
        if until is None:
            time.sleep(seconds)  # the outage itself, not a wait for anything
        else:
            until.wait(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@dataclass
class Injector:
    procs: ServiceProcesses
    broker: PrivateRabbitMQ
    moto: MotoServer
    rng: random.Random
    profile: Profile
    injected: Counter[str] = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)
    # A killed service comes back in the background while the next fault strikes another one: faults
    # overlap, as they do on a bad day, and a hundred restarts fit in a bounded run on a loaded machine.
    restarting: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # Each graceful restart: (service, seconds from SIGTERM to the exit, exit code, seconds until ready again).
    stops: list[tuple[str, float, int, float]] = field(default_factory=list)
    overdue: list[str] = field(default_factory=list)  # stops that outlasted DRAIN_SECONDS + STOP_MARGIN
    # (service, from, to) on the monotonic clock: each graceful restart, SIGTERM to ready again. No fault
    # strikes the service meanwhile (it was up when stopped, the next fault waits for it), so what its
    # clients see then is its drain's doing.
    windows: list[tuple[str, float, float]] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {text}")
        print(self.log[-1], file=sys.stderr, flush=True)

    async def run(self, faults: list[tuple[str, str]]) -> None:
        try:
            await self._run(faults)
        finally:
            await self.back_up()

    async def _run(self, faults: list[tuple[str, str]]) -> None:
        for kind, target in faults:
            await asyncio.sleep(self.rng.uniform(*self.profile.gap_seconds))  # the stream runs: a random moment
            started = time.monotonic()
            # A service is killed or stopped only once it is up again, while one killed before may still be
            # coming back (as on a bad day, and a bounded run); the other faults wait for every service.
            await self.back_up(target if kind in ("kill -9", "SIGTERM") else None)
            if kind == "kill -9":
                await self.kill(target)
            elif kind == "SIGTERM":
                await self.graceful(target)
            elif kind == "rabbitmq restart":
                await asyncio.to_thread(self.broker.restart_app)
            elif kind == "s3 pause":
                self.moto.pause()
                try:
                    await asyncio.sleep(self.rng.uniform(*self.profile.outage_seconds))  # the outage
                finally:
                    self.moto.resume()
            elif kind == "store lock":
                await asyncio.to_thread(
                    lock_store, self.procs.data_dir / f"{target}.sqlite3", self.rng.uniform(*self.profile.lock_seconds)
                )
            elif kind == LOCKED_RESTART:
                await self.locked_restart(target)
            for part in kind.split(" + "):
                self.injected[part] += 1
            self.note(f"{kind} {target} ({time.monotonic() - started:.1f} s)")

    async def locked_restart(self, target: str) -> None:
        """The broker goes away while ``target``'s store is locked, and comes back once the lock is gone:
        the service's consumers are waiting for the file when their channels drop and cancel them."""
        held, released = threading.Event(), threading.Event()
        db = self.procs.data_dir / f"{target}.sqlite3"
        lock = asyncio.create_task(asyncio.to_thread(lock_store, db, 120, held, released))
        try:
            while not held.is_set() and not lock.done():  # the lock is taken (or its taking failed)
                await asyncio.sleep(0.05)
            await asyncio.sleep(self.rng.uniform(0.5, 1.5))  # a random moment into the outage: messages queue up
            await asyncio.to_thread(self.broker.ctl, "stop_app")  # returns once every connection is dropped
        finally:
            released.set()
            await lock
        await asyncio.to_thread(self.broker.start_app)

    async def back_up(self, name: str | None = None) -> None:
        for service in [name] if name else list(self.restarting):
            if task := self.restarting.pop(service, None):
                await task

    async def kill(self, name: str) -> None:
        proc = self.procs.procs[name]
        proc.kill()
        await asyncio.to_thread(proc.wait, 30)
        downtime = self.rng.uniform(0, 1.5)  # down for a moment, as a crash-looping pod would be
        self.restarting[name] = asyncio.create_task(self._restart_after(name, downtime))

    async def graceful(self, name: str) -> None:
        """SIGTERM, wait for the exit (cut off with SIGKILL past the limit, recorded as overdue), start it
        again and wait until it is ready: the next service goes only then, as in a rolling deployment."""
        proc = self.procs.procs[name]
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(proc.wait, DRAIN_SECONDS + STOP_MARGIN)
        except subprocess.TimeoutExpired:
            self.overdue.append(f"{name}: still running {DRAIN_SECONDS + STOP_MARGIN:.0f} s after SIGTERM")
            proc.kill()
            code = await asyncio.to_thread(proc.wait, 30)
        stopped = time.monotonic()
        await asyncio.to_thread(self.restart, name)
        self.windows.append((name, sent, time.monotonic()))
        ready = time.monotonic() - stopped
        self.stops.append((name, stopped - sent, code, ready))
        self.note(f"SIGTERM {name}: exited {code} after {stopped - sent:.1f} s, ready {ready:.1f} s later")

    async def _restart_after(self, name: str, downtime: float) -> None:
        await asyncio.sleep(downtime)
        await asyncio.to_thread(self.restart, name)

    def restart(self, name: str) -> None:
        with open(self.procs.data_dir / f"{name}.log", "ab") as log:
            self.procs.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"], env=self.procs.env(name), stdout=log, stderr=log
            )
        self.procs.wait_ready(name, timeout=180)
