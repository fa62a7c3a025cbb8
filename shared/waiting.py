"""Waiting for an ``asyncio.Event`` at most so long, without losing a cancellation.

Python 3.11's ``asyncio.wait_for`` swallows a ``cancel()`` that lands as the awaited event is set (the
wait returns normally, CPython gh-86296): a loop around it goes on, and whoever cancelled it to stop the
service waits for ever. Notification's webhook loop, woken by every committed notification, hung an app's
shutdown that way (about one test run in twelve). ``asyncio.timeout`` counts cancellations and keeps them.
"""

from __future__ import annotations

import asyncio


async def wait_until_set(event: asyncio.Event, seconds: float) -> bool:
    """True if ``event`` was set within ``seconds``; a cancellation always propagates."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
