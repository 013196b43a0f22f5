"""One answer to "may this run": the API's policy check and the launch agree, term by term."""

import dataclasses

import pytest
from django.urls import reverse

from portal.common.errors import ApplicationError
from projects.models import TrainingRun
from projects.services.runs import LaunchConfig, run_launch
from tests.projects.scenario import PROBLEM_SLUG, Scenario

pytestmark = pytest.mark.django_db

BASE = LaunchConfig(rounds=2, local_epochs=1)

# Every term an agreement states that bears on a run, each in a form some run breaks.
TERMS = {
    "families": {"model_families": ["mlp"]},
    "min_contributors": {"min_contributors": 3},
    "secure_aggregation": {"secure_aggregation": True},
    "dp_ceiling": {"dp_max_epsilon": 4.0},
    # Both at once: a run must be securely aggregated and differentially private.
    "secure_dp_ceiling": {"secure_aggregation": True, "dp_max_epsilon": 4.0},
    "plain": {},
}
# Runs that ask for what the terms allow or refuse.
CONFIGS = {
    "plain": BASE,
    "mlp": dataclasses.replace(BASE, model_family="mlp"),
    "one_contributor": dataclasses.replace(BASE, min_contributors=1),
    "dp_within": dataclasses.replace(BASE, dp_options={"epsilon": 3.0}),
    "dp_beyond": dataclasses.replace(BASE, dp_options={"epsilon": 6.0}),
    "secure": dataclasses.replace(BASE, secure_aggregation=True),
    "secure_dp_within": dataclasses.replace(
        BASE, secure_aggregation=True, dp_options={"epsilon": 3.0}
    ),
    "secure_dp_beyond": dataclasses.replace(
        BASE, secure_aggregation=True, dp_options={"epsilon": 6.0}
    ),
}


def _body(config: LaunchConfig) -> dict:
    body = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if v is not None and k != "min_contributors"
    }
    if config.min_contributors is not None:
        body["min_contributors"] = config.min_contributors
    return body


def _launch_answer(scenario: Scenario, config: LaunchConfig) -> tuple[bool, list[str]]:
    try:
        run_launch(actor=scenario.a.researcher, problem=scenario.refresh(), config=config)
    except ApplicationError as exc:
        return False, exc.extra.get("reasons", [exc.message])
    return True, []


@pytest.mark.parametrize("term", sorted(TERMS))
def test_the_policy_check_and_the_launch_agree_over_every_term(scenario, api_as, term):
    scenario.propose()
    scenario.join()
    scenario.ratify()
    scenario.register()
    scenario.draft(**TERMS[term])
    scenario.approve()
    client = api_as(scenario.a.researcher)
    url = reverse("api:problem-policy-check", args=[PROBLEM_SLUG])
    answers = {}
    for name, config in CONFIGS.items():
        response = client.post(url, _body(config), format="json")
        assert response.status_code == 200, response.content
        checked = (response.json()["allowed"], response.json()["reasons"])
        launched = _launch_answer(scenario, config)
        assert checked == launched, (term, name)
        answers[name] = checked
        TrainingRun.objects.all().delete()  # the next configuration meets the same problem
    # The check is not vacuous: each term refuses some run and allows another.
    if term != "plain":
        assert any(not allowed for allowed, _ in answers.values()), term
    if term in ("families", "dp_ceiling", "plain"):
        assert any(allowed for allowed, _ in answers.values()), term
    if term in ("secure_aggregation", "secure_dp_ceiling", "dp_ceiling", "plain"):
        # Secure aggregation and differential privacy together: one run, allowed by both.
        assert answers["secure_dp_within"] == (True, []), term
    if term == "secure_dp_ceiling":
        # A DP run within the ceiling, secure because the agreement makes every run secure.
        allowed = sorted(name for name, (ok, _) in answers.items() if ok)
        assert allowed == ["dp_within", "secure_dp_within"], allowed


def test_a_dp_ceiling_is_honoured_by_a_launch_with_differential_privacy(ready_dp):
    run = run_launch(
        actor=ready_dp.a.researcher,
        problem=ready_dp.refresh(),
        config=dataclasses.replace(BASE, dp_options={"epsilon": 2.0, "clip_norm": 0.5}),
    )
    dp = run.spec["dp"]
    assert dp["epsilon"] == 2.0
    assert dp["clip_norm"] == 0.5
    assert dp["ceiling"] == 4.0
    assert dp["noise_multiplier"] > 0.3


def test_a_run_without_dp_is_refused_by_both_under_a_ceiling(ready_dp, api_as):
    response = api_as(ready_dp.a.researcher).post(
        reverse("api:problem-policy-check", args=[PROBLEM_SLUG]), _body(BASE), format="json"
    )
    reasons = response.json()["reasons"]
    assert response.json()["allowed"] is False
    assert any("requires differential privacy with epsilon at most 4.0" in r for r in reasons)
    with pytest.raises(ApplicationError) as refused:
        run_launch(actor=ready_dp.a.researcher, problem=ready_dp.refresh(), config=BASE)
    assert refused.value.extra["reasons"] == reasons


def test_the_policy_check_refuses_settings_the_launch_refuses(ready, api_as):
    url = reverse("api:problem-policy-check", args=[PROBLEM_SLUG])
    client = api_as(ready.a.researcher)
    for body, field in [
        ({"dp_options": {"epsilon": -1}}, "dp_options"),
        ({"dp_options": {"clip_norm": 1}}, "dp_options"),
        ({"rounds": 0}, "rounds"),
        ({"secure_aggregation": "sometimes"}, "secure_aggregation"),
    ]:
        response = client.post(url, {"model_family": "logistic_regression", **body}, format="json")
        assert response.status_code == 400, body
        assert field in response.json(), body


@pytest.fixture
def ready_dp(scenario) -> Scenario:
    scenario.propose()
    scenario.join()
    scenario.ratify()
    scenario.register()
    scenario.draft(dp_max_epsilon=4.0)
    scenario.approve()
    scenario.refresh()
    return scenario
