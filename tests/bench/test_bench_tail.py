"""The bench's audit tail on the one-process stack: it reads the log from the last record it read on, polls while a document it knows of is in flight and not otherwise, and the
reconciliation finds every document's trail in one pass of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lhcie.bench.client import Exchange, encoded_body
from lhcie.bench.harness import Stack
from lhcie.bench.tracking import DONE, AuditTail, audited_documents
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e]

SIZE = 10 * 1024


@pytest.fixture
async def exchange(tmp_path: Path) -> AsyncIterator[Exchange]:
    stack = Stack(tmp_path / "stack", embedded=True)
    await stack.start()
    try:
        exchange = await Exchange.open(stack)
        try:
            yield exchange
        finally:
            await exchange.close()
    finally:
        await stack.stop()


async def looked(tail: AuditTail, times: int) -> None:
    """Until the tail has looked at what is in flight ``times`` more times (each look may poll)."""
    target = tail.looks + times

    async def done() -> bool:
        return tail.looks >= target

    await eventually(done)


async def test_the_tail_polls_only_while_documents_are_in_flight(exchange: Exchange) -> None:
    # Resting, it would poll once an hour: every poll below is one the documents in flight asked for.
    tail = AuditTail(exchange, interval=0.02, idle_interval=3600)
    await tail.start()
    try:
        resting = tail.polls
        await looked(tail, 10)
        assert tail.polls == resting

        posted = [await exchange.post(encoded_body(SIZE, f"tail #{i}"), SIZE) for i in range(3)]
        ids = [p.doc_id for p in posted]
        assert await tail.wait_for(ids, timeout=60)
        assert tail.polls > resting
        assert {d: tail.codes[d] for d in ids} == {d: set(DONE) for d in ids}
        assert set(tail.codes) == set(ids)

        await looked(tail, 5)  # a poll already under way when the last trail completed may end here
        after = tail.polls
        await looked(tail, 10)
        assert tail.polls == after

        # Posted with nobody waiting: the tail sees it in flight and watches it to completion.
        late = await exchange.post(encoded_body(SIZE, "tail, posted last"), SIZE)

        async def completed() -> bool:
            return late.doc_id in tail.completed

        await eventually(completed, timeout=60)
        assert tail.completed[late.doc_id] >= late.answered
    finally:
        await tail.stop()

    every = [p.doc_id for p in exchange.posted]
    assert await audited_documents(exchange, [*every, "not-a-document"]) == set(every)
