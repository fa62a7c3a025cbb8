"""Does content look like what its media type says? Used by intake (at once) and storage (again, before
a document becomes available)."""

from __future__ import annotations

import xml.parsers.expat

from shared.fhir.jsonbody import loads_bounded

# A document is only checked to be JSON, never walked by our code: deeper is allowed than in a request body.
CONTENT_MAX_DEPTH = 10_000
PDF_MAGIC = b"%PDF-"
JSON_TYPES = {"application/json", "application/fhir+json"}
XML_TYPES = {"application/xml", "text/xml", "application/fhir+xml", "application/hl7-v3+xml"}
IMAGE_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/tiff": (b"II*\x00", b"MM\x00*"),
}


class MediaMismatch(ValueError):
    pass


def base_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def safe_xml(data: bytes) -> None:
    """Well-formed XML without a DTD (so no entity expansion and no external entities); raises MediaMismatch."""
    parser = xml.parsers.expat.ParserCreate()

    def refuse_dtd(*_: object) -> None:
        raise MediaMismatch("XML with a DTD is not accepted")

    parser.StartDoctypeDeclHandler = refuse_dtd
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError:
        raise MediaMismatch("the content is not well-formed XML") from None


def needs_whole(content_type: str) -> bool:
    """Whether checking this media type parses the whole content (else the first bytes are enough)."""
    media = base_type(content_type)
    return media in JSON_TYPES or media in XML_TYPES or media == "text/plain"


def check(content_type: str, head: bytes, whole: bytes | None) -> None:
    """``head``: the first bytes; ``whole``: all of it when small enough to parse (else None)."""
    media = base_type(content_type)
    if media == "application/pdf" and not head.startswith(PDF_MAGIC):
        raise MediaMismatch("declared application/pdf but the content is not a PDF")
    if media in IMAGE_MAGIC and not head.startswith(IMAGE_MAGIC[media]):
        raise MediaMismatch(f"declared {media} but the content is not that image format")
    if media in JSON_TYPES and whole is not None:
        try:
            loads_bounded(whole, max_depth=CONTENT_MAX_DEPTH)
        except ValueError:
            raise MediaMismatch(f"declared {media} but the content is not JSON") from None
    if media in XML_TYPES and whole is not None:
        try:
            safe_xml(whole)
        except MediaMismatch as exc:
            raise MediaMismatch(f"declared {media} but {exc}") from None
    if media == "text/plain" and whole is not None:
        try:
            whole.decode("utf-8")
        except UnicodeDecodeError:
            raise MediaMismatch("declared text/plain but the content is not UTF-8 text") from None
