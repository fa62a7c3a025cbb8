"""``$verify`` on each document store: a SQLite chain is verified in ranges by worker processes that open
its file; a MongoDB chain (SecantusDB here), which no worker can open by path, is verified in-process, as
before. Both name the same problem."""

from __future__ import annotations

from lhcie.bench.audit import _trip_records
from services.audit.chain import AuditChain
from services.audit.signing import CheckpointSigner
from services.audit.verifying import Verification
from shared.store.sqlite import SqliteStore
from tests.contract.conftest import StoreFactory

RECORDS = 30
EVERY = 5


async def test_a_chain_verifies_in_ranges_where_its_store_has_a_file(new_store: StoreFactory) -> None:
    store = new_store()
    # Ranges from one record on, two workers: on SQLite every verification here is made in ranges.
    chain = AuditChain(
        store, signer=CheckpointSigner.generate(), checkpoint_every=EVERY, verify_workers=2, verify_ranges_from=1
    )
    records = store.collection("audit_records")
    await store.start()
    trip = _trip_records()
    for i in range(RECORDS):
        await chain.append(f"event-{i + 1}", *trip[i % len(trip)])
    intact = await chain.verify()
    assert intact == Verification(True, RECORDS, checkpoints=RECORDS // EVERY)
    on_file = isinstance(store, SqliteStore)
    assert (intact.ranges > 0) is on_file

    assert await records.delete({"seq": 12}) == 1
    broken = await chain.verify()
    assert broken == Verification(False, 11, 12, "record 12 is missing", checkpoints=2)
    assert (broken.ranges > 0) is on_file
