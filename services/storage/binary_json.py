"""A document as a FHIR Binary resource in JSON, produced piece by piece: the base64 text of a 5 GiB document
is never held in memory, and its length is known before the first byte (so the answer has a Content-Length)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterable, AsyncIterator


def envelope(document_id: str, content_type: str) -> tuple[bytes, bytes]:
    """What goes before and after the base64 text."""
    head = json.dumps({"resourceType": "Binary", "id": document_id, "contentType": content_type}, separators=(",", ":"))
    return (head[:-1] + ',"data":"').encode(), b'"}'


def encoded_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


async def base64_pieces(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Base64 of the concatenated chunks, each piece encoded from a multiple of 3 bytes so that the pieces
    joined are exactly the base64 of the whole (padding only at the very end)."""
    carry = b""
    async for chunk in chunks:
        data = carry + chunk
        cut = len(data) - len(data) % 3
        carry = data[cut:]
        if cut:
            yield base64.b64encode(data[:cut])
    if carry:
        yield base64.b64encode(carry)
