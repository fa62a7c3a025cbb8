"""A SQLite store keeps its planner statistics as its tables grow (shared/store/statistics.py): an
organisation's search after a cursor walks the cursor's index from the cursor instead of every record the
organisation has. Found by the bench's audit tail (issue 21): such a search cost 20 ms at 2,567 audit
records, growing with the log, and 0.1 ms after ``ANALYZE``.

The work a query does is counted in SQLite virtual-machine steps (a progress handler), not timed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from shared.store import Index
from shared.store.sqlite import SqliteStore, _field, compile_filter
from shared.store.statistics import WRITES_BETWEEN_CHECKS

RECORDS = 4 * WRITES_BETWEEN_CHECKS


def record(seq: int) -> dict[str, object]:
    # Nearly every record names the organisation (as an organisation's own audit trail does).
    return {"_id": str(seq), "seq": seq, "orgs": ["RJ1"] if seq % 5 else ["RAL"], "pad": "x" * 400}


def steps_of_search_after(path: Path, cursor: int) -> tuple[int, int]:
    """(rows found, VM steps) of the audit tail's query as the organisation, on a fresh connection."""
    conn = sqlite3.connect(path)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 100)
    condition, params = compile_filter({"orgs": "RJ1", "seq": {"$gt": cursor}})  # the store's own SQL
    try:
        rows = conn.execute(
            f"SELECT id FROM c_audit WHERE {condition} ORDER BY {_field('seq')} LIMIT 200", params
        ).fetchall()
    finally:
        conn.close()
    return len(rows), steps * 100


async def test_a_growing_store_analyses_itself_and_a_search_after_a_cursor_reads_only_what_follows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.sqlite3"
    store = SqliteStore(path)
    audit = store.collection("audit", [Index(("seq",), unique=True), Index(("orgs",))])
    await store.start()
    try:
        for seq in range(1, RECORDS + 1):  # one write each, as the chain's appends come
            await audit.insert(record(seq))
        found = await audit.find({"orgs": "RJ1", "seq": {"$gt": RECORDS - 10}}, sort=[("seq", 1)], limit=200)
        assert [d["seq"] for d in found] == [s for s in range(RECORDS - 9, RECORDS + 1) if s % 5]
    finally:
        await store.close()
    rows_late, steps_late = steps_of_search_after(path, RECORDS - 10)
    rows_all, steps_all = steps_of_search_after(path, 0)
    assert rows_late == 8 and rows_all == 200
    # Ten records from the end against the first 200 of all: without statistics both read every RJ1 record.
    assert steps_late * 10 < steps_all, (steps_late, steps_all)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'c_audit'").fetchone()[0] > 0
    finally:
        conn.close()
