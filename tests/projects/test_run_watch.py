"""A run's followers are woken by the change itself, once it is committed, and only by their run."""

import pytest
from django.db import transaction

from projects.services.runs import RunWatcher, run_changed


class Undone(Exception):
    pass


@pytest.fixture
def watcher(transactional_db):
    with RunWatcher() as watching:
        watching.watch(41)
        yield watching


def test_a_committed_change_wakes_the_watcher(watcher):
    with transaction.atomic():
        run_changed(41)
    assert watcher.wait(41, timeout=30)


def test_a_change_rolled_back_or_to_another_run_does_not(watcher):
    with pytest.raises(Undone), transaction.atomic():
        run_changed(41)
        raise Undone
    with transaction.atomic():
        run_changed(42)
    assert not watcher.wait(41, timeout=0.05)
    with transaction.atomic():
        run_changed(41)
    assert watcher.wait(41, timeout=30)
