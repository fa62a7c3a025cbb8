"""``$verify`` of a long chain in ranges, each walked by a worker process and joined at their ends, must
give exactly what one walk in this process gives: the same first problem, named the same way, the same
count and checkpoints. These tests force ranges on a short chain (eight ranges of one checkpoint interval:
records 1-5, 6-10, ... 36-40, the last one open) and tamper at the ranges' ends, comparing each result
with the in-process walk over the same file and with the problem a reader would expect.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import services.audit.verifying as verifying_module
from lhcie.bench.audit import _trip_records
from services.audit import ranges
from services.audit.chain import AuditChain, Verification, _canonical_text, _stored
from services.audit.signing import CheckpointSigner
from shared.store.sqlite import SqliteStore
from tests.unit.test_audit_tamper_stored import TABLE, put, records, relink, write_chain

RECORDS = 40
EVERY = 5
CHECKPOINTS = "c_audit_checkpoints"


@pytest.fixture(scope="module")
def signer() -> CheckpointSigner:
    return CheckpointSigner.generate()


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory, signer: CheckpointSigner) -> Path:
    """The chain, written once for the module; each test tampers with a copy."""
    db = tmp_path_factory.mktemp("chain") / "audit.sqlite3"
    asyncio.run(write_chain(db, signer, records=RECORDS, every=EVERY))
    return db


@pytest.fixture
def written(original: Path, tmp_path: Path) -> Path:
    db = tmp_path / "audit.sqlite3"
    shutil.copy(original, db)
    return db


async def verify(db: Path, signer: CheckpointSigner, *, workers: int, since: int | None = None) -> Verification:
    store = SqliteStore(db)
    # From one record on, every chain is verified in ranges when there are workers.
    chain = AuditChain(store, signer=signer, checkpoint_every=EVERY, verify_workers=workers, verify_ranges_from=1)
    await store.start()
    try:
        return await chain.verify(since=since)
    finally:
        await store.close()


async def both(db: Path, signer: CheckpointSigner, since: int | None = None) -> Verification:
    """The verification in ranges, after checking that it is the in-process one and took ranges."""
    in_ranges = await verify(db, signer, workers=2, since=since)
    in_process = await verify(db, signer, workers=1, since=since)
    assert in_ranges == in_process
    assert in_ranges.ranges > 1 and in_process.ranges == 0
    return in_ranges


def renumbered(doc: dict[str, Any], seq: int) -> dict[str, Any]:
    doc["seq"] = seq
    doc["resource"]["id"] = str(seq)
    return doc


def delete(db: Path, *seqs: int, table: str = TABLE) -> None:
    with sqlite3.connect(db) as conn:
        conn.executemany(f"DELETE FROM {table} WHERE id = ?", [(f"{s:012d}",) for s in seqs])


def alter_in_place(seq: int) -> Callable[[Path], None]:
    def tamper(db: Path) -> None:
        with sqlite3.connect(db) as conn:
            conn.execute(
                f'UPDATE {TABLE} SET doc = replace(doc, \'"orgs":["RJ1"]\', \'"orgs":["RJ2"]\') WHERE id = ?',
                (f"{seq:012d}",),
            )

    return tamper


def rehashed(seq: int) -> Callable[[Path], None]:
    def tamper(db: Path) -> None:
        doc = records(db)[seq]
        doc["patient"] = "9434765919"
        put(db, [doc])

    return tamper


def swap_ranges(relinked: bool) -> Callable[[Path], None]:
    """Records 11-15 and 16-20 change places, each renumbered into its new position and stored with its
    hash recomputed; ``relinked``: every record from 11 on is also linked to the one before."""

    def tamper(db: Path) -> None:
        docs = records(db)
        moved = [renumbered(docs[s + 5], s) for s in range(11, 16)] + [
            renumbered(docs[s - 5], s) for s in range(16, 21)
        ]
        if relinked:
            rewritten = moved + [docs[s] for s in range(21, RECORDS + 1)]
            relink(rewritten, docs[10]["hash"])
            put(db, rewritten, rehash=False)
        else:
            put(db, moved)

    return tamper


def swap_records(first: int) -> Callable[[Path], None]:
    """Two neighbours across a range's end exchange their contents; the chain is relinked from there."""

    def tamper(db: Path) -> None:
        docs = records(db)
        a, b = docs[first], docs[first + 1]
        for field in ("resource", "event_id", "event_type", "subtypes", "types"):
            a[field], b[field] = b[field], a[field]
        a["resource"]["id"], b["resource"]["id"] = str(first), str(first + 1)
        rewritten = [docs[s] for s in range(first, RECORDS + 1)]
        relink(rewritten, docs[first - 1]["hash"])
        put(db, rewritten, rehash=False)

    return tamper


def removed_and_renumbered(seq: int) -> Callable[[Path], None]:
    def tamper(db: Path) -> None:
        docs = records(db)
        later = [renumbered(docs[s], s - 1) for s in range(seq + 1, RECORDS + 1)]
        relink(later, docs[seq - 1]["hash"])
        put(db, later, rehash=False)
        delete(db, RECORDS)

    return tamper


def forged_checkpoint(seq: int) -> Callable[[Path], None]:
    def tamper(db: Path) -> None:
        with sqlite3.connect(db) as conn:
            conn.execute(
                f"UPDATE {CHECKPOINTS} SET doc = json_set(doc, '$.signed_at', '2020-01-01') WHERE id = ?",
                (f"{seq:012d}",),
            )

    return tamper


CASES: dict[str, tuple[Callable[[Path], None], Verification]] = {
    "last of a range altered": (alter_in_place(10), Verification(False, 9, 10, "record 10 was altered", checkpoints=1)),
    "first of a range altered": (
        alter_in_place(11),
        Verification(False, 10, 11, "record 11 was altered", checkpoints=2),
    ),
    "first of the open range altered": (
        alter_in_place(36),
        Verification(False, 35, 36, "record 36 was altered", checkpoints=7),
    ),
    "last of a range rehashed": (
        rehashed(10),
        Verification(
            False, 10, 10, "record 10 differs from signed checkpoint 10 (the chain was rewritten)", checkpoints=1
        ),
    ),
    "first of a range rehashed": (
        rehashed(11),
        Verification(False, 11, 12, "record 12 does not follow record 11", checkpoints=2),
    ),
    "last of a range deleted": (
        lambda db: delete(db, 10),
        Verification(False, 9, 10, "record 10 is missing", checkpoints=1),
    ),
    "first of a range deleted": (
        lambda db: delete(db, 11),
        Verification(False, 10, 11, "record 11 is missing", checkpoints=2),
    ),
    "a whole range deleted": (
        lambda db: delete(db, *range(11, 16)),
        Verification(False, 10, 11, "record 11 is missing", checkpoints=2),
    ),
    "the last record deleted": (
        lambda db: delete(db, 40),
        Verification(False, 39, 40, "record 40 is missing (checkpoint 40 covers it)", checkpoints=7),
    ),
    "the open range deleted": (
        lambda db: delete(db, *range(36, 41)),
        Verification(False, 35, 36, "record 36 is missing (checkpoint 40 covers it)", checkpoints=7),
    ),
    "two ranges swapped": (
        swap_ranges(relinked=False),
        Verification(False, 10, 11, "record 11 does not follow record 10", checkpoints=2),
    ),
    "two ranges swapped and relinked": (
        swap_ranges(relinked=True),
        Verification(
            False, 15, 11, "record 11 differs from signed checkpoint 15 (the chain was rewritten)", checkpoints=2
        ),
    ),
    "two records across a range's end swapped and relinked": (
        swap_records(10),
        Verification(
            False, 10, 10, "record 10 differs from signed checkpoint 10 (the chain was rewritten)", checkpoints=1
        ),
    ),
    "a range's first record removed and the rest renumbered": (
        removed_and_renumbered(11),
        Verification(
            False, 15, 11, "record 11 differs from signed checkpoint 15 (the chain was rewritten)", checkpoints=2
        ),
    ),
    "a checkpoint at a range's end deleted": (
        lambda db: delete(db, 10, table=CHECKPOINTS),
        Verification(False, 10, 10, "checkpoint 10 is missing", checkpoints=1),
    ),
    "a checkpoint at a range's end forged": (
        forged_checkpoint(20),
        Verification(False, 20, 20, "the signature of checkpoint 20 is not valid", checkpoints=3),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_tampering_at_a_range_boundary_is_named_as_in_one_walk(
    case: str, written: Path, signer: CheckpointSigner
) -> None:
    tamper, expected = CASES[case]
    tamper(written)
    assert await both(written, signer) == expected


async def test_an_untouched_chain_verifies_in_ranges_from_its_bytes(
    written: Path, signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The workers are other processes: this only holds the in-process walk to the fast path.
    def parsed_anyway(doc: dict[str, Any]) -> str:
        raise AssertionError(f"record {doc.get('seq')} was verified the slow way")

    monkeypatch.setattr(verifying_module, "hash_of", parsed_anyway)
    result = await both(written, signer)
    assert result == Verification(True, RECORDS, checkpoints=8)
    assert result.ranges == 8 and result.worker_cpu_seconds > 0


async def test_since_a_checkpoint_ranges_start_after_it(written: Path, signer: CheckpointSigner) -> None:
    assert await both(written, signer, since=10) == Verification(True, 30, since=10, checkpoints=6)
    alter_in_place(16)(written)
    assert await both(written, signer, since=10) == Verification(
        False, 5, 16, "record 16 was altered", since=10, checkpoints=1
    )


async def test_ranges_of_two_checkpoint_intervals(
    written: Path, signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Four ranges of ten: a consistent rewrite inside a range is named by its second checkpoint.
    monkeypatch.setattr(ranges, "RANGES_PER_WORKER", 2)
    docs = records(written)
    docs[17]["resource"]["outcome"] = "4"
    rewritten = [docs[s] for s in range(17, RECORDS + 1)]
    relink(rewritten, docs[16]["hash"])
    put(written, rewritten, rehash=False)
    result = await both(written, signer)
    assert result == Verification(
        False, 20, 17, "record 17 differs from signed checkpoint 20 (the chain was rewritten)", checkpoints=3
    )
    assert result.ranges == 4


async def test_records_appended_while_verifying_are_verified_too(tmp_path: Path, signer: CheckpointSigner) -> None:
    # The last range is open: what the in-process walk would reach, the ranges reach.
    store = SqliteStore(tmp_path / "audit.sqlite3")
    chain = AuditChain(store, signer=signer, checkpoint_every=EVERY, verify_workers=2, verify_ranges_from=1)
    await store.start()
    try:
        trip = _trip_records()
        for i in range(RECORDS):
            await chain.append(f"event-{i + 1}", *trip[i % len(trip)])
        planned = await chain._ranges_for(1)
        assert planned is not None and planned[1][-1] == (36, None)
        for i in range(RECORDS, RECORDS + 7):
            await chain.append(f"event-{i + 1}", *trip[i % len(trip)])
        source, planned_ranges, public_key = planned
        results = await ranges.check(source, planned_ranges, every=EVERY, public_key=public_key, workers=2)
        assert results[-1].last is not None and results[-1].last[0] == RECORDS + 7
    finally:
        await store.close()


async def test_a_file_the_workers_cannot_open_is_verified_in_this_process(
    written: Path, signer: CheckpointSigner
) -> None:
    store = SqliteStore(written)
    chain = AuditChain(store, signer=signer, checkpoint_every=EVERY, verify_workers=2, verify_ranges_from=1)
    await store.start()
    try:
        # The file is gone from its path (moved, say) while this process holds it open.
        os.unlink(written)
        result = await chain.verify()
    finally:
        await store.close()
    assert result == Verification(True, RECORDS, checkpoints=8)
    assert result.ranges == 0


def test_ranges_start_one_past_a_checkpoint_and_the_last_is_open() -> None:
    assert ranges.plan(1, 1_000_000, 100, 8) == [(1 + i * 125_000, (i + 1) * 125_000) for i in range(7)] + [
        (875_001, None)
    ]
    assert ranges.plan(101, 1_000, 100, 4) == [(101, 400), (401, 700), (701, None)]
    assert ranges.plan(1, 3, 5, 8) == [(1, None)]


def test_the_stored_form_the_workers_read_is_the_chains() -> None:
    body = _canonical_text({"seq": 1, "prev_hash": "0" * 64})
    digest = hashlib.sha256(body.encode()).hexdigest()
    assert verifying_module._fast_read(_stored(f"{1:012d}", digest, body).encode()) == (1, "0" * 64, digest)
