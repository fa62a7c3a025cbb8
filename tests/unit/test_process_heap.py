"""A served process freezes its start-up heap once the app has started (shared/process.py): the collector's
full collections then leave out every module, model and route made at start-up."""

from __future__ import annotations

import gc

from shared.process import settle_heap


def test_settling_the_heap_freezes_what_exists_and_leaves_later_garbage_collectable() -> None:
    try:
        settle_heap()
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # the modules and objects this test process has made so far

        class Cycle:
            me: object

        c = Cycle()
        c.me = c
        del c
        assert gc.collect() >= 1  # made after the freeze: collected as before
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
