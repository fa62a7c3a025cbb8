"""The content-scanner hook: a last check on a document's bytes before it becomes available.

None is configured by default. A deployment plugs one in with ``LHCIE_CONTENT_SCANNER=module:factory``;
``factory(settings)`` returns an object with ``scan``. An ICAP or ClamAV (clamd INSTREAM) client fits
here: it reads the bytes as a stream, raises ``ContentRejected`` for content it refuses and
``ScannerUnavailable`` when it cannot answer, which makes storage retry the document later.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from shared.config import Settings
from shared.events import DocumentFacts

Content = Callable[[], AsyncIterator[bytes]]


class ScannerUnavailable(Exception):
    """The scanner could not give a verdict now; the document waits and is tried again."""


class ContentScanner(Protocol):
    async def scan(self, facts: DocumentFacts, content: Content) -> None:
        """Return when the content may be served; raise ``ContentRejected`` or ``ScannerUnavailable``."""


def load_scanner(configured: str | None, settings: Settings) -> ContentScanner | None:
    """The configured scanner (``module:factory``); a wrong setting fails at start-up, not on the first
    document. The factory is given the process's settings."""
    if not configured:
        return None
    module_name, _, factory_name = configured.partition(":")
    if not factory_name:
        raise ValueError("LHCIE_CONTENT_SCANNER must be 'module:factory'")
    factory = getattr(importlib.import_module(module_name), factory_name)
    scanner: ContentScanner = factory(settings)
    return scanner
