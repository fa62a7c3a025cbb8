"""Does the content match what was declared? Size, SHA-256 and the media type's own signature."""

from __future__ import annotations

from shared import media


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
    try:
        media.check(content_type, head, whole)
    except media.MediaMismatch as exc:
        raise ContentRejected("media-type-mismatch", str(exc)) from None
