"""The files the README's curl examples post (examples/) exist and are accepted as the README says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
README = Path(__file__).resolve().parents[2] / "README.md"
FHIR = {"Content-Type": "application/fhir+json"}


def test_the_readme_names_only_example_files_that_exist() -> None:
    import re

    named = set(re.findall(r"@(examples/[\w.-]+)", README.read_text()))
    assert {
        "examples/document-reference.json",
        "examples/document-reference-streamed.json",
        "examples/provide-bundle.json",
        "examples/scan.pdf",
    } <= named
    assert [n for n in sorted(named) if not (EXAMPLES.parent / n).is_file()] == []


async def test_the_inline_example_is_accepted(stack: TestClient, tokens: Any) -> None:
    response = await stack.post(
        "/fhir/DocumentReference",
        data=(EXAMPLES / "document-reference.json").read_bytes(),
        headers={**FHIR, **tokens.headers("RJ1")},
    )
    assert response.status == 202, await response.text()
    # Absolute (ITI-67/MHD: every URL a client follows), built from the request when no public base is set.
    assert response.headers["Location"].startswith(f"{stack.make_url('/fhir/DocumentReference/')}")


async def test_the_streamed_example_is_accepted(stack: TestClient, tokens: Any) -> None:
    form = aiohttp.FormData()
    form.add_field(
        "resource",
        (EXAMPLES / "document-reference-streamed.json").read_bytes(),
        content_type="application/fhir+json",
        filename="document-reference-streamed.json",
    )
    form.add_field("content", (EXAMPLES / "scan.pdf").read_bytes(), content_type="application/pdf", filename="scan.pdf")
    response = await stack.post("/fhir/DocumentReference", data=form, headers=tokens.headers("RJ1"))
    assert response.status == 202, await response.text()


async def test_the_provide_bundle_example_is_stored(stack: TestClient, tokens: Any) -> None:
    bundle = json.loads((EXAMPLES / "provide-bundle.json").read_text())
    response = await stack.post("/fhir", data=json.dumps(bundle), headers={**FHIR, **tokens.headers("RJ1")})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created"] * 3
