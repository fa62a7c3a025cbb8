"""The ids of the request being served: the server's correlation id (the audit key) and the client's own.

The edge sets them for each request in a context variable, so the domain code that announces an event can
pass the client's id along without every use case growing a parameter, and the edge can tell whether the
domain already put a refusal on the record. Nothing here imports aiohttp: domain modules may use it.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass

from shared.events import Event, RoutingKey

# A client's X-Request-Id is echoed back and kept in events, so only a short, plain token is accepted.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,64}")


@dataclass
class RequestIds:
    correlation_id: str
    client_request_id: str | None = None
    # Set when the request's own code published access.denied, so the edge does not record it twice.
    denial_recorded: bool = False


_current: ContextVar[RequestIds | None] = ContextVar("lhcie_request_ids", default=None)


def begin(client_header: str | None) -> RequestIds:
    """New ids for a request: always a fresh correlation id; the client's id only if it is well formed."""
    given = (client_header or "").strip()
    ids = RequestIds(str(uuid.uuid4()), given if _CLIENT_ID.fullmatch(given) else None)
    _current.set(ids)
    return ids


def current() -> RequestIds | None:
    return _current.get()


def client_request_id() -> str | None:
    """The client's X-Request-Id of the request being served, if it sent a usable one."""
    ids = _current.get()
    return ids.client_request_id if ids else None


def denial_recorded() -> None:
    """For a domain that records a refusal its own way (not as an access.denied event): the edge then does
    not record it a second time."""
    ids = _current.get()
    if ids is not None:
        ids.denial_recorded = True


def note_published(event: Event) -> None:
    """Called for every event a service publishes: remembers a refusal recorded for this request."""
    ids = _current.get()
    if event.type == RoutingKey.ACCESS_DENIED and ids is not None and event.correlationid == ids.correlation_id:
        denial_recorded()
