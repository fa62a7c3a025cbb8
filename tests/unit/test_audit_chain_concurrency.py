"""The audit hash chain with two writers: two AuditChain replicas on two SQLite stores over one file."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.audit.chain import GENESIS, AuditChain
from shared.store.sqlite import SqliteStore

PER_WRITER = 25


def resource(writer: str, n: int) -> dict[str, object]:
    return {"resourceType": "AuditEvent", "outcome": "0", "source": {"observer": {"display": writer}}, "n": n}


async def test_two_concurrent_writers_keep_one_linear_intact_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    stores = [SqliteStore(path), SqliteStore(path)]
    chains = [AuditChain(store) for store in stores]
    for store in stores:
        await store.start()
    try:

        async def write(chain: AuditChain, writer: str) -> None:
            for n in range(PER_WRITER):
                await chain.append(f"{writer}-{n}", resource(writer, n), {"orgs": [writer]})
                await asyncio.sleep(0)  # let the other writer in between appends

        # Each writer also replays one of the other's events, as a redelivered message would.
        await asyncio.gather(
            write(chains[0], "a"),
            write(chains[1], "b"),
            chains[0].append("b-0", resource("b", 0), {}),
            chains[1].append("a-0", resource("a", 0), {}),
        )

        for chain in chains:
            verification = await chain.verify()
            assert (verification.intact, verification.count) == (True, 2 * PER_WRITER)
        records = await chains[0].search({}, limit=1000, skip=0)
        assert [r["seq"] for r in records] == list(range(1, 2 * PER_WRITER + 1))
        assert sorted(r["event_id"] for r in records) == sorted(f"{w}-{n}" for w in "ab" for n in range(PER_WRITER))
        assert [r["prev_hash"] for r in records] == [GENESIS] + [r["hash"] for r in records[:-1]]
    finally:
        for store in stores:
            await store.close()


async def test_verify_finds_a_record_altered_after_concurrent_writes(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    stores = [SqliteStore(path), SqliteStore(path)]
    chains = [AuditChain(store) for store in stores]
    for store in stores:
        await store.start()
    try:
        await asyncio.gather(
            *(chain.append(f"{i}-{n}", resource(str(i), n), {}) for i, chain in enumerate(chains) for n in range(5))
        )
        records = stores[0].collection("audit_records")
        assert await records.update({"seq": 4}, {"resource.outcome": "8"}) == 1
        verification = await chains[1].verify()
        assert (verification.intact, verification.count, verification.first_broken) == (False, 3, 4)
    finally:
        for store in stores:
            await store.close()
