"""``lhcie run`` killed with ``kill -9`` (or stopped with SIGTERM) in the middle of a stream of documents, then started again on the
same data directory: every document that got a 202 is stored, alerted exactly once and audited, and the
audit chain verifies with as many records as the store holds.

Before the embedded bus kept its queues in ``<data_dir>/bus.sqlite3``, messages already handed to it died
with the process: their documents were stored at restart but never alerted or audited.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Tokens, make_settings
from tests.e2e.test_quickstart import start_lhcie_run
from tests.helpers import PDF, document_reference, settled

pytestmark = pytest.mark.e2e

DOCUMENTS = 60
KILL_AFTER = 20  # accepted documents before the kill: the rest of the stream is in flight or refused
FHIR = {"Content-Type": "application/fhir+json"}


async def stream(port: int, tokens: Tokens, server: subprocess.Popen[bytes], sig: signal.Signals) -> list[str]:
    """Post documents four at a time; signal the process once ``KILL_AFTER`` have been accepted."""
    accepted: list[str] = []
    signalled: list[signal.Signals] = []
    headers = {**FHIR, **tokens.headers()}
    async with aiohttp.ClientSession() as http:

        async def post(n: int) -> None:
            body = document_reference(content=PDF + f"% stream {n}\n".encode())
            try:
                async with http.post(
                    f"http://127.0.0.1:{port}/fhir/DocumentReference", json=body, headers=headers
                ) as response:
                    if response.status == 202:
                        accepted.append((await response.json())["id"])
                    if len(accepted) >= KILL_AFTER and server.poll() is None and not signalled:
                        signalled.append(sig)
                        server.send_signal(sig)
            except aiohttp.ClientError:
                pass  # the process died under this request: no 202, so no promise was made

        for start in range(0, DOCUMENTS, 4):
            await asyncio.gather(*(post(n) for n in range(start, start + 4)))
    return accepted


async def get_json(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    async with http.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def audit_records(data_dir: Path) -> int:
    conn = sqlite3.connect(f"file:{data_dir / 'audit.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT COUNT(*) FROM c_audit_records").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm-under-load"])
async def test_a_stop_mid_stream_loses_no_accepted_document_alert_or_audit_record(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGKILL: nothing is drained. SIGTERM with documents in flight: the process drains and exits 0."""
    data_dir = tmp_path / "data"
    server, _, port = start_lhcie_run(tmp_path)
    tokens = Tokens(make_settings(data_dir))
    try:
        accepted = await stream(port, tokens, server, sig)
        output, _ = await asyncio.to_thread(server.communicate, timeout=60)  # reads the pipe while it drains
        assert server.returncode == (-signal.SIGKILL if sig is signal.SIGKILL else 0), output.decode()[-3000:]
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert len(accepted) >= KILL_AFTER

    server, _, port = start_lhcie_run(tmp_path)  # the same data directory
    try:
        base = f"http://127.0.0.1:{port}/fhir"
        async with aiohttp.ClientSession() as http:
            # One document after the restart, to compare the others' audit trails with.
            async with http.post(
                f"{base}/DocumentReference",
                json=document_reference(content=PDF + b"% control\n"),
                headers={**FHIR, **tokens.headers()},
            ) as response:
                assert response.status == 202
                control = (await response.json())["id"]
            await settled(data_dir, timeout=120)

            system = tokens.headers()
            for doc_id in accepted:
                await get_json(http, f"{base}/DocumentReference/{doc_id}", system)

            coordinator = tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung")
            bundle = await get_json(http, f"{base}/Communication?recipient=CareTeam/rj1-lung&_count=200", coordinator)
            about = Counter(
                ref["reference"].removeprefix("DocumentReference/")
                for entry in bundle.get("entry", [])
                for ref in entry["resource"].get("about", [])
            )
            assert {d: about[d] for d in [*accepted, control]} == {d: 1 for d in [*accepted, control]}

            auditor = tokens.headers("RJ1", "auditor")

            async def trail(doc_id: str) -> list[str]:
                found = await get_json(http, f"{base}/AuditEvent?entity=DocumentReference/{doc_id}&_count=100", auditor)
                # The pipeline's trail (received, stored, alerted), without this test's own reads of the
                # documents (record.read), which differ in number between the documents and the control.
                pipeline = [
                    e
                    for e in found.get("entry", [])
                    if "record.read" not in {c["code"] for c in e["resource"].get("subtype", [])}
                ]
                return sorted(code["code"] for e in pipeline for code in e["resource"].get("subtype", []))

            expected = await trail(control)
            assert expected, "the control document has no audit trail"
            trails = {doc_id: await trail(doc_id) for doc_id in accepted}
            assert trails == {doc_id: expected for doc_id in accepted}

            await settled(data_dir, timeout=60)  # the reads above are audited too
            verify = await get_json(http, f"{base}/AuditEvent/$verify", auditor)
            params = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in verify["parameter"]}
            assert params["intact"] is True
            assert params["count"] == audit_records(data_dir) > len(accepted)
        print(
            f"\n{sig.name} after {len(accepted)} accepted of {DOCUMENTS} posted: all stored, "
            f"{len(accepted) + 1} alerted once, {len(expected)} audit records each, chain of {params['count']}"
        )
    finally:
        server.terminate()
        server.communicate(timeout=60)
