"""The pages of training runs: launch, follow, cancel and download, and who may do each.

No worker runs here: a launch inside a test's transaction never dispatches (on-commit callbacks
do not fire), and rounds, site answers and models are written as rows, as the coordinator would.
"""

import datetime
import html
import re
import threading

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from alliance.models import AuditEvent
from projects.federation.encoding import encode_params
from projects.models import Dataset, Round, SiteRound, TrainingRun
from projects.services.runs import LaunchConfig, model_store, run_launch
from tests.factories import StaffFactory, UserFactory
from tests.projects.scenario import Scenario, make_site

pytestmark = pytest.mark.django_db

SLUG = "tumour-malignancy"


def url(name: str, *args) -> str:
    return reverse(name, args=args)


def text(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def outsider():
    return make_site("outside-bank", "Outside Bank")


def launch(scenario: Scenario, **config) -> TrainingRun:
    config.setdefault("rounds", 3)
    return run_launch(
        actor=scenario.a.researcher, problem=scenario.refresh(), config=LaunchConfig(**config)
    )


def add_rounds(scenario: Scenario, run: TrainingRun, closed: int = 1) -> TrainingRun:
    """``closed`` rounds that succeeded (A contributed, B was rejected), then one still open."""
    datasets = {d.institution_id: d for d in Dataset.objects.filter(problem=scenario.problem)}
    a, b = scenario.a.institution, scenario.b.institution
    now = timezone.now()
    for number in range(1, closed + 1):
        round_ = Round.objects.create(
            run=run,
            number=number,
            status=Round.Status.SUCCEEDED,
            started_at=now,
            deadline_at=now + datetime.timedelta(minutes=2),
            closed_at=now + datetime.timedelta(seconds=3),
            contributors=1,
            metrics={"accuracy": 0.8125, "loss": 0.4321},
            timings={"dispatch": 0.01, "site_compute": 1.5, "aggregation": 0.002},
        )
        blob = encode_params([np.full((3, 1), float(number)), np.zeros(1)])
        round_.model = model_store(run=run, round_number=number, blob=blob, metrics=round_.metrics)
        round_.save()
        SiteRound.objects.create(
            round=round_,
            institution=a,
            dataset=datasets[a.pk],
            status=SiteRound.Status.CONTRIBUTED,
            sample_count=96,
            update_sha256="cd" * 32,
        )
        SiteRound.objects.create(
            round=round_,
            institution=b,
            dataset=datasets[b.pk],
            status=SiteRound.Status.REJECTED,
            reason_code="norm",
            reason="The update moves the model farther than the run allows (norm=12345).",
        )
    open_round = Round.objects.create(
        run=run,
        number=closed + 1,
        started_at=now,
        deadline_at=now + datetime.timedelta(minutes=2),
    )
    for institution in (a, b):
        SiteRound.objects.create(
            round=open_round, institution=institution, dataset=datasets[institution.pk]
        )
    run.status = TrainingRun.Status.RUNNING
    run.started_at = now
    run.save()
    return run


def ready_with(scenario: Scenario, **terms) -> Scenario:
    scenario.propose()
    scenario.join()
    scenario.ratify()
    scenario.register()
    scenario.draft(**terms)
    scenario.approve()
    scenario.refresh()
    return scenario


FORM = {
    "model_family": "logistic_regression",
    "strategy": "fedavg",
    "mu": "",
    "beta": "",
    "eta": "",
    "rounds": "4",
    "local_epochs": "2",
    "batch_size": "16",
    "learning_rate": "0.3",
    "min_contributors": "",
    "round_deadline": "60",
    "seed": "7",
}


# --- Launching: who may ------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["a.researcher", "a.admin", "b.researcher"])
def test_launch_form_is_offered_to_researchers_of_contributors(client, ready, who):
    site, role = who.split(".")
    client.force_login(getattr(getattr(ready, site), role))
    assert url("run-launch", SLUG) in text(client.get(url("run-list", SLUG)))
    page = text(client.get(url("run-launch", SLUG)))
    assert 'name="rounds" value="10"' in page  # prefilled from the defaults
    assert 'placeholder="2"' in page  # the agreement's minimum
    assert 'value="mlp"' not in page  # only the agreement's families


@pytest.mark.parametrize("who", ["a.viewer", "a.steward", "c.researcher", "outsider.researcher"])
def test_launch_is_refused_with_the_reason_to_others(client, ready, outsider, who):
    site, role = who.split(".")
    person = getattr(outsider if site == "outsider" else getattr(ready, site), role)
    client.force_login(person)
    assert url("run-launch", SLUG) not in text(client.get(url("run-list", SLUG)))
    response = client.get(url("run-launch", SLUG))
    assert response.status_code == 403
    assert "Only researchers and admins of an institution that contributes" in text(response)
    response = client.post(url("run-launch", SLUG), FORM)
    assert response.status_code == 403
    assert not TrainingRun.objects.exists()


def test_launch_before_data_ready_says_why(client, scenario):
    scenario.propose()
    client.force_login(scenario.a.researcher)
    assert url("run-launch", SLUG) not in text(client.get(url("run-list", SLUG)))
    response = client.get(url("run-launch", SLUG))
    assert response.status_code == 403
    assert "Runs start once the problem is data ready" in text(response)
    assert "Proposed" in text(response)


def test_anonymous_visitors_are_sent_to_log_in(client, ready):
    run = launch(ready)
    for name, args in (
        ("run-list", (SLUG,)),
        ("run-launch", (SLUG,)),
        ("run", (SLUG, run.number)),
        ("run-live", (SLUG, run.number)),
    ):
        response = client.get(url(name, *args))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    response = client.post(url("run-cancel", SLUG, run.number))
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED


def test_invisible_problems_answer_404(client, scenario, outsider):
    scenario.propose(visibility="invitation")
    client.force_login(outsider.researcher)
    assert client.get(url("run-list", SLUG)).status_code == 404
    assert client.get(url("run-launch", SLUG)).status_code == 404


# --- Launching: the form -----------------------------------------------------------------------


def test_launch_redirects_to_the_run_with_a_message(client, ready):
    client.force_login(ready.a.researcher)
    response = client.post(url("run-launch", SLUG), {**FORM, "strategy": "fedprox", "mu": "0.05"})
    run = TrainingRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == url("run", SLUG, run.number)
    assert (run.rounds, run.local_epochs, run.batch_size, run.seed) == (4, 2, 16, 7)
    assert run.strategy_options == {"mu": 0.05}
    assert run.min_contributors == 2  # the agreement's
    assert AuditEvent.objects.filter(action="run.launched").count() == 1
    page = text(client.get(response["Location"]))
    assert "Run 1 is launched" in page


def test_launch_with_differential_privacy_shows_it_on_the_run(client, ready):
    client.force_login(ready.a.researcher)
    response = client.post(
        url("run-launch", SLUG), {**FORM, "dp_epsilon": "3", "dp_clip_norm": "0.5"}
    )
    run = TrainingRun.objects.get()
    assert response.status_code == 302
    assert run.spec["dp"]["epsilon"] == 3.0 and run.spec["dp"]["clip_norm"] == 0.5
    page = text(client.get(response["Location"]))
    assert "DP-SGD at every site: epsilon 3.0 per dataset" in page


def test_launch_errors_show_next_to_fields_and_keep_the_input(client, ready):
    client.force_login(ready.a.researcher)
    response = client.post(
        url("run-launch", SLUG),
        {**FORM, "rounds": "0", "strategy": "trimmed_mean", "beta": "0.7", "seed": "seven"},
    )
    assert response.status_code == 200
    page = text(response)
    assert "Enter a whole number." in page  # the form's own check
    assert not TrainingRun.objects.exists()
    response = client.post(
        url("run-launch", SLUG), {**FORM, "rounds": "0", "strategy": "trimmed_mean", "beta": "0.7"}
    )
    page = text(response)
    assert re.search(r'name="rounds"[^>]*value="0"', page)  # nothing lost
    assert re.search(r'name="beta"[^>]*value="0.7"', page)
    errors = re.findall(r'<p class="field-error">([^<]+)</p>', page)
    assert any("between 1 and 500" in e for e in errors)
    assert any("beta" in e for e in errors)
    assert not TrainingRun.objects.exists()


def test_policy_refusal_lists_every_reason(client, ready):
    client.force_login(ready.a.researcher)
    response = client.post(url("run-launch", SLUG), {**FORM, "min_contributors": "1"})
    assert response.status_code == 200
    page = text(response)
    assert "The agreement does not allow this run:" in page
    assert "requires at least 2 contributors per round; the run asks for 1" in page
    assert re.search(r'name="min_contributors"[^>]*value="1"', page)
    assert not TrainingRun.objects.exists()


def test_a_family_the_agreement_does_not_permit_is_not_accepted(client, ready):
    client.force_login(ready.a.researcher)
    response = client.post(url("run-launch", SLUG), {**FORM, "model_family": "mlp"})
    assert response.status_code == 200
    assert "Select a valid choice" in text(response)
    assert not TrainingRun.objects.exists()


# --- Following a run ---------------------------------------------------------------------------


def test_run_page_shows_configuration_rounds_sites_and_models(client, ready):
    run = add_rounds(ready, launch(ready))
    client.force_login(ready.b.viewer)
    page = text(client.get(url("run", SLUG, run.number)))
    assert "Run 1" in page
    assert "FedAvg (weighted by sample count)" in page
    assert url("agreement-detail", SLUG, 1) in page
    assert 'id="round-1"' in page and 'id="round-2"' in page
    assert "0.8125" in page and "0.4321" in page
    round_1 = re.search(r'<tr id="round-1">(.*?)</tr>', page, re.S).group(1)
    round_2 = re.search(r'<tr id="round-2">(.*?)</tr>', page, re.S).group(1)
    # Columns are sites by name: Harbour (B) then North (A).
    assert re.findall(r'<td class="site-(\w+)">', round_1) == ["rejected", "contributed"]
    assert re.findall(r'<td class="site-(\w+)">', round_2) == ["dispatched", "dispatched"]
    # A rejected update: the reason as a tooltip and as text for screen readers and keyboards.
    reason = "Rejected: The update moves the model farther than the run allows (norm=12345)."
    assert f'title="{reason}" tabindex="0"' in round_1
    assert f'<span class="visually-hidden">{reason}</span>' in round_1
    model = run.models.get(round_number=1)
    assert model.sha256 in page
    assert url("model-download", SLUG, run.number, 1) in page
    assert 'data-finished="false"' in page
    assert "js/run-live.js" in page
    assert "Cancel this run" not in page  # a viewer cannot cancel


def test_live_fragment_carries_the_rounds_and_whether_finished(client, ready):
    run = add_rounds(ready, launch(ready))
    client.force_login(ready.a.researcher)
    response = client.get(url("run-live", SLUG, run.number))
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    page = text(response)
    assert page.startswith('<div id="run-live"')
    assert "<html" not in page
    assert 'data-finished="false"' in page
    assert 'id="round-2"' in page
    assert "1 of 3 rounds done." in page
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.FAILED, reasons=["Round 2 failed: too few contributions."]
    )
    page = text(client.get(url("run-live", SLUG, run.number)))
    assert 'data-finished="true"' in page
    assert "Why the run failed:" in page
    assert "Round 2 failed: too few contributions." in page


def test_live_fragment_holds_an_unchanged_part_and_answers_a_stale_one_at_once(
    client, ready, monkeypatch
):
    from projects import run_views

    run = add_rounds(ready, launch(ready))
    client.force_login(ready.a.researcher)
    live = url("run-live", SLUG, run.number)
    version = client.get(live)["X-Live-Version"]
    monkeypatch.setattr(run_views, "LIVE_WAIT_SECONDS", 0.05)
    held = client.get(live, {"seen": version})
    assert held["X-Live-Version"] == version
    # A page showing an older part is sent the current one without waiting for a change.
    monkeypatch.setattr(run_views, "LIVE_WAIT_SECONDS", 600)
    assert client.get(live, {"seen": "0" * 32})["X-Live-Version"] == version


def test_live_fragment_held_for_a_change_answers_with_the_closed_round(
    client, ready, transactional_db
):
    from django.db import connection as default_connection
    from django.db import transaction

    from projects.services.runs import run_changed

    run = add_rounds(ready, launch(ready))
    client.force_login(ready.a.researcher)
    live = url("run-live", SLUG, run.number)
    version = client.get(live)["X-Live-Version"]

    def close_round_two() -> None:
        with transaction.atomic():
            Round.objects.filter(run=run, number=2).update(
                status=Round.Status.SUCCEEDED, closed_at=timezone.now(), contributors=1
            )
            run_changed(run.pk)
        default_connection.close()

    # Whether the change commits before the request listens or while it waits, the answer is
    # the part with round 2 closed.
    closer = threading.Timer(0.1, close_round_two)
    closer.start()
    try:
        response = client.get(live, {"seen": version})
    finally:
        closer.join()
    assert response["X-Live-Version"] != version
    assert "2 of 3 rounds done." in text(response)


def test_run_list_shows_rounds_done_and_the_latest_metric(client, ready):
    run = add_rounds(ready, launch(ready))
    client.force_login(ready.c.viewer)
    page = text(client.get(url("run-list", SLUG)))
    assert url("run", SLUG, run.number) in page
    assert "1 of 3" in page
    assert 'Accuracy <span class="num">0.8125</span>' in page
    assert "a-researcher" in page or "north-hospital-researcher" in page


def test_missing_runs_answer_404(client, ready):
    client.force_login(ready.a.researcher)
    assert client.get(url("run", SLUG, 9)).status_code == 404
    assert client.get(url("run-live", SLUG, 9)).status_code == 404


def _queries(client, path: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    return len(queries)


def test_run_pages_queries_do_not_grow_with_the_data(client, ready):
    small = add_rounds(ready, launch(ready), closed=1)
    large = add_rounds(ready, launch(ready, rounds=10), closed=6)
    client.force_login(ready.a.researcher)
    for name in ("run", "run-live"):
        assert _queries(client, url(name, SLUG, small.number)) == _queries(
            client, url(name, SLUG, large.number)
        )
    few = _queries(client, url("run-list", SLUG))
    for _ in range(3):
        add_rounds(ready, launch(ready), closed=2)
    assert _queries(client, url("run-list", SLUG)) == few


# --- Cancelling --------------------------------------------------------------------------------


def test_the_launching_researcher_cancels_a_running_run(client, ready):
    run = add_rounds(ready, launch(ready))
    client.force_login(ready.a.researcher)
    assert "Cancel this run" in text(client.get(url("run", SLUG, run.number)))
    response = client.post(url("run-cancel", SLUG, run.number), follow=True)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    page = text(response)
    assert "Run 1 is cancelled" in page
    assert "Why the run stopped:" in page
    assert "Cancel this run" not in page
    assert run.round_set.get(number=2).status == Round.Status.CANCELLED


@pytest.mark.parametrize("who", ["a.viewer", "b.researcher", "c.admin"])
def test_others_cannot_cancel(client, ready, who):
    run = launch(ready)
    site, role = who.split(".")
    client.force_login(getattr(getattr(ready, site), role))
    assert "Cancel this run" not in text(client.get(url("run", SLUG, run.number)))
    response = client.post(url("run-cancel", SLUG, run.number), follow=True)
    assert "cancel a run" in text(response)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED


def test_cancelling_a_finished_run_says_so(client, ready):
    run = launch(ready)
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED)
    client.force_login(ready.a.researcher)
    response = client.post(url("run-cancel", SLUG, run.number), follow=True)
    assert "This run has already finished (succeeded)." in text(response)


def test_cancel_is_post_only(client, ready):
    run = launch(ready)
    client.force_login(ready.a.researcher)
    assert client.get(url("run-cancel", SLUG, run.number)).status_code == 405


# --- Downloads ---------------------------------------------------------------------------------


def _download(client, run, round_number=1):
    return client.get(url("model-download", SLUG, run.number, round_number))


def test_download_sends_the_npy_file_with_its_hash(client, ready):
    run = add_rounds(ready, launch(ready))
    model = run.models.get(round_number=1)
    client.force_login(ready.c.viewer)  # the validator's people take part too
    response = _download(client, run)
    assert response.status_code == 200
    body = response.content
    assert response["X-Content-SHA256"] == model.sha256
    assert response["Content-Disposition"] == (f'attachment; filename="{SLUG}-run1-round1.npy"')
    with model.file.open("rb") as stored:
        assert body == stored.read()
    assert _download(client, run, 0).status_code == 200  # the initial model
    assert _download(client, run, 7).status_code == 404


@pytest.mark.parametrize(
    ("scope", "who", "allowed"),
    [
        ("participants", "b.viewer", True),
        ("participants", "outsider.researcher", False),
        ("participants", "nobody", False),
        ("members", "outsider.researcher", True),
        ("members", "nobody", False),
        ("public", "nobody", True),
        ("public", "staff", True),
    ],
)
def test_download_follows_the_agreement_scope(client, scenario, outsider, scope, who, allowed):
    ready_with(scenario, download_scope=scope)
    run = add_rounds(scenario, launch(scenario))
    if who == "nobody":
        person = UserFactory(username="no-member")  # logged in, of no member institution
    elif who == "staff":
        person = StaffFactory()
    else:
        site, role = who.split(".")
        person = getattr(outsider if site == "outsider" else getattr(scenario, site), role)
    client.force_login(person)
    response = _download(client, run)
    page = text(client.get(url("run", SLUG, run.number)))
    if allowed:
        assert response.status_code == 200
        assert url("model-download", SLUG, run.number, 1) in page
    else:
        assert response.status_code == 403
        assert "Agreement version 1 lets only" in text(response)
        assert url("model-download", SLUG, run.number, 1) not in page
        assert "Agreement version 1 lets only" in page


def test_anonymous_download_sees_no_problem(client, scenario):
    ready_with(scenario, download_scope="public")
    run = add_rounds(scenario, launch(scenario))
    # Anonymous visitors see no problem at all, so even a public model answers 404, not 403.
    assert _download(client, run).status_code == 404


def test_problem_page_links_to_its_runs(client, ready):
    client.force_login(ready.b.viewer)
    assert url("run-list", SLUG) in text(client.get(url("problem-detail", SLUG)))


def test_suspended_members_cannot_launch(client, ready):
    client.force_login(ready.a.researcher)
    institution = ready.a.institution
    institution.status = "suspended"
    institution.save()
    response = client.get(url("run-launch", SLUG))
    assert response.status_code == 403


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
SAME_REFUSALS = [
    ({"strategy": "fedavg", "mu": "0.1"}, {"strategy": "fedavg", "options": {"mu": 0.1}}),
    ({"strategy": "fedprox", "eta": "0.1"}, {"strategy": "fedprox", "options": {"eta": 0.1}}),
    ({"strategy": "trimmed_mean", "beta": "0.7"},
     {"strategy": "trimmed_mean", "options": {"beta": 0.7}}),
    ({"strategy": "fedadam", "eta": "-1"}, {"strategy": "fedadam", "options": {"eta": -1}}),
    ({"rounds": "0"}, {"rounds": 0}),
    ({"round_deadline": "1"}, {"round_deadline": 1}),
    ({"learning_rate": "11"}, {"learning_rate": 11}),
    ({"dp_epsilon": "-1.5"}, {"dp_options": {"epsilon": -1.5}}),
    ({"dp_clip_norm": "0.5"}, {"dp_options": {"clip_norm": 0.5}}),
    ({"dp_epsilon": "2", "dp_clip_norm": "0"}, {"dp_options": {"epsilon": 2, "clip_norm": 0}}),
]  # fmt: skip


@pytest.mark.parametrize(("form", "body"), SAME_REFUSALS)
def test_the_launch_form_and_the_api_refuse_the_same_inputs(client, api_as, ready, form, body):
    client.force_login(ready.a.researcher)
    page = text(client.post(url("run-launch", SLUG), {**FORM, **form}))
    shown = re.findall(r'<p class="field-error">([^<]+)</p>', page)
    body = {**API_BODY, **body}
    if "options" in body:
        body["strategy_options"] = body.pop("options")
    response = api_as(ready.a.researcher).post(
        reverse("api:run-list", args=[SLUG]), body, format="json"
    )
    assert response.status_code == 400
    (_field, message), *_rest = response.json()["errors"].items()
    assert shown == [html.unescape(message)], (shown, response.json())
    assert not TrainingRun.objects.exists()
