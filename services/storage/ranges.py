"""HTTP byte ranges (RFC 9110 section 14): which part of a document a GET asks for."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ONE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


class RangeNotSatisfiable(Exception):
    pass


class RangeMalformed(ValueError):
    """A position longer than any object can be (int() would refuse past 4,300 digits, SQLite past 19)."""


MAX_DIGITS = 19  # 2**63 - 1 has 19 digits; no object store holds more bytes than that


def check_range(header: str | None) -> None:
    """Refuse an absurd Range header before anything is looked up or put on the record."""
    if not header:
        return
    match = _ONE_RANGE.match(header.strip().replace(" ", ""))
    if match is not None and any(len(part) > MAX_DIGITS for part in match.groups()):
        raise RangeMalformed


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range asked for, or None to send the whole document.

    A header we do not understand, or one asking for several ranges, is ignored (the whole document is
    a valid answer to any Range request); a range that starts past the end is not satisfiable.
    """
    if not header:
        return None
    check_range(header)
    match = _ONE_RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return ByteRange(max(size - suffix, 0), size)
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable
    end = size if not last else min(int(last) + 1, size)
    return ByteRange(start, end)
