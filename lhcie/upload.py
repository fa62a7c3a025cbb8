"""``lhcie post``'s transfer: inline (base64 JSON) for small files, streamed multipart above the inline
limit, read from disk in chunks with a progress bar, so a 50 MB scan neither sits in memory nor leaves
the terminal silent."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from tqdm import tqdm

from lhcie.discovery import CliError

CHUNK = 256 * 1024
# base64 grows content by 4/3 and the JSON around it adds a little: stream anything that would not fit.
BASE64_GROWTH = 4 / 3
ENVELOPE = 2 * 1024


def fits_inline(size: int, max_inline_bytes: int) -> bool:
    return size * BASE64_GROWTH + ENVELOPE <= max_inline_bytes


async def _chunks(path: Path, bar: tqdm[Any]) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            bar.update(len(chunk))
            yield chunk


async def post_document(
    url: str,
    token: str,
    resource: dict[str, Any],
    path: Path,
    *,
    content_type: str,
    max_inline_bytes: int,
    progress: TextIO | None,
) -> tuple[int, dict[str, Any], str]:
    """Returns the status, the body and how it was sent ("inline" or "streamed")."""
    size = path.stat().st_size
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    inline = fits_inline(size, max_inline_bytes)
    # A bar only where there is something to wait for: a streamed upload.
    bar = tqdm(
        total=size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=path.name,
        file=progress,
        disable=progress is None or inline,
        leave=False,
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as http:
            if inline:
                attachment = resource["content"][0]["attachment"]
                attachment["data"] = base64.b64encode(path.read_bytes()).decode()
                bar.update(size)
                body: Any = json.dumps(resource).encode()
                mode = "inline"
                request_headers = {**headers, "Content-Type": "application/fhir+json"}
            else:
                writer = aiohttp.MultipartWriter("form-data")
                part = writer.append(json.dumps(resource), {"Content-Type": "application/fhir+json"})
                part.set_content_disposition("form-data", name="resource", filename="resource.json")
                stream = writer.append(aiohttp.AsyncIterablePayload(_chunks(path, bar), content_type=content_type))
                stream.set_content_disposition("form-data", name="content", filename=path.name)
                body, mode, request_headers = writer, "streamed", headers
            async with http.post(url, data=body, headers=request_headers) as response:
                text = await response.text()
                try:
                    parsed = json.loads(text) if text else {}
                except ValueError:
                    parsed = {"diagnostics": text[:200]}
                return response.status, parsed, mode
    except aiohttp.ClientConnectorError:
        raise CliError(
            f"cannot reach the exchange at {url.split('/fhir')[0]} (is `make run` running? set LHCIE_URL, "
            "or LHCIE_HTTP_HOST and LHCIE_HTTP_PORT)"
        ) from None
    except aiohttp.ClientError as exc:
        raise CliError(
            f"the upload to {url} failed: {type(exc).__name__} (set LHCIE_URL if the exchange is elsewhere)"
        ) from None
    finally:
        bar.close()
