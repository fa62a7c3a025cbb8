"""A hospital system posting documents steadily, as a real one does: each submission carries its own
masterIdentifier, and one that got no answer (connection lost, 5xx, 429) is sent again, unchanged, until
it gets a 2xx or the run ends. Every answer is recorded; a 2xx is a promise the exchange must keep."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.helpers import PDF, document_reference

MASTER_SYSTEM = "urn:ietf:rfc:3986"
RETRY_PAUSE = 0.5  # the sender's own back-off between tries of one submission (part of the scenario)


@dataclass
class Submission:
    number: int
    master: str
    content: bytes
    ids: list[str] = field(default_factory=list)  # every id a 2xx answered with (one, if all is well)
    tries: int = 0

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class Sender:
    url: str
    headers: dict[str, str]
    interval: float
    submissions: list[Submission] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    # Every try: (sent, answered) on the monotonic clock and the answer, to tell what a fault's window saw.
    timeline: list[tuple[float, float, str]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def body(self, s: Submission) -> str:
        resource: dict[str, Any] = document_reference(content=s.content)
        resource["masterIdentifier"] = {"system": MASTER_SYSTEM, "value": s.master}
        return json.dumps(resource)

    async def run(self, workers: int = 2) -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await asyncio.gather(*(self._worker(http) for _ in range(workers)))

    async def _worker(self, http: aiohttp.ClientSession) -> None:
        while not self.stopping.is_set():
            n = len(self.submissions)
            s = Submission(n, f"urn:uuid:{uuid.uuid4()}", PDF + f"% fault run {n}\n".encode())
            self.submissions.append(s)
            await self._send(http, s)
            await asyncio.sleep(self.interval)  # the stream's pace

    async def _send(self, http: aiohttp.ClientSession, s: Submission) -> None:
        body = self.body(s)
        while True:
            s.tries += 1
            sent = time.monotonic()
            try:
                async with http.post(self.url, data=body, headers=self.headers) as response:
                    status = response.status
                    answer = await response.json(content_type=None) if status < 300 else await response.text()
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.statuses[type(exc).__name__] += 1
                self.timeline.append((sent, time.monotonic(), type(exc).__name__))
            else:
                self.statuses[str(status)] += 1
                self.timeline.append((sent, time.monotonic(), str(status)))
                if 200 <= status < 300:
                    s.ids.append(answer["id"])
                    return
                if status < 500 and status != 429:
                    return  # refused: no promise made, and sending it again would not change that
            if self.stopping.is_set() and s.tries > 1:
                return  # the run is over: an unanswered submission made no promise
            await asyncio.sleep(RETRY_PAUSE)

    def answered_within(self, windows: list[tuple[str, float, float]]) -> list[tuple[str, float, float, str]]:
        """The answers that arrived inside any of ``windows`` (name, from, to): (name, seconds from the
        window's start to the try's sending, and to its answer, the answer)."""
        return [
            (name, sent - start, at - start, answer)
            for sent, at, answer in self.timeline
            for name, start, end in windows
            if start <= at <= end
        ]

    @property
    def accepted(self) -> list[Submission]:
        return [s for s in self.submissions if s.ids]
