"""The runs API: launch, list, detail, rounds, models, cancel and download, and who may."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from alliance.models import AuditEvent
from portal.common.pagination import MAX_PAGE_SIZE, PAGE_SIZE, ROUND_PAGE_SIZE
from projects.models import Round, TrainingRun
from tests.factories import UserFactory
from tests.projects.scenario import make_site
from tests.projects.test_run_pages import add_rounds, launch, ready_with

pytestmark = pytest.mark.django_db

SLUG = "tumour-malignancy"

BODY = {
    "model_family": "logistic_regression",
    "strategy": "fedprox",
    "strategy_options": {"mu": 0.05},
    "rounds": 4,
    "local_epochs": 2,
    "batch_size": 16,
    "learning_rate": 0.3,
    "round_deadline": 60,
    "seed": 7,
}


def url(name: str, *args) -> str:
    return reverse(f"api:{name}", args=args)


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def outsider():
    return make_site("outside-bank", "Outside Bank")


def person(scenario, outsider, who: str):
    if who == "anonymous":
        return None
    if who == "nobody":
        return UserFactory(username="no-member")
    site, role = who.split(".")
    return getattr(outsider if site == "outsider" else getattr(scenario, site), role)


# --- Launching ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("a.researcher", 201),
        ("a.admin", 201),
        ("b.researcher", 201),
        ("a.viewer", 403),
        ("a.steward", 403),
        ("c.researcher", 403),  # a validator, not a contributor
        ("outsider.researcher", 403),
        ("anonymous", 401),
    ],
)
def test_who_may_launch(api_as, ready, outsider, who, expected):
    response = api_as(person(ready, outsider, who)).post(url("run-list", SLUG), BODY, format="json")
    assert response.status_code == expected, response.content
    assert TrainingRun.objects.count() == (1 if expected == 201 else 0)
    if expected == 403:
        assert "launch runs" in response.json()["detail"]


def test_launch_answers_the_run_and_audits_it(api_as, ready):
    response = api_as(ready.a.researcher).post(url("run-list", SLUG), BODY, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["number"] == 1
    assert body["status"] == "queued"
    assert body["strategy"] == "fedprox"
    assert body["strategy_options"] == {"mu": 0.05}
    assert body["min_contributors"] == 2  # the agreement's
    assert body["agreement_version"] == 1
    assert body["rounds_done"] == 0
    assert body["round_summaries"] == []
    assert body["url"].endswith(url("run-detail", SLUG, 1))
    assert AuditEvent.objects.filter(action="run.launched").count() == 1


def test_launch_setting_errors_answer_400_by_field(api_as, ready):
    client = api_as(ready.a.researcher)
    response = client.post(
        url("run-list", SLUG),
        {**BODY, "rounds": 0, "strategy": "trimmed_mean", "strategy_options": {"beta": 0.7}},
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "Correct the run's settings."
    assert set(body["errors"]) == {"rounds", "strategy_options"}
    assert "between 1 and 500" in body["errors"]["rounds"]
    # A value of the wrong type answers in the same shape.
    response = client.post(url("run-list", SLUG), {**BODY, "seed": "seven"}, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"seed"}
    response = client.post(url("run-list", SLUG), {**BODY, "model_family": "svm"}, format="json")
    assert set(response.json()["errors"]) == {"model_family"}
    assert not TrainingRun.objects.exists()


def test_launch_refused_by_the_agreement_lists_every_reason(api_as, ready):
    response = api_as(ready.a.researcher).post(
        url("run-list", SLUG),
        {**BODY, "model_family": "mlp", "min_contributors": 1},
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["detail"].startswith("This run may not start:")
    assert len(body["reasons"]) == 2
    assert any(
        "does not permit the model family Multilayer perceptron" in r for r in body["reasons"]
    )
    assert any("at least 2 contributors per round" in r for r in body["reasons"])
    assert not TrainingRun.objects.exists()


def test_launch_before_data_ready_is_refused(api_as, scenario):
    scenario.propose()
    response = api_as(scenario.a.researcher).post(url("run-list", SLUG), BODY, format="json")
    assert response.status_code == 400
    assert response.json()["reasons"]


# --- Reading -----------------------------------------------------------------------------------


def test_list_and_detail_show_progress_and_metrics(api_as, ready):
    run = add_rounds(ready, launch(ready))
    client = api_as(ready.c.viewer)
    body = client.get(url("run-list", SLUG)).json()
    assert body["count"] == 1
    listed = body["results"][0]
    assert listed["status"] == "running"
    assert listed["rounds_done"] == 1
    assert listed["metrics"] == {"accuracy": 0.8125, "loss": 0.4321}
    assert listed["launched_by"] == ready.a.researcher.username
    assert listed["institution"] == ready.a.institution.slug
    detail = client.get(url("run-detail", SLUG, run.number)).json()
    assert [r["status"] for r in detail["round_summaries"]] == ["succeeded", "running"]
    assert detail["spec"]["label"] == "malignant"
    assert detail["reasons"] == []
    assert client.get(url("run-detail", SLUG, 9)).status_code == 404


def test_rounds_carry_metrics_timings_and_site_reasons(api_as, ready):
    run = add_rounds(ready, launch(ready))
    body = api_as(ready.b.steward).get(url("run-rounds", SLUG, run.number)).json()
    assert body["next"] is None
    first, second = body["results"]
    assert first["metrics"] == {"accuracy": 0.8125, "loss": 0.4321}
    assert first["timings"]["site_compute"] == 1.5
    assert first["model_sha256"] == run.models.get(round_number=1).sha256
    sites = {s["institution"]: s for s in first["sites"]}
    assert sites["north-hospital"]["status"] == "contributed"
    assert sites["north-hospital"]["sample_count"] == 96
    assert sites["harbour-hospital"]["status"] == "rejected"
    assert sites["harbour-hospital"]["reason_code"] == "norm"
    assert "farther than the run allows" in sites["harbour-hospital"]["reason"]
    assert second["status"] == "running"
    assert second["model_sha256"] is None
    assert {s["status"] for s in second["sites"]} == {"dispatched"}


def _walk(client, path: str) -> list[dict]:
    """Every row of a cursor-paged list, following its next links; no page repeats a row."""
    rows, pages = [], 0
    while path:
        body = client.get(path).json()
        assert "count" not in body  # cursor pages: no COUNT over the whole table
        rows += body["results"]
        path, pages = body["next"], pages + 1
    return rows, pages


def test_rounds_site_rounds_and_models_page_by_cursor(api_as, ready):
    run = add_rounds(ready, launch(ready, rounds=10), closed=5)
    client = api_as(ready.c.viewer)
    rounds, pages = _walk(client, url("run-rounds", SLUG, run.number) + "?page_size=2")
    assert [r["number"] for r in rounds] == [1, 2, 3, 4, 5, 6]
    assert pages == 3
    answers, pages = _walk(client, url("run-site-rounds", SLUG, run.number) + "?page_size=4")
    assert [(a["round"], a["institution"]) for a in answers[:2]] == [
        (1, "north-hospital"),
        (1, "harbour-hospital"),
    ]
    assert len(answers) == 5 * 2 + 2 and pages == 3
    assert {a["status"] for a in answers if a["round"] == 6} == {"dispatched"}
    models, pages = _walk(client, url("run-models", SLUG, run.number) + "?page_size=4")
    assert [m["round_number"] for m in models] == [0, 1, 2, 3, 4, 5]
    first = client.get(url("run-models", SLUG, run.number) + "?page_size=4").json()
    assert first["may_download"] is True and first["next"]
    second = client.get(first["next"]).json()
    assert second["may_download"] is True and second["previous"]


def test_a_page_is_never_larger_than_the_ceiling(api_as, ready):
    run = add_rounds(ready, launch(ready), closed=1)
    now = timezone.now()
    numbers = range(3, MAX_PAGE_SIZE + 4)
    Round.objects.bulk_create(
        Round(run=run, number=n, started_at=now, deadline_at=now) for n in numbers
    )
    client = api_as(ready.c.viewer)
    path = url("run-rounds", SLUG, run.number) + f"?page_size={MAX_PAGE_SIZE * 5}"
    body = client.get(path).json()
    assert len(body["results"]) == MAX_PAGE_SIZE
    assert body["next"]
    assert len(client.get(url("run-rounds", SLUG, run.number)).json()["results"]) == ROUND_PAGE_SIZE
    assert len(client.get(url("run-site-rounds", SLUG, run.number)).json()["results"]) <= PAGE_SIZE


def test_a_bad_cursor_is_a_404_not_a_500(api_as, ready):
    run = add_rounds(ready, launch(ready))
    client = api_as(ready.c.viewer)
    for name in ("run-rounds", "run-site-rounds", "run-models"):
        response = client.get(url(name, SLUG, run.number) + "?cursor=not-a-cursor")
        assert response.status_code == 404


def test_invisible_problems_answer_404(api_as, scenario, outsider):
    scenario.propose(visibility="invitation")
    client = api_as(outsider.researcher)
    assert client.get(url("run-list", SLUG)).status_code == 404
    assert client.post(url("run-list", SLUG), BODY, format="json").status_code == 404


def _queries(client, path: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    return len(queries)


def test_list_and_rounds_queries_do_not_grow_with_the_data(api_as, ready):
    small = add_rounds(ready, launch(ready), closed=1)
    large = add_rounds(ready, launch(ready, rounds=10), closed=6)
    client = api_as(ready.a.researcher)
    for name in ("run-detail", "run-rounds", "run-site-rounds", "run-models"):
        assert _queries(client, url(name, SLUG, small.number)) == _queries(
            client, url(name, SLUG, large.number)
        )
    few = _queries(client, url("run-list", SLUG))
    for _ in range(3):
        add_rounds(ready, launch(ready), closed=2)
    assert _queries(client, url("run-list", SLUG)) == few


# --- Cancelling --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("a.researcher", 200),
        ("a.admin", 200),
        ("a.viewer", 403),
        ("b.researcher", 403),  # contributes, but did not launch it
        ("outsider.admin", 403),
        ("anonymous", 401),
    ],
)
def test_who_may_cancel(api_as, ready, outsider, who, expected):
    run = add_rounds(ready, launch(ready))
    response = api_as(person(ready, outsider, who)).post(url("run-cancel", SLUG, run.number))
    assert response.status_code == expected
    run.refresh_from_db()
    if expected == 200:
        body = response.json()
        assert body["status"] == run.status == "cancelled"
        assert body["cancelled_by"] == person(ready, outsider, who).username
        assert body["reasons"]
        assert body["round_summaries"][-1]["status"] == "cancelled"
        assert AuditEvent.objects.filter(action="run.cancelled").count() == 1
    else:
        assert run.status == "running"


def test_cancelling_a_finished_run_answers_409(api_as, ready):
    run = launch(ready)
    client = api_as(ready.a.researcher)
    assert client.post(url("run-cancel", SLUG, run.number)).status_code == 200
    response = client.post(url("run-cancel", SLUG, run.number))
    assert response.status_code == 409
    assert "already finished" in response.json()["detail"]


# --- Models and downloads ----------------------------------------------------------------------


def test_models_list_their_hashes_and_download_links(api_as, ready):
    run = add_rounds(ready, launch(ready))
    client = api_as(ready.b.viewer)
    body = client.get(url("run-models", SLUG, run.number)).json()
    assert body["may_download"] is True
    assert body["download_refusal"] is None
    assert [m["round_number"] for m in body["results"]] == [0, 1]
    assert body["next"] is None
    model = body["results"][1]
    assert model["sha256"] == run.models.get(round_number=1).sha256
    assert model["download_name"] == f"{SLUG}-run1-round1.npy"
    response = client.get(model["download_url"])
    assert response.status_code == 200
    assert response["X-Content-SHA256"] == model["sha256"]
    assert response["Content-Disposition"] == f'attachment; filename="{SLUG}-run1-round1.npy"'
    assert len(response.content) == model["size"]
    assert client.get(url("run-model-download", SLUG, run.number, 5)).status_code == 404


@pytest.mark.parametrize(
    ("scope", "who", "allowed"),
    [
        ("participants", "c.viewer", True),
        ("participants", "outsider.researcher", False),
        ("members", "outsider.researcher", True),
        ("members", "nobody", False),
        ("public", "nobody", True),
    ],
)
def test_download_follows_the_agreement_scope(api_as, scenario, outsider, scope, who, allowed):
    ready_with(scenario, download_scope=scope)
    run = add_rounds(scenario, launch(scenario))
    client = api_as(person(scenario, outsider, who))
    listing = client.get(url("run-models", SLUG, run.number)).json()
    assert listing["may_download"] is allowed
    response = client.get(url("run-model-download", SLUG, run.number, 1))
    if allowed:
        assert response.status_code == 200
        assert listing["download_refusal"] is None
    else:
        assert response.status_code == 403
        assert response.json()["detail"].startswith("Agreement version 1 lets only")
        assert listing["download_refusal"] == response.json()["detail"]


def test_anonymous_download_of_a_public_model_finds_no_problem(api_as, scenario):
    ready_with(scenario, download_scope="public")
    run = add_rounds(scenario, launch(scenario))
    client = api_as(None)
    # Anonymous callers see no problem, so the answer is 404 rather than a demand to log in.
    assert client.get(url("run-model-download", SLUG, run.number, 1)).status_code == 404
    assert client.get(url("run-models", SLUG, run.number)).status_code == 401


# --- The schema --------------------------------------------------------------------------------


def test_the_schema_documents_the_runs_api_without_warnings(tmp_path):
    target = tmp_path / "schema.yml"
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(target), stdout=StringIO()
    )
    schema = target.read_text()
    for path in (
        "/api/v1/problems/{slug}/runs/",
        "/api/v1/problems/{slug}/runs/{number}/",
        "/api/v1/problems/{slug}/runs/{number}/cancel/",
        "/api/v1/problems/{slug}/runs/{number}/rounds/",
        "/api/v1/problems/{slug}/runs/{number}/site-rounds/",
        "/api/v1/problems/{slug}/runs/{number}/models/",
        "/api/v1/problems/{slug}/runs/{number}/models/{round_number}/download/",
    ):
        assert path in schema
    for component in ("RunStatus:", "RoundStatus:", "SiteRoundStatus:", "Strategy:"):
        assert component in schema
