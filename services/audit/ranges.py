"""``$verify`` of a long chain in ranges, each checked by a worker process, joined at their ends.

The chain from ``first`` on is cut into ranges that start just after a checkpoint position, so that the
records a checkpoint signs all lie in its range. A worker (``services.audit.range_worker``) walks a range as
the in-process verify would, except that it takes the range's first record's link and position as given.
The join then holds each range's first record against the range before: it must be at the next position
and link to that range's last hash. That is the check the in-process walk makes at the same record, in the
same order (position, then link, then everything else the worker checked), so the first problem found, the
count and the checkpoints are the same as checking the chain in one walk; the links make the join exact.

Workers are fresh interpreters (``python -m``), never forks of this process (an asyncio loop with threads),
started for one verification and ended with it; they read the SQLite file read-only. Should one not start
or not answer, the caller verifies in its own process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import services
from services.audit.verifying import Verification, _Checker

# Below this many records a chain is verified in-process: starting the workers (an interpreter each,
# ~0.1-0.3 s of CPU) would cost more than the walk saves.
RANGES_FROM = 50_000
# Ranges per worker: a worker that gets less of the CPU than the others (a busy neighbour) takes fewer.
RANGES_PER_WORKER = 4
# Workers at most, whatever the cores: a container may see many more cores than its CPU quota lets it use,
# and each worker is an interpreter (~20 MB) for the verification's length.
MAX_WORKERS = 8


class RangesFailed(Exception):
    """A worker did not start, died or could not read the file: verify in-process instead."""


@dataclass(frozen=True)
class Source:
    """Where a worker reads the chain: the SQLite file and the page queries the store itself would run
    (records by ``seq`` from/to/limit, as stored bytes; checkpoints by ``seq`` from/before/limit)."""

    path: Path
    records_sql: str
    checkpoints_sql: str


@dataclass(frozen=True)
class RangeResult:
    first: tuple[int, str] | None  # the first record's position and link; None: the range held none
    last: tuple[int, str] | None  # the last record checked, position and hash
    count: int
    checkpoints: int
    last_checkpoint: int
    broken: tuple[int, str] | None
    cpu: float


def plan(first: int, head: int, every: int, count: int) -> list[tuple[int, int | None]]:
    """About ``count`` ranges ``(from, to)`` covering ``first``..``head``, each a whole number of checkpoint
    intervals long (so each starts one past a checkpoint position when ``first`` does); the last one open
    (``to`` None), so records appended while verifying are verified too, as the in-process walk does."""
    size = -(-(head - first + 1) // max(count, 1))
    size = -(-size // every) * every
    starts = list(range(first, head + 1, size))
    return [(a, b - 1) for a, b in itertools.pairwise(starts)] + [(starts[-1], None)]


def join(
    results: Sequence[RangeResult], checker: _Checker, prev: str, expected: int
) -> tuple[Verification | None, str, int]:
    """The verification the ranges add up to: the first problem, in chain order, or where they end."""
    for r in results:
        if r.first is None:
            continue  # no records here: the next range's first must then be at ``expected``
        seq, link = r.first
        if seq != expected:
            return checker.broken(expected, f"record {expected} is missing"), prev, expected
        if link != prev:
            return checker.broken(seq, f"record {seq} does not follow record {seq - 1}"), prev, expected
        checker.count += r.count
        checker.checkpoints += r.checkpoints
        if r.checkpoints:
            checker.last_checkpoint = r.last_checkpoint
        if r.broken is not None:
            return checker.broken(*r.broken), prev, expected
        assert r.last is not None
        expected, prev = r.last[0] + 1, r.last[1]
    return None, prev, expected


async def check(
    source: Source, ranges: list[tuple[int, int | None]], *, every: int, public_key: bytes | None, workers: int
) -> list[RangeResult]:
    """Every range's result, in order, from ``workers`` processes taking the next range as each finishes.
    Once a range has broken, later ones are not started: the chain's first problem is at or before it (a
    range that merely ends early is not broken: whether records follow it decides what is missing)."""
    requests = [
        {
            "path": str(source.path),
            "records_sql": source.records_sql,
            "checkpoints_sql": source.checkpoints_sql,
            "first": a,
            "last": b,
            "every": every,
            "public_key": public_key.hex() if public_key else None,
        }
        for a, b in ranges
    ]
    results: list[RangeResult | None] = [None] * len(requests)
    queue = list(range(len(requests)))
    broken_at = len(requests)

    async def worker() -> None:
        nonlocal broken_at
        process = await _start()
        try:
            assert process.stdin is not None and process.stdout is not None
            while queue:
                i = queue.pop(0)
                if i > broken_at:
                    continue
                process.stdin.write(json.dumps(requests[i]).encode() + b"\n")
                await process.stdin.drain()
                line = await process.stdout.readline()
                try:
                    answer = json.loads(line) if line else {"error": "the worker exited"}
                    if "error" in answer:
                        raise RangesFailed(answer["error"])
                    result = results[i] = _result(answer)
                except (ValueError, KeyError, TypeError, IndexError) as exc:
                    raise RangesFailed(f"a range worker's answer could not be read: {exc}") from exc
                if result.broken is not None:
                    broken_at = min(broken_at, i)
            process.stdin.close()
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(workers, len(requests)))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    # Ranges after a broken one were skipped: the join stops at that one or before, never reaching them.
    return [r if r is not None else _SKIPPED for r in results]


_SKIPPED = RangeResult(None, None, 0, 0, 0, None, 0.0)


def _result(answer: dict[str, Any]) -> RangeResult:
    def pair(value: list[Any] | None) -> tuple[int, str] | None:
        return None if value is None else (int(value[0]), str(value[1]))

    return RangeResult(
        pair(answer["first"]),
        pair(answer["last"]),
        answer["count"],
        answer["checkpoints"],
        answer["last_checkpoint"],
        pair(answer["broken"]),
        answer["cpu"],
    )


async def _start() -> asyncio.subprocess.Process:
    # The package's own directory first on the path, wherever this process was started from.
    root = str(Path(services.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.audit.range_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise RangesFailed(f"could not start a range worker: {exc}") from exc
