"""``evaluators.memory.frozen_heap``: what a job leaves out of the collector's passes, and what it gives back."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from evaluators.memory import frozen_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()  # whatever an earlier test or plugin froze
    yield
    gc.unfreeze()


def _collected(obj: object) -> bool:
    """Whether the collector's generations hold ``obj`` (the frozen ones are in none of them)."""
    return any(o is obj for o in gc.get_objects())


def test_the_heap_on_entry_is_frozen_and_given_back_on_exit() -> None:
    before = _Node()
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        assert not _collected(before)
        frozen = gc.get_freeze_count()
        inside = _Node()
        assert _collected(inside)
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0
    assert _collected(before)


def test_the_jobs_own_cycles_are_still_collected_inside() -> None:
    with frozen_heap():
        ref = weakref.ref(_Node())
        gc.collect()
        assert ref() is None


def test_a_cycle_frozen_on_entry_is_collected_once_given_back() -> None:
    ref = weakref.ref(_Node())  # garbage already, not collected yet
    with frozen_heap():
        gc.collect()
        assert ref() is not None  # frozen: the collector leaves it alone
    gc.collect()
    assert ref() is None


def test_a_heap_someone_else_froze_is_left_frozen() -> None:
    """As in a Celery pool process: Airflow froze the worker's heap before it forked; unfreezing would undo that."""
    gc.freeze()
    frozen = gc.get_freeze_count()
    with frozen_heap():
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == frozen


def test_the_heap_is_given_back_when_the_job_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"), frozen_heap():
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0
