import pytest

from tests.projects.scenario import Scenario, build_scenario


@pytest.fixture
def scenario(db) -> Scenario:
    """Three hospitals and their people, no problem yet (see ``Scenario``)."""
    return build_scenario()


@pytest.fixture
def ready(scenario) -> Scenario:
    """A data-ready problem: ratified, two datasets, an effective agreement."""
    return scenario.ready()
