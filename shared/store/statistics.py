"""The SQLite query planner's statistics, kept up to date as a store's tables grow.

Without them SQLite guesses that an equality on an indexed field is more selective than a range on
another, so an organisation's audit search after a cursor (``orgs = RJ1 AND seq > N ORDER BY seq``) took
the ``orgs`` index and read every record the organisation has, growing with the log: 5.6 ms a search at
5,000 records, 20 ms at the bench's 2,567 larger ones, against 0.1 ms once ``ANALYZE`` had run (then the
planner walks the ``seq`` index from N). So the store analyses its file at start and again whenever it
has doubled, with a row limit per index that keeps ``ANALYZE`` to milliseconds however large the file.
"""

from __future__ import annotations

import sqlite3

MIN_PAGES = 64  # below this (256 KiB) a scan costs nothing worth planning around
ANALYSIS_LIMIT = 1000  # rows SQLite samples per index
WRITES_BETWEEN_CHECKS = 256  # a file grows only by writes: its size is looked at once per this many


class PlannerStatistics:
    """When the store's file is due for ``ANALYZE``: at least ``MIN_PAGES`` and twice its size when last
    analysed."""

    def __init__(self) -> None:
        self.analysed_pages = 0
        self._writes = 0

    def wrote(self) -> bool:
        """Count one committed write; true once every ``WRITES_BETWEEN_CHECKS``."""
        self._writes += 1
        return self._writes % WRITES_BETWEEN_CHECKS == 0

    def due(self, pages: int) -> bool:
        return pages >= MIN_PAGES and pages >= 2 * self.analysed_pages


def page_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA page_count").fetchone()[0])


def analyse(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
    conn.execute("ANALYZE")
