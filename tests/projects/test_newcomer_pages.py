"""Pages a newcomer follows without guessing: the launch button where the problem is, a launch
form that states its ranges, a run page that tells the truth, agreements compared and decided
with confirmation, confirmations that stay in view, an activity feed of one line per run."""

import html
import re

import pytest
from django.db import transaction
from django.urls import reverse

from alliance.services.audit import audit_record
from projects import services
from projects.dashboards.alliance import recent_activity_for
from projects.models import TrainingRun
from projects.services.runs import DEFAULTS, LIMITS, LaunchConfig, run_cancel, run_launch
from tests.factories import StaffFactory
from tests.projects.scenario import Scenario, terms
from tests.projects.test_run_pages import FORM, SLUG, add_rounds, launch

pytestmark = pytest.mark.django_db


def text(response) -> str:
    return html.unescape(response.content.decode())


def squash(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


# --- The problem page offers the launch --------------------------------------------------------


def test_the_problem_page_offers_a_launch_to_whoever_may(client, ready):
    link = f'<a class="button" href="{reverse("run-launch", args=[SLUG])}">Launch a run</a>'
    for person, offered in (
        (ready.a.researcher, True),
        (ready.b.admin, True),
        (ready.a.steward, False),
        (ready.c.researcher, False),  # a validator, not a contributor
    ):
        client.force_login(person)
        page = text(client.get(reverse("problem-detail", args=[SLUG])))
        assert (link in page) is offered, person


def test_no_launch_is_offered_before_the_problem_is_data_ready(client, scenario):
    scenario.propose()
    client.force_login(scenario.a.researcher)
    page = text(client.get(reverse("problem-detail", args=[SLUG])))
    assert "Launch a run" not in page


# --- The launch form -----------------------------------------------------------------------------


def test_the_launch_form_states_each_range_up_front_from_the_service_limits(
    client, ready, settings
):
    settings.FEDERATION_MAX_ROUND_DEADLINE = 900
    client.force_login(ready.a.researcher)
    page = squash(text(client.get(reverse("run-launch", args=[SLUG]))))
    low, high = LIMITS["rounds"]
    assert f"From {low} to {high}." in page
    assert "From 1 to 10,000." in page  # batch size, as people write it
    assert "From 0.000001 to 10." in page  # learning rate
    assert "From 5 to 900." in page  # the deadline's upper bound is the setting's
    assert "empty: what the agreement requires (2)" in page
    assert "Only for FedProx (proximal term on the sites): zero or more; empty: 0.01." in page
    assert "at least 0 and below 0.5; empty: 0.1" in page
    raw = client.get(reverse("run-launch", args=[SLUG])).content.decode()
    assert f'name="rounds" value="{DEFAULTS["rounds"]}"' in raw
    assert re.search(r'<input[^>]*name="rounds"[^>]*max="500"', raw)
    assert re.search(r'<input[^>]*name="learning_rate"[^>]*step="any"', raw)


def test_each_strategy_option_is_marked_with_its_strategy_for_the_script(client, ready):
    client.force_login(ready.a.researcher)
    raw = client.get(reverse("run-launch", args=[SLUG])).content.decode()
    assert "data-strategy-options" in raw
    for strategy, option in (("fedprox", "mu"), ("trimmed_mean", "beta"), ("fedadam", "eta")):
        assert re.search(rf'data-strategy="{strategy}">\s*<label for="id_{option}">', raw), strategy
    assert "js/launch-form.js" in raw


# --- The run page tells the truth ---------------------------------------------------------------


def test_the_launch_message_is_gone_once_the_run_is_over(client, ready):
    client.force_login(ready.a.researcher)
    response = client.post(reverse("run-launch", args=[SLUG]), FORM)
    run = TrainingRun.objects.get()
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED)
    page = text(client.get(response["Location"]))
    assert "Run 1 is launched" not in page
    assert "This page follows it live" not in page


def test_the_launch_message_is_tagged_to_go_with_the_run(client, ready):
    client.force_login(ready.a.researcher)
    response = client.post(reverse("run-launch", args=[SLUG]), FORM, follow=True)
    page = text(response)
    assert re.search(r'<p class="msg until-finished success">Run 1 is launched', page)
    # The live page's script hides it when the run ends, and shows a lost connection.
    assert 'id="run-connection" role="alert" hidden' in page
    assert "Connection to the portal lost" in page


def test_a_cancelled_run_reads_as_cancelled(client, ready):
    run = add_rounds(ready, launch(ready), closed=1)
    run_cancel(actor=ready.a.researcher, run=run)
    client.force_login(ready.b.researcher)
    page = squash(text(client.get(reverse("run", args=[SLUG, run.number]))))
    assert "Cancelled after 1 of 3 rounds, by north-hospital-researcher" in page
    assert "sites contributed to the latest closed round" not in page


# --- Agreements read like documents ------------------------------------------------------------


@pytest.fixture
def amended(ready: Scenario) -> Scenario:
    services.agreement_draft(
        actor=ready.a.researcher,
        problem=ready.refresh(),
        change_note="Commercial use with revenue sharing.",
        **terms(
            purpose="Train a tumour malignancy classifier for screening and for products.",
            commercial_use=True,
            revenue_sharing="Shared by rows contributed.",
            min_contributors=3,
        ),
    )
    return ready


def test_two_agreement_versions_compare_term_by_term(client, amended):
    client.force_login(amended.b.steward)
    page = text(client.get(reverse("agreement-compare", args=[SLUG]), {"from": 1, "to": 2}))
    flat = squash(page)
    assert "Agreement version 1 compared with version 2" in flat
    assert "4 terms changed." in flat
    assert "classifier for screening <del>research.</del>" in page
    assert "classifier for screening <ins>and for products.</ins>" in page
    assert re.search(r"Commercial use allowed\s*</th>\s*<td class=\"old\"><del>no</del>", page)
    assert "Unchanged" in page
    assert "What changed and why: Commercial use with revenue sharing." in flat
    # The default is the newest version against the one before it.
    default = text(client.get(reverse("agreement-compare", args=[SLUG])))
    assert "Agreement version 1 compared with version 2" in squash(default)


@pytest.mark.parametrize(("query", "status"), [({"from": "x"}, 400), ({"from": 1, "to": 9}, 404)])
def test_a_bad_comparison_says_so(client, amended, query, status):
    client.force_login(amended.b.steward)
    assert client.get(reverse("agreement-compare", args=[SLUG]), query).status_code == status


def test_agreement_pages_link_to_the_comparison(client, amended):
    client.force_login(amended.b.steward)
    compare = f"{reverse('agreement-compare', args=[SLUG])}?from=1&amp;to=2"
    assert compare in client.get(reverse("agreement-list", args=[SLUG])).content.decode()
    detail = client.get(reverse("agreement-detail", args=[SLUG, 2])).content.decode()
    assert compare in detail


def test_approving_asks_for_confirmation_and_says_what_follows(client, amended):
    client.force_login(amended.b.steward)
    page = squash(text(client.get(reverse("agreement-detail", args=[SLUG, 2]))))
    assert "Approve version 2… What follows:" in page
    assert "takes effect once the others approve it too; still to decide: North Hospital" in page
    assert "Yes, approve version 2" in page
    assert "Decline version 2… What follows: Version 2 cannot take effect" in page
    assert "Version 1 stays in effect meanwhile." in page
    # The last approval says it makes the version effective in place of the previous one.
    services.agreement_approve(
        actor=amended.a.steward,
        version=amended.problem.agreements.get(number=2),
        terms_sha256=amended.problem.agreements.get(number=2).terms_sha256,
    )
    page = squash(text(client.get(reverse("agreement-detail", args=[SLUG, 2]))))
    assert "Yours is the last approval: version 2 takes effect at once and replaces version 1." in (
        page
    )


def test_revoking_asks_for_confirmation_and_says_what_follows(client, ready):
    client.force_login(ready.b.steward)
    page = squash(text(client.get(reverse("agreement-detail", args=[SLUG, 1]))))
    assert "Revoke the approval… What follows: From then on your institution's data" in page
    assert "Yes, revoke the approval" in page


def test_deactivating_asks_for_confirmation_and_says_what_follows(client, ready):
    client.force_login(ready.a.admin)
    page = squash(text(client.get(reverse("my-institution"))))
    assert "Deactivate… " in page
    assert "can then no longer log in or use the API" in page
    assert "Yes, deactivate north-hospital-viewer" in page


# --- Confirmations stay in view --------------------------------------------------------------


def test_after_an_invitation_the_page_lands_on_the_confirmation(client, ready):
    client.force_login(ready.a.admin)
    response = client.post(
        reverse("my-institution"),
        {"email": "new.colleague@north.example.org", "role": "researcher"},
    )
    # The form posts to #invite; the answer names its own fragment, or the browser keeps it.
    assert response["Location"] == reverse("my-institution") + "#messages"
    page = text(client.get(response["Location"]))
    assert '<div class="messages" id="messages" role="status">' in page
    assert "Invitation sent to new.colleague@north.example.org." in page


def test_problem_actions_land_on_their_confirmation(client, ready):
    client.force_login(ready.a.admin)
    response = client.post(
        reverse("participation-action", args=[SLUG, "invite"]),
        {"institution": "nobody", "role": "contributor"},
    )
    assert response["Location"].endswith("#messages")


# --- The activity feed: one line per run ---------------------------------------------------------


def _round_events(run: TrainingRun, rounds: int) -> None:
    with transaction.atomic():
        for number in range(1, rounds + 1):
            for action in ("round.started", "round.closed"):
                audit_record(
                    actor=None,
                    action=action,
                    target=run,
                    subject_institution=run.institution,
                    payload={"run": run.number, "round": number},
                )


def test_the_activity_feed_gathers_a_runs_round_events_into_one_line(client, ready):
    first = run_launch(actor=ready.a.researcher, problem=ready.refresh(), config=LaunchConfig())
    _round_events(first, 4)
    second = run_launch(actor=ready.b.researcher, problem=ready.refresh(), config=LaunchConfig())
    _round_events(second, 2)

    lines = recent_activity_for(StaffFactory(), limit=3)
    assert [(line.event.action, line.rounds, line.count) for line in lines] == [
        ("round.closed", (1, 2), 4),
        ("run.launched", None, 1),
        ("round.closed", (1, 4), 8),
    ]
    client.force_login(StaffFactory())
    page = squash(text(client.get(reverse("dashboard"))))
    assert "Run 2 of “Tumour malignancy from biopsy features” : rounds 1 to 2, 4 round" in page
    assert "rounds 1 to 4, 8 round events (latest: Round closed) · Coordinator" in page
    assert page.count("Round started") == 0


def test_the_activity_feed_reads_a_bounded_window(ready):
    run = run_launch(actor=ready.a.researcher, problem=ready.refresh(), config=LaunchConfig())
    _round_events(run, 5)
    lines = recent_activity_for(StaffFactory(), limit=10, window=4)
    assert [(line.rounds, line.count) for line in lines] == [((4, 5), 4)]
