import pytest

from tests import snapshot
from tests.projects.scenario import Scenario, build_scenario, load_scenario

_SNAPSHOTS: dict[str, snapshot.Snapshot] = {}


def _scenario_at(stage: str) -> Scenario:
    """The scenario at ``stage`` ("built" or "ready"), put back from a snapshot taken once."""
    taken = _SNAPSHOTS.get(stage)
    if taken is None or not taken.fits():
        build = build_scenario if stage == "built" else lambda: build_scenario().ready()
        taken, _ = snapshot.Snapshot.take(build)
        _SNAPSHOTS[stage] = taken
    taken.restore()
    return load_scenario()


@pytest.fixture
def _scenario(request, db) -> Scenario:
    """One scenario per test, whether it asks for ``scenario``, ``ready`` or both.

    Built once per session and restored in a few statements (tests/snapshot.py) on
    PostgreSQL in ordinary tests; built step by step through the services otherwise.
    """
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or bool(
        marker and marker.kwargs.get("transaction")
    )
    wants_ready = "ready" in request.fixturenames
    if snapshot.available() and not transactional:
        return _scenario_at("ready" if wants_ready else "built")
    built = build_scenario()
    return built.ready() if wants_ready else built


@pytest.fixture
def scenario(_scenario) -> Scenario:
    """Three hospitals and their people, no problem yet (see ``Scenario``)."""
    return _scenario


@pytest.fixture
def ready(_scenario) -> Scenario:
    """A data-ready problem: ratified, two datasets, an effective agreement."""
    return _scenario
