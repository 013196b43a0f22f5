import pytest

from tests import snapshot
from tests.projects.scenario import Scenario, build_scenario, load_scenario


def _ratified(scenario: Scenario) -> None:
    scenario.propose()
    scenario.join()
    scenario.ratify()


def _registered(scenario: Scenario) -> None:
    _ratified(scenario)
    scenario.register()


def _drafted(scenario: Scenario) -> None:
    _registered(scenario)
    scenario.draft()
    scenario.approve(scenario.a)


# The scenario's stages a test can start from, most advanced first: the first of these names
# among a test's fixtures decides what ``scenario`` (and that fixture) hold.
STAGES = {
    "ready": lambda scenario: scenario.ready(),
    "drafted": _drafted,
    "registered": _registered,
    "ratified": _ratified,
}

# stage -> (the rows, the scenario's ``extra``: what it keeps outside the database, such as
# the private keys its sites sign with)
_SNAPSHOTS: dict[str, tuple[snapshot.Snapshot, dict]] = {}


def _build(stage: str) -> Scenario:
    built = build_scenario()
    if stage in STAGES:
        STAGES[stage](built)
        built.refresh()
    return built


def _restored(stage: str) -> Scenario:
    """The scenario at ``stage``, put back from a snapshot taken once (tests/snapshot.py)."""
    taken = _SNAPSHOTS.get(stage)
    if taken is None or not taken[0].fits():
        rows, built = snapshot.Snapshot.take(lambda: _build(stage))
        taken = _SNAPSHOTS[stage] = (rows, built.extra)
    rows, extra = taken
    rows.restore()
    scenario = load_scenario()
    # A copy of each container, the same values (keys are immutable): a test's additions
    # stay in that test.
    scenario.extra = {k: v.copy() if isinstance(v, dict | list) else v for k, v in extra.items()}
    return scenario


@pytest.fixture
def _scenario(request, db) -> Scenario:
    """One scenario per test, at the most advanced stage any of its fixtures names.

    Built once per session and restored in one statement on PostgreSQL in ordinary tests;
    built step by step through the services in transactional tests and on SQLite.
    """
    stage = next((name for name in STAGES if name in request.fixturenames), "built")
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or bool(
        marker and marker.kwargs.get("transaction")
    )
    if snapshot.available() and not transactional:
        return _restored(stage)
    return _build(stage)


@pytest.fixture
def scenario(_scenario) -> Scenario:
    """Three hospitals and their people, no problem yet (see ``Scenario``)."""
    return _scenario


@pytest.fixture
def ratified(_scenario) -> Scenario:
    """The problem with B contributing and C validating, revision 1 ratified; no dataset."""
    return _scenario


@pytest.fixture
def registered(_scenario) -> Scenario:
    """Ratified, both contributors' datasets registered, no agreement yet."""
    return _scenario


@pytest.fixture
def drafted(_scenario) -> Scenario:
    """Registered, agreement v1 drafted and approved by A only."""
    return _scenario


@pytest.fixture
def ready(_scenario) -> Scenario:
    """A data-ready problem: ratified, two datasets, an effective agreement."""
    return _scenario
