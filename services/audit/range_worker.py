"""``python -m services.audit.range_worker``: checks ranges of the audit chain in a process of its own, for
``$verify`` on a long chain (``services.audit.ranges`` starts a few and joins what they find).

It reads one request a line on stdin (JSON: the SQLite file, the page queries the store would run, the
range, the checkpoint interval and the public key) and answers each with one line on stdout. The file is
opened read-only; a range is read a page at a time, so memory does not grow with its length. The process
imports nothing of the service but ``services.audit.verifying``: it starts in a fraction of a second, where
an interpreter forked or spawned by ``multiprocessing`` would import the parent's main module too (the
``lhcie`` CLI's imports took 12 s at a load of 16).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from services.audit.verifying import VERIFY_PAGE, PublicKey, Walk, _Checker, _fast_reads


def check_range(conn: sqlite3.Connection, request: dict[str, Any], key: PublicKey | None) -> dict[str, Any]:
    """Walk records ``first``..``last`` (``last`` ``None``: to the end) as ``AuditChain.verify`` would,
    taking the first record's link as given; say where the range starts and ends, or what broke."""
    cpu_started = time.process_time()
    first, last = request["first"], request["last"]
    upper = (1 << 62) if last is None else last
    walk = Walk(_Checker(key, request["every"], None), None, None)
    expected = first
    broken = None
    while True:
        # The next page from where the last one ended, as the in-process verify reads it (keyset on seq).
        rows = [doc for (doc,) in conn.execute(request["records_sql"], (expected, upper, VERIFY_PAGE))]
        if not rows:
            break
        cps: dict[int, Any] = {}
        if key is not None:
            found = conn.execute(request["checkpoints_sql"], (expected, expected + len(rows), VERIFY_PAGE))
            cps = {cp["seq"]: cp for cp in (json.loads(doc) for (doc,) in found)}
        result = walk.page(rows, _fast_reads(rows), cps)
        if result is not None:
            broken = [result.first_broken, result.problem]
            break
        expected = expected + len(rows) if walk.expected is None else walk.expected
        if len(rows) < VERIFY_PAGE:
            break
    checker = walk.checker
    return {
        "first": walk.first,
        "last": walk.last,
        "count": checker.count,
        "checkpoints": checker.checkpoints,
        "last_checkpoint": checker.last_checkpoint,
        "broken": broken,
        "cpu": time.process_time() - cpu_started,
    }


def open_read_only(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def main() -> None:
    conn: sqlite3.Connection | None = None
    key: PublicKey | None = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if conn is None:
                conn = open_read_only(request["path"])
                key = PublicKey(bytes.fromhex(request["public_key"])) if request["public_key"] else None
            answer = check_range(conn, request, key)
        except Exception as exc:  # the parent verifies in its own process instead
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
