"""A run's options within the agreement's limits: L2 strength, validation share, feature scaling.

Each is chosen at launch by the form, the API or ``launch_run`` (one check, in the run service),
refused the same way everywhere when the agreement does not permit it, stated on the run page,
in the launch's audit event and on the model card, and carried to the sites in the round's task.
"""

import html
import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from alliance.models import AuditEvent
from projects.models import AgreementVersion, Dataset, TrainingRun
from projects.models.agreement import LIMIT_DEFAULTS, canonical_terms, terms_sha256
from projects.services.model_card import model_card, model_card_markdown
from projects.services.runs import LaunchConfig, launch_errors, round_task
from tests.projects.test_run_pages import FORM, launch

pytestmark = pytest.mark.django_db

SLUG = "tumour-malignancy"
API_BODY = {
    "model_family": "logistic_regression",
    "strategy": "fedavg",
    "rounds": 4,
    "local_epochs": 2,
    "batch_size": 16,
    "learning_rate": 0.3,
    "round_deadline": 60,
    "seed": 7,
}


def text(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def limit(ready, **terms) -> None:
    """The effective agreement, with other limits (as if its version had been agreed so)."""
    AgreementVersion.objects.filter(problem=ready.problem, status="effective").update(**terms)


# --- Defaults and recording ------------------------------------------------------------------


def test_defaults_are_unchanged_and_recorded(ready):
    run = launch(ready)
    assert run.family_options == {"l2": 0.003}
    assert (run.l2, run.validation_share, run.feature_scaling) == (0.003, 0.2, "ranges")
    task = round_task(run, 1, "x")
    assert task.validation_share == 0.2
    assert task.spec.scaling == "ranges" and task.spec.feature_stats == ()
    # The spec's bytes are those of a run launched before there was a choice.
    assert "scaling" not in run.spec and "feature_stats" not in run.spec
    event = AuditEvent.objects.get(action="run.launched")
    assert event.payload["options"] == {
        "l2": 0.003,
        "validation_share": 0.2,
        "feature_scaling": "ranges",
    }


def test_chosen_options_reach_the_task_the_page_the_api_and_the_card(client, api_as, ready):
    run = launch(ready, l2=0.0, validation_share=0.0, feature_scaling="none")
    assert run.family_options == {"l2": 0.0}
    task = round_task(run, 1, "x")
    assert task.family_options == {"l2": 0.0}
    assert task.validation_share == 0.0
    assert task.spec.scaling == "none"

    client.force_login(ready.b.viewer)
    page = text(client.get(reverse("run", args=[SLUG, run.number])))
    configuration = page.split('id="configuration"')[1]
    assert "L2 regularisation</dt><dd>none (0)" in configuration
    assert "Validation share</dt><dd>none: no local validation metrics" in configuration
    assert "Feature scaling</dt><dd>None: the values as recorded" in configuration

    compared = text(client.get(reverse("run-compare", args=[SLUG]) + f"?runs={run.number}"))
    assert "0.0, 0.0, None: the values as recorded" in compared

    body = api_as(ready.b.viewer).get(reverse("api:run-detail", args=[SLUG, run.number])).json()
    assert (body["l2"], body["validation_share"], body["feature_scaling"]) == (0.0, 0.0, "none")

    card = model_card(run.models.get(round_number=0))
    options = {"l2": 0.0, "validation_share": 0.0, "feature_scaling": "none"}
    assert card["training"]["options"] == options
    assert "feature_scaling none, l2 0.0, validation_share 0.0" in model_card_markdown(card)
    assert AuditEvent.objects.get(action="run.launched").payload["options"] == options


def test_an_explicit_l2_overrides_the_default_of_every_family(ready):
    limit(ready, model_families=["logistic_regression", "mlp"])
    run = launch(ready, model_family="mlp", l2=0.25, family_options={"hidden_layers": [4]})
    assert run.family_options == {"hidden_layers": [4], "l2": 0.25, "task": "classification"}
    assert run.l2 == 0.25


# --- Refusals ------------------------------------------------------------------------------------


def test_out_of_range_options_are_field_errors():
    errors = launch_errors(LaunchConfig(l2=-1.0, validation_share=0.95, feature_scaling="zscore"))
    assert set(errors) == {"l2", "validation_share", "feature_scaling"}
    assert "between 0 and 100" in errors["l2"]
    assert "between 0.0 and 0.9" in errors["validation_share"]
    errors = launch_errors(LaunchConfig(l2=0.5, family_options={"l2": 0.1}))
    assert "once" in errors["l2"]
    assert launch_errors(LaunchConfig(l2=0.0, validation_share=0.0, feature_scaling="none")) == {}


SAME_FIELD_ERRORS = [
    ({"l2": "-1"}, {"l2": -1}),
    ({"validation_share": "0.95"}, {"validation_share": 0.95}),
]


@pytest.mark.parametrize(("form", "body"), SAME_FIELD_ERRORS)
def test_form_and_api_refuse_out_of_range_options_alike(client, api_as, ready, form, body):
    client.force_login(ready.a.researcher)
    page = text(client.post(reverse("run-launch", args=[SLUG]), {**FORM, **form}))
    shown = re.findall(r'<p class="field-error">([^<]+)</p>', page)
    response = api_as(ready.a.researcher).post(
        reverse("api:run-list", args=[SLUG]), {**API_BODY, **body}, format="json"
    )
    assert response.status_code == 400
    (_field, message), *_rest = response.json()["errors"].items()
    assert shown == [html.unescape(message)], (shown, response.json())
    assert not TrainingRun.objects.exists()


BEYOND_THE_AGREEMENT = [
    ({"l2": "0.6"}, {"l2": 0.6}, "L2 strength 0.6 exceeds the strongest agreement version 1"),
    (
        {"validation_share": "0.3"},
        {"validation_share": 0.3},
        "validation share 0.3 exceeds the largest agreement version 1 permits (0.25)",
    ),
    (
        {"feature_scaling": "none"},
        {"feature_scaling": "none"},
        "does not permit the feature scaling None: the values as recorded",
    ),
]


@pytest.mark.parametrize(("form", "body", "reason"), BEYOND_THE_AGREEMENT)
def test_options_beyond_the_agreement_are_refused_alike_by_form_api_and_command(
    client, api_as, ready, form, body, reason
):
    limit(ready, max_l2=0.5, max_validation_share=0.25, feature_scalings=["ranges"])
    client.force_login(ready.a.researcher)
    response = client.post(reverse("run-launch", args=[SLUG]), {**FORM, **form})
    assert response.status_code == 200
    page = text(response)
    assert "The agreement does not allow this run:" in page
    response = api_as(ready.a.researcher).post(
        reverse("api:run-list", args=[SLUG]), {**API_BODY, **body}, format="json"
    )
    assert response.status_code == 400
    (refusal,) = response.json()["reasons"]
    assert reason in refusal
    assert refusal in page  # the very same sentence
    flag, value = next(iter(body.items()))
    with pytest.raises(Exception, match=re.escape(reason)):
        call_command(
            "launch_run",
            "--problem",
            SLUG,
            f"--{flag.replace('_', '-')}",
            str(value),
            stdout=StringIO(),
            stderr=StringIO(),
        )
    assert not TrainingRun.objects.exists()


def test_the_launch_form_states_the_agreements_limits(client, ready):
    limit(ready, max_l2=0.5, max_validation_share=0.25, feature_scalings=["ranges"])
    client.force_login(ready.a.researcher)
    page = text(client.get(reverse("run-launch", args=[SLUG])))
    assert "From 0 (none) to 0.5, as the agreement permits." in page
    assert "From 0 (no local validation) to 0.25, as the agreement permits" in page
    assert "Standardisation from the registered summaries (not permitted by the agreement)" in page


def test_standardisation_needs_every_contributors_summaries(api_as, ready):
    # The scenario's descriptions predate the summaries: no mean, no deviation.
    response = api_as(ready.a.researcher).post(
        reverse("api:run-list", args=[SLUG]),
        {**API_BODY, "feature_scaling": "standardise"},
        format="json",
    )
    assert response.status_code == 400
    assert (
        "needs every contributor's registered mean and standard deviation"
        in (response.json()["detail"])
    )
    assert not TrainingRun.objects.exists()


def test_standardisation_pools_the_registered_summaries(ready):
    datasets = list(Dataset.objects.filter(problem=ready.problem).order_by("pk"))
    # Two sites: values {1, 3} (mean 2, sd 1) and {5, 7, 9} (mean 7, sd sqrt(8/3)): the five
    # values 1, 3, 5, 7, 9 have mean 5 and population deviation sqrt(8).
    summaries = [(2, 2.0, 1.0), (3, 7.0, (8 / 3) ** 0.5)]
    for dataset, (rows, mean, std) in zip(datasets, summaries, strict=True):
        dataset.row_count = rows
        for column in dataset.columns:
            if column["type"] == "numeric":
                column.update(missing=0, mean=mean, std=std)
        dataset.save()
    run = launch(ready, feature_scaling="standardise")
    spec = round_task(run, 1, "x").spec
    assert spec.scaling == "standardise"
    for mean, std in spec.feature_stats:
        assert mean == pytest.approx(5.0) and std == pytest.approx(8**0.5)


# --- The agreement states the limits ------------------------------------------------------------


def test_limits_at_their_defaults_leave_the_terms_hash_as_it_was(ready):
    version = AgreementVersion.objects.get(problem=ready.problem, status="effective")
    assert (version.max_l2, version.max_validation_share) == (1.0, 0.5)
    assert version.feature_scalings == LIMIT_DEFAULTS["feature_scalings"]
    canonical = version.canonical_terms()
    assert not {"max_l2", "max_validation_share", "feature_scalings"} & set(canonical["terms"])
    assert version.compute_terms_sha256() == version.terms_sha256

    terms = {**version.terms(), "max_l2": 0.5, "feature_scalings": ["ranges"]}
    other = canonical_terms(problem_slug=SLUG, number=version.number, terms=terms)
    assert other["terms"]["max_l2"] == 0.5 and other["terms"]["feature_scalings"] == ["ranges"]
    assert terms_sha256(other) != version.terms_sha256


def test_the_agreement_document_states_its_limits(client, ready):
    client.force_login(ready.c.viewer)
    page = text(client.get(reverse("agreement-detail", args=[SLUG, 1])))
    assert "A run may use L2 regularisation of strength 0 to 1.0" in page
    assert "a share of 0 to 0.5 of its rows for validation" in page
    assert "Standardisation from the registered summaries" in page


def test_an_amendment_sets_the_limits_and_refuses_nonsense(client, api_as, ready):
    version = AgreementVersion.objects.get(problem=ready.problem, status="effective")
    body = {
        "purpose": version.purpose,
        "model_families": version.model_families,
        "min_contributors": version.min_contributors,
        "download_scope": version.download_scope,
        "expires_on": version.expires_on.isoformat(),
    }
    client = api_as(ready.a.admin)
    bad = client.post(
        reverse("api:problem-agreement-list", args=[SLUG]),
        {**body, "max_l2": -1, "max_validation_share": 0.95, "feature_scalings": []},
        format="json",
    )
    assert bad.status_code == 400
    assert {"max_l2", "max_validation_share", "feature_scalings"} <= set(bad.json())
    good = client.post(
        reverse("api:problem-agreement-list", args=[SLUG]),
        {**body, "max_l2": 0.01, "max_validation_share": 0.3, "feature_scalings": ["none"]},
        format="json",
    )
    assert good.status_code == 201, good.content
    drafted = AgreementVersion.objects.get(problem=ready.problem, status="pending")
    assert (drafted.max_l2, drafted.max_validation_share) == (0.01, 0.3)
    assert drafted.feature_scalings == ["none"]
    assert drafted.compute_terms_sha256() == drafted.terms_sha256
    assert good.json()["canonical_terms"]["terms"]["max_l2"] == 0.01
    client.force_login(ready.a.admin)
    compared = text(client.get(reverse("agreement-compare", args=[SLUG])))
    assert "Strongest L2 regularisation a run may use" in compared
    assert "Permitted feature scalings" in compared
    assert "None: the values as recorded" in compared


def test_the_policy_check_answers_about_the_options_too(api_as, ready):
    limit(ready, max_l2=0.5, max_validation_share=0.25, feature_scalings=["ranges"])
    body = {"model_family": "logistic_regression", "min_contributors": 2}
    check = reverse("api:problem-policy-check", args=[SLUG])
    client = api_as(ready.a.researcher)
    assert client.post(check, body, format="json").json()["allowed"] is True
    answer = client.post(
        check,
        {**body, "l2": 0.6, "validation_share": 0.3, "feature_scaling": "standardise"},
        format="json",
    ).json()
    assert answer["allowed"] is False
    # The agreement's three limits, and (as the launch itself would say) datasets registered
    # without the summaries that standardising needs.
    assert len(answer["reasons"]) == 4
    assert "describe the file again" in answer["reasons"][3]
    within = {**body, "l2": 0.5, "validation_share": 0.0, "feature_scaling": "ranges"}
    assert client.post(check, within, format="json").json()["allowed"] is True
