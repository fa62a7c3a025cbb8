"""``lhcie audit verify`` and ``lhcie audit export`` on the audit store of a data directory."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from lhcie.cli import main
from services.audit.tools import opened
from shared.config import load_settings

DAY = "2026-11-25T10:00:00.000000Z"


@pytest.fixture
async def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LHCIE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LHCIE_AUDIT_CHECKPOINT_INTERVAL", "3")
    async with opened(load_settings()) as chain:
        for i in range(8):
            await chain.append(
                f"event-{i}",
                {"resourceType": "AuditEvent", "action": "R"},
                {"date": DAY if i < 6 else "2026-11-26T09:00:00.000000Z"},
            )
    return tmp_path / "data"


async def test_verify_reports_an_intact_chain_and_its_checkpoints(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _main(["audit", "verify"]) == 0
    assert await _main(["audit", "verify", "--since-checkpoint", "latest"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "audit chain intact: 8 record(s) checked. 2 signed checkpoint(s) matched; 2 newer record(s) not yet signed.",
        "audit chain intact: 2 record(s) checked. 0 signed checkpoint(s) matched; 2 newer record(s) not yet signed.",
    ]


async def test_verify_names_the_first_broken_record_and_fails(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(data_dir / "audit.sqlite3") as conn:
        conn.execute(
            "UPDATE c_audit_records SET doc = json_set(doc, '$.resource.action', 'D') WHERE id = ?", (f"{5:012d}",)
        )
    assert await _main(["audit", "verify"]) == 1
    assert await _main(["audit", "verify", "--since-checkpoint", "3"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "audit chain BROKEN: 4 record(s) checked. first broken record: 5 (record 5 was altered)",
        "audit chain BROKEN: 1 record(s) checked. first broken record: 5 (record 5 was altered)",
    ]


async def test_export_writes_the_days_records_as_ndjson(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "export.ndjson"
    assert await _main(["audit", "export", "--start", "2026-11-25", "--end", "2026-11-25", "--output", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert set(lines[0]) == {"seq", "event_id", "prev_hash", "hash", "resource", "date"}
    assert await _main(["audit", "export", "--start", "2026-11-26", "--end", "2026-11-25"]) == 2


async def _main(argv: list[str]) -> int:
    # The CLI runs its own event loop; keep it off this test's loop.
    import asyncio

    return await asyncio.to_thread(main, argv)
