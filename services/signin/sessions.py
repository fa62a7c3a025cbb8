"""Sign-ins in progress and signed-in sessions, held in this process's memory.

A session holds the provider's refresh token, so it never leaves the server: the browser holds only an
opaque, HttpOnly cookie. Restarting the process signs everyone out (they sign in again, silently when
the provider's own session still lasts); several replicas need sticky sessions on /signin.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from services.signin.client import Pending
from services.signin.identity import Person

PENDING_SECONDS = 600.0
# Refuse new sign-ins past this many waiting: a flood of /signin requests cannot exhaust memory.
MAX_PENDING = 10_000


@dataclass
class Session:
    person: Person
    tokens: dict[str, Any]
    ends_at: float
    started: float = field(default_factory=time.time)

    def provider_expires_at(self) -> float | None:
        value = self.tokens.get("expires_at")
        return float(value) if value is not None else None


class SignIns:
    def __init__(self) -> None:
        self._pending: dict[str, Pending] = {}
        self._sessions: dict[str, Session] = {}

    def hold(self, pending: Pending) -> bool:
        self._expire()
        if len(self._pending) >= MAX_PENDING:
            return False
        self._pending[pending.state] = pending
        return True

    def take(self, state: str) -> Pending | None:
        self._expire()
        return self._pending.pop(state, None)

    def open(self, person: Person, tokens: dict[str, Any], *, hours: int) -> str:
        now = time.time()
        for old in [k for k, v in self._sessions.items() if v.ends_at <= now]:
            del self._sessions[old]
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = Session(person=person, tokens=tokens, ends_at=time.time() + hours * 3600)
        return sid

    def get(self, sid: str | None) -> Session | None:
        session = self._sessions.get(sid) if sid else None
        if session and session.ends_at <= time.time():
            self._sessions.pop(sid or "", None)
            return None
        return session

    def close(self, sid: str | None) -> None:
        self._sessions.pop(sid or "", None)

    def _expire(self) -> None:
        cutoff = time.monotonic() - PENDING_SECONDS
        for state in [s for s, p in self._pending.items() if p.created < cutoff]:
            del self._pending[state]
