"""The faults a run injects into five service processes, their broker, their bucket and their stores.

Each fault is a real one: ``kill -9`` of a service process (restarted after a moment), the RabbitMQ node's
application stopped and started, the S3 server paused (SIGSTOP: it neither answers nor refuses, as a
hung endpoint does, and keeps its objects for when it resumes), a service's SQLite store locked by
another writer (what a long transaction or a backup holding the file looks like to the service).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.processes import SERVICES, ServiceProcesses
from tests.faults.broker import PrivateRabbitMQ
from tests.s3server import MotoServer

STORE_SERVICES = ("intake", "storage", "notification", "audit")  # the four whose stores the pipeline writes


@dataclass(frozen=True)
class Profile:
    """How much a run does. ``kills`` go to the five services in turn (a shuffled round at a time)."""

    name: str
    kills: int
    broker_restarts: int
    s3_pauses: int
    store_outages: int
    outage_seconds: tuple[float, float]  # the range an S3 pause lasts
    lock_seconds: tuple[float, float]  # and a store lock (SQLite's busy timeout is 30 s)
    gap_seconds: tuple[float, float]  # the random moment: how long the stream runs between two faults
    post_interval: float  # each sender's pace


SHORT = Profile(
    "short",
    kills=5,
    broker_restarts=1,
    s3_pauses=1,
    store_outages=1,
    outage_seconds=(4, 6),
    lock_seconds=(4, 6),
    gap_seconds=(1, 3),
    post_interval=0.3,
)
# The long run's store locks outlast the busy timeout: writers give up and must see an outage, not an error.
LONG = Profile(
    "long",
    kills=100,
    broker_restarts=3,
    s3_pauses=3,
    store_outages=4,
    outage_seconds=(5, 20),
    lock_seconds=(32, 40),
    gap_seconds=(1, 6),
    post_interval=0.3,
)


def plan(profile: Profile, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, target) in order: the kills, with the other faults spread evenly between them."""
    kills: list[tuple[str, str]] = []
    while len(kills) < profile.kills:
        round_ = list(SERVICES)
        rng.shuffle(round_)
        kills += [("kill -9", name) for name in round_]
    kills = kills[: profile.kills]
    others = (
        [("rabbitmq restart", "broker")] * profile.broker_restarts
        + [("s3 pause", "moto")] * profile.s3_pauses
        + [("store lock", STORE_SERVICES[i % len(STORE_SERVICES)]) for i in range(profile.store_outages)]
    )
    rng.shuffle(others)
    faults = list(kills)
    for i, other in enumerate(others):
        faults.insert(round((i + 1) * len(faults) / (len(others) + 1)), other)
    return faults


def lock_store(db: Path, seconds: float) -> None:
    """Hold the write lock of a service's SQLite file (WAL: readers go on, writers wait)."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        time.sleep(seconds)  # the outage itself, not a wait for anything
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
            # A service is killed only once it is up again; the other faults wait for every service.
            await self.back_up(target if kind == "kill -9" else None)
            if kind == "kill -9":
                await self.kill(target)
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
            self.injected[kind] += 1
            self.note(f"{kind} {target} ({time.monotonic() - started:.1f} s)")

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

    async def _restart_after(self, name: str, downtime: float) -> None:
        await asyncio.sleep(downtime)
        await asyncio.to_thread(self.restart, name)

    def restart(self, name: str) -> None:
        with open(self.procs.data_dir / f"{name}.log", "ab") as log:
            self.procs.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"], env=self.procs.env(name), stdout=log, stderr=log
            )
        self.procs.wait_ready(name, timeout=180)
