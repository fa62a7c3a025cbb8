"""Scenario 6, the audit chain: durable appends per second (64 in flight, as concurrent consumers have
them, so the chain's group commit writes them in shared transactions; and one at a time) and the time
``$verify`` takes over a chain of N records.

Appends are timed on the run's own disk. The long chain that ``$verify`` walks is built with the same
``AuditChain.append`` on tmpfs (``/dev/shm``) when there is one: a million fsyncs would measure the disk
for a quarter of an hour and say nothing more about the chain; the walk itself reads from memory either
way once the file is cached. Each build stops at a time budget, so a slow append bounds the run rather
than the count; the result says how far it got and how the rate changed on the way.
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.audit.chain import AuditChain
from shared.store.sqlite import SqliteStore

SHM = Path("/dev/shm")


# Records the size and shape of the audit service's own: the three a document's trip leaves (received with
# its submitter, stored, the MDT alert), built by the service's own ``records_for`` (3-4 KB each as stored,
# with every search field; an earlier hand-written record was a third of that size and lacked most of the
# search fields, so it measured a shorter path than the service's records take).
def _trip_records() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    from lhcie.bench import trip
    from services.audit.records import records_for

    doc = trip.facts("00000000-0000-0000-0000-000000000000", size=102_400)
    at = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
    events = [trip.received(doc), trip.stored(doc, at=at), trip.alert(doc, "a")]
    return [(resource, index) for event in events for _, resource, index in records_for(event, recorded=at)]


def _chain(store: SqliteStore) -> AuditChain:
    """The chain as the service builds it, with checkpoint signing when this tree has it."""
    try:
        from services.audit.signing import CheckpointSigner

        return AuditChain(store, signer=CheckpointSigner.generate())
    except (ImportError, TypeError, AttributeError):
        return AuditChain(store)


WINDOW = 500


def _children_cpu() -> float:
    """User and system CPU seconds of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# In-flight appends in the concurrent runs: what a consumer with prefetch has outstanding, a few times over.
CONCURRENCY = 64


async def _append(chain: AuditChain, count: int, *, budget: float, concurrency: int = 1) -> dict[str, Any]:
    """Append up to ``count`` records within ``budget`` seconds, ``concurrency`` at a time (each awaited
    until durable, as a consumer awaits it before its ack); the rate over the first and the last
    ``WINDOW`` appends shows whether an append slows down as the chain grows."""
    run = uuid.uuid4().hex[:8]
    records = _trip_records()
    cpu_started = time.process_time()
    started = time.perf_counter()
    deadline = started + budget
    marks: list[float] = []
    done = 0
    next_index = 0

    async def appender() -> None:
        nonlocal done, next_index
        while next_index < count and time.perf_counter() <= deadline:
            i = next_index
            next_index += 1
            resource, index = records[i % len(records)]
            await chain.append(f"{run}-{i}", resource, index)
            done += 1
            if done % WINDOW == 0:
                marks.append(time.perf_counter())

    await asyncio.gather(*(appender() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    first = WINDOW / (marks[0] - started) if marks else done / max(seconds, 1e-9)
    last = WINDOW / (marks[-1] - marks[-2]) if len(marks) > 1 else first
    # CPU of this process (the store's threads included): the figure a loaded machine moves least.
    cpu_ms = (time.process_time() - cpu_started) * 1000 / max(done, 1)
    return {
        "appended": done,
        "seconds": seconds,
        "first_per_s": round(first, 1),
        "last_per_s": round(last, 1),
        "cpu_ms_per_append": round(cpu_ms, 3),
    }


async def run(work_dir: Path, *, appends: int, records: int, budget: float) -> dict[str, Any]:
    disk_dir = work_dir / "audit-bench"
    disk = SqliteStore(disk_dir / "audit.sqlite3")
    chain = _chain(disk)
    await disk.start()
    try:
        durable = await _append(chain, appends, budget=budget, concurrency=CONCURRENCY)
        one_by_one = await _append(chain, max(appends // 10, 1), budget=budget)
    finally:
        await disk.close()
    shutil.rmtree(disk_dir, ignore_errors=True)

    on_tmpfs = SHM.is_dir()
    long_dir = Path(tempfile.mkdtemp(prefix="lhcie-bench-audit-", dir=SHM if on_tmpfs else work_dir))
    store = SqliteStore(long_dir / "audit.sqlite3")
    chain = _chain(store)
    await store.start()
    try:
        built = await _append(chain, records, budget=budget, concurrency=CONCURRENCY)
        started = time.perf_counter()
        cpu_started = time.process_time()
        children_started = _children_cpu()
        result = await chain.verify()
        verify_seconds = time.perf_counter() - started
        # This process's CPU and, when the chain was verified in ranges, its worker processes' (each from
        # its start, imports included: they have ended and been waited for by now).
        workers_cpu = _children_cpu() - children_started
        verify_cpu = time.process_time() - cpu_started + workers_cpu
    finally:
        await store.close()
        shutil.rmtree(long_dir, ignore_errors=True)
    return {
        "appends": durable["appended"],
        "append_seconds": round(durable["seconds"], 3),
        "appends_per_s": round(durable["appended"] / max(durable["seconds"], 1e-9), 1),
        "append_concurrency": CONCURRENCY,
        "cpu_ms_per_append": durable["cpu_ms_per_append"],
        "sequential_cpu_ms_per_append": one_by_one["cpu_ms_per_append"],
        "sequential_appends": one_by_one["appended"],
        "sequential_appends_per_s": round(one_by_one["appended"] / max(one_by_one["seconds"], 1e-9), 1),
        "requested_records": records,
        "records": built["appended"],
        "build_budget_s": budget,
        "chain_built_on": "tmpfs" if on_tmpfs else "disk",
        "build_appends_per_s": round(built["appended"] / max(built["seconds"], 1e-9), 1),
        "build_first_per_s": built["first_per_s"],
        "build_last_per_s": built["last_per_s"],
        "verify_seconds": round(verify_seconds, 3),
        "verified_per_s": round(built["appended"] / max(verify_seconds, 1e-9), 1),
        "verify_cpu_seconds": round(verify_cpu, 3),
        "verify_ranges": result.ranges,
        "verify_workers_cpu_seconds": round(workers_cpu, 3),
        # Of which the walks themselves, as the workers timed them (the rest: starting the interpreters).
        "verify_workers_walk_cpu_seconds": round(result.worker_cpu_seconds, 3),
        "build_cpu_ms_per_append": built["cpu_ms_per_append"],
        "intact": result.intact,
        "verified_count": result.count,
    }


@dataclass(frozen=True)
class BenchResult:
    records: int
    append_seconds: float
    verify_seconds: float

    @property
    def appends_per_second(self) -> float:
        return self.records / self.append_seconds if self.append_seconds else float("inf")

    @property
    def verified_per_second(self) -> float:
        return self.records / self.verify_seconds if self.verify_seconds else float("inf")


async def bench(chain: AuditChain, records: int, *, resource: dict[str, Any] | None = None) -> BenchResult:
    """Time ``records`` appends one after another (each its own durable transaction, as the consumer
    does) and then a ``verify`` of the whole chain. The chain should start empty."""
    body = resource or {
        "resourceType": "AuditEvent",
        "action": "R",
        "outcome": "0",
        "recorded": datetime.now(UTC).isoformat(),
    }
    run = f"bench-{time.time_ns()}"
    started = time.perf_counter()
    for i in range(records):
        await chain.append(f"{run}-{i}", body, {"entities": [f"DocumentReference/{i}"], "orgs": ["RJ1"]})
    appended = time.perf_counter()
    result = await chain.verify()
    verified = time.perf_counter()
    if not result.intact:
        raise RuntimeError(f"benchmark chain does not verify: {result.problem}")
    return BenchResult(records, appended - started, verified - appended)
