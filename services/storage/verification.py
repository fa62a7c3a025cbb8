"""Does the content match what was declared? Size, SHA-256 and the media type's own signature."""

from __future__ import annotations

import json
import xml.parsers.expat

PDF_MAGIC = b"%PDF-"
JSON_TYPES = {"application/json", "application/fhir+json"}
XML_TYPES = {"application/xml", "text/xml", "application/fhir+xml", "application/hl7-v3+xml"}


class ContentRejected(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def check_digest(*, declared_size: int, declared_sha256: str, size: int, sha256: str) -> None:
    if size != declared_size:
        raise ContentRejected("size-mismatch", f"staged content is {size} bytes, {declared_size} were declared")
    if sha256 != declared_sha256:
        raise ContentRejected("hash-mismatch", "staged content does not match the SHA-256 recorded at intake")


def check_media_type(content_type: str, head: bytes, whole: bytes | None) -> None:
    """``head`` is the first bytes; ``whole`` the full content when small enough to parse."""
    media = content_type.split(";")[0].strip().lower()
    if media == "application/pdf" and not head.startswith(PDF_MAGIC):
        raise ContentRejected("media-type-mismatch", "declared application/pdf but the content is not a PDF")
    if media in JSON_TYPES and whole is not None:
        try:
            json.loads(whole)
        except ValueError:
            raise ContentRejected("media-type-mismatch", f"declared {media} but the content is not JSON") from None
    if media in XML_TYPES and whole is not None:
        parser = xml.parsers.expat.ParserCreate()

        def refuse_dtd(*_: object) -> None:  # no entity expansion, no external entities
            raise ContentRejected("media-type-mismatch", "XML with a DTD is not accepted")

        parser.StartDoctypeDeclHandler = refuse_dtd
        try:
            parser.Parse(whole, True)
        except xml.parsers.expat.ExpatError:
            raise ContentRejected("media-type-mismatch", f"declared {media} but the content is not well-formed XML") from None
