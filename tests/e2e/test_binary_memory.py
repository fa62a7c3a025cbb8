"""``GET /fhir/Binary/{id}`` as FHIR JSON streams its base64 (issue 17): fetching a 40 MB document so must not
grow the server's memory by anything like the document's size (it grew by 170 MiB when it was built whole)."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from shared.auth import EmbeddedIssuer
from tests.e2e.test_quickstart import start_lhcie_run
from tests.helpers import document_reference, eventually

pytestmark = pytest.mark.e2e
SIZE = 40 * 1024 * 1024
# Streaming keeps a few chunks in flight; the whole document as base64 inside JSON would be > 100 MiB.
LIMIT_MIB = 40


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024  # MiB
    raise AssertionError(field)


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM (Linux 4.0 and later)


async def test_binary_as_fhir_json_does_not_hold_the_document(tmp_path: Path) -> None:
    server, env, port = start_lhcie_run(tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        issuer = EmbeddedIssuer(Path(env["LHCIE_DATA_DIR"]), issuer="lhcie-embedded", audience="lhcie")
        auth = {"Authorization": f"Bearer {issuer.mint(org='RJ1', role='system')}"}
        content = b"%PDF-1.4\n" + os.urandom(SIZE - 9)
        resource = document_reference()
        del resource["content"][0]["attachment"]["data"]
        async with aiohttp.ClientSession() as http:
            writer = aiohttp.MultipartWriter("form-data")
            writer.append(json.dumps(resource), {"Content-Type": "application/fhir+json"}).set_content_disposition(
                "form-data", name="resource"
            )
            writer.append(io.BytesIO(content), {"Content-Type": "application/pdf"}).set_content_disposition(
                "form-data", name="content", filename="big.pdf"
            )
            async with http.post(f"{base}/fhir/DocumentReference", data=writer, headers=auth) as response:
                assert response.status == 202, await response.text()
                doc_id = (await response.json())["id"]

            async def stored() -> bool:
                async with http.get(f"{base}/fhir/DocumentReference/{doc_id}", headers=auth) as response:
                    return response.status == 200

            await eventually(stored, timeout=120, interval=0.2)
            del content
            _reset_peak(server.pid)
            before = _status(server.pid, "VmRSS")
            length = 0
            async with http.get(
                f"{base}/fhir/Binary/{doc_id}", headers={**auth, "Accept": "application/fhir+json"}
            ) as response:
                assert response.status == 200
                async for piece in response.content.iter_chunked(1 << 20):
                    length += len(piece)
            peak = _status(server.pid, "VmHWM")
        growth = peak - before
        print(
            f"\nBinary as FHIR JSON, {SIZE >> 20} MiB document: RSS {before} MiB before, peak {peak} MiB, "
            f"growth {growth} MiB ({length} bytes sent)",
            file=sys.stderr,
        )
        assert length > SIZE * 4 // 3
        assert growth < LIMIT_MIB, f"fetching grew the server by {growth} MiB"
    finally:
        server.terminate()
        server.communicate(timeout=60)
