"""The privacy budget ledger as a page and an API resource: per institution, per dataset."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from projects import services
from projects.models import Dataset, PrivacySpend
from projects.services.runs import LaunchConfig, run_launch
from tests.projects.scenario import Scenario, description

pytestmark = pytest.mark.django_db


def _spend(scenario: Scenario, dataset: Dataset, round_number: int, total: float) -> None:
    """A recorded spend (the ledger's rows are written by a round's close; here, by hand)."""
    run = scenario.extra.get("run")
    if run is None:
        run = run_launch(
            actor=scenario.a.researcher,
            problem=scenario.refresh(),
            config=LaunchConfig(rounds=1, local_epochs=1),
        )
        scenario.extra["run"] = run
    PrivacySpend.objects.create(
        dataset=dataset,
        institution=dataset.institution,
        sha256=dataset.sha256,
        run=run,
        round_number=round_number,
        noise_multiplier=1.1,
        sampling_rate=0.25,
        steps=4,
        clip_norm=1.0,
        delta=1e-5,
        epsilon=0.5,
        epsilon_total=total,
        accountant="dp-accounting 0.6.0, RDP",
    )


@pytest.fixture
def ledger(ready) -> Scenario:
    own = Dataset.objects.get(institution=ready.a.institution)
    _spend(ready, own, 1, 0.5)
    _spend(ready, own, 2, 0.8)
    ready.extra["own"] = own
    return ready


def test_the_page_shows_each_dataset_spent_and_the_spends(client, ledger):
    client.force_login(ledger.a.viewer)
    page = client.get(reverse("privacy-ledger"))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Tumour biopsies" in text and "0.800" in text
    own = ledger.extra["own"]
    detail = client.get(reverse("privacy-dataset", args=[own.pk]))
    assert detail.status_code == 200
    assert detail.content.decode().count("<tr>") == 3  # header and two spends


def test_another_institutions_dataset_is_not_found(client, ledger):
    client.force_login(ledger.b.admin)
    own = ledger.extra["own"]
    assert client.get(reverse("privacy-dataset", args=[own.pk])).status_code == 404
    listed = client.get(reverse("privacy-ledger")).content.decode()
    assert "0.800" not in listed
    client.logout()
    assert client.get(reverse("privacy-ledger")).status_code == 302  # to the login page


def test_the_api_lists_and_details_the_budget(api_as, ledger):
    api = api_as(ledger.a.researcher)
    listed = api.get(reverse("api:privacy-ledger")).json()["results"]
    [row] = [r for r in listed if r["spends"]]
    assert row["spent"] == 0.8
    assert row["ceiling"] is None and row["remaining"] is None
    own = ledger.extra["own"]
    detail = api.get(reverse("api:privacy-ledger-dataset", args=[own.pk])).json()
    assert [s["epsilon_total"] for s in detail["spends"]] == [0.5, 0.8]
    assert detail["budget"]["sha256"] == own.sha256
    assert (
        api_as(ledger.b.researcher)
        .get(reverse("api:privacy-ledger-dataset", args=[own.pk]))
        .status_code
        == 404
    )
    assert api_as(None).get(reverse("api:privacy-ledger")).status_code == 401


def test_the_ledger_page_queries_do_not_grow(client, ledger, django_assert_num_queries):
    client.force_login(ledger.a.viewer)
    url = reverse("privacy-ledger")
    with CaptureQueriesContext(connection) as small:
        client.get(url)
    for n in range(3):
        services.dataset_register(
            actor=ledger.a.steward, problem=ledger.refresh(), **description(f"more-{n}.csv")
        )
    _spend(ledger, Dataset.objects.filter(institution=ledger.a.institution).last(), 3, 1.0)
    with django_assert_num_queries(len(small)):
        assert client.get(url).status_code == 200
