"""The institution dashboard: what waits for us, our problems, the runs that used each of our
datasets (when, under which agreement version, which rounds, outcome), our people.

Runs are launched through the service (no worker: on-commit dispatch never fires inside a test's
transaction); their rounds and each site's part are written as rows, in bulk, as the
coordinator would.
"""

import datetime
import html

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from alliance.models import Membership, Role
from projects.models import Dataset, Round, SiteRound, TrainingRun
from projects.services.runs import LaunchConfig, run_launch
from tests.factories import StaffFactory, UserFactory, member
from tests.projects.scenario import Scenario, description

pytestmark = pytest.mark.django_db

PAGE = "my-institution"
REASON = "The update moves the model farther than the run allows (norm=12345)."


def text(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def dataset_of(scenario: Scenario, site) -> Dataset:
    return Dataset.objects.get(problem=scenario.problem, institution=site.institution)


def launch(scenario: Scenario, rounds: int = 3) -> TrainingRun:
    return run_launch(
        actor=scenario.a.researcher, problem=scenario.refresh(), config=LaunchConfig(rounds=rounds)
    )


def clone_runs(run: TrainingRun, count: int) -> list[TrainingRun]:
    """``count`` more runs like ``run``, numbered after the problem's last one."""
    last = TrainingRun.objects.filter(problem_id=run.problem_id).order_by("-number")[0].number
    fields = {
        f.attname: getattr(run, f.attname)
        for f in TrainingRun._meta.concrete_fields
        if f.attname != "id"
    }
    return TrainingRun.objects.bulk_create(
        [TrainingRun(**{**fields, "number": last + i + 1}) for i in range(count)]
    )


def play(
    run: TrainingRun,
    datasets: list[Dataset],
    rounds: int,
    *,
    dropped: tuple[int, ...] = (2,),
    rejected: tuple[int, ...] = (),
    status: str = TrainingRun.Status.SUCCEEDED,
) -> None:
    """``rounds`` closed rounds of ``run``; the first dataset misses ``dropped`` and
    ``rejected``, the others contribute to every round."""
    now = timezone.now()
    made = Round.objects.bulk_create(
        Round(
            run=run,
            number=n,
            status=Round.Status.SUCCEEDED,
            started_at=now,
            deadline_at=now + datetime.timedelta(minutes=2),
            closed_at=now + datetime.timedelta(seconds=3),
            contributors=len(datasets),
        )
        for n in range(1, rounds + 1)
    )
    sites = []
    for round_ in made:
        for i, dataset in enumerate(datasets):
            state, reason = SiteRound.Status.CONTRIBUTED, ""
            if i == 0 and round_.number in dropped:
                state, reason = SiteRound.Status.DROPPED, "No answer before the deadline."
            elif i == 0 and round_.number in rejected:
                state, reason = SiteRound.Status.REJECTED, REASON
            sites.append(
                SiteRound(
                    round=round_,
                    institution_id=dataset.institution_id,
                    dataset=dataset,
                    status=state,
                    reason=reason,
                    answered_at=now,
                )
            )
    SiteRound.objects.bulk_create(sites)
    TrainingRun.objects.filter(pk=run.pk).update(status=status, started_at=now, finished_at=now)


def count_queries(client, url: str) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured), text(response)


# --- What the page shows ---------------------------------------------------------------------


def test_each_dataset_lists_the_runs_that_used_it_with_agreement_version_and_rounds(client, ready):
    mine, theirs = dataset_of(ready, ready.a), dataset_of(ready, ready.b)
    first = launch(ready)
    play(first, [mine, theirs], 3, dropped=(2,))
    # The agreement is amended; the next run runs under version 2.
    ready.draft(clauses="Results are published jointly, within six months.")
    ready.approve()
    second = launch(ready)
    assert second.agreement.number == 2
    play(second, [mine, theirs], 4, dropped=(), rejected=(3,), status=TrainingRun.Status.FAILED)

    client.force_login(ready.a.admin)
    page = text(client.get(reverse(PAGE)))
    assert "north-hospital.csv" in page
    assert "harbour-hospital.csv" not in page  # another institution's dataset
    slug = ready.problem.slug
    assert reverse("run", args=[slug, 1]) in page
    assert reverse("run", args=[slug, 2]) in page
    assert reverse("agreement-detail", args=[slug, 1]) in page
    assert reverse("agreement-detail", args=[slug, 2]) in page
    assert "Rounds 1\u20133" in page and "contributed to 2 of 3" in page
    assert "round 2: Dropped at the deadline" in page
    assert "Rounds 1\u20134" in page and "contributed to 3 of 4" in page
    assert "round 3: Rejected" in page and REASON in page
    assert "✓ Succeeded" in page and "✕ Failed" in page
    # Newest run first.
    assert page.index(reverse("run", args=[slug, 2])) < page.index(reverse("run", args=[slug, 1]))

    client.force_login(ready.b.steward)
    page = text(client.get(reverse(PAGE)))
    assert "harbour-hospital.csv" in page and "north-hospital.csv" not in page
    assert "contributed to 3 of 3" in page and "contributed to 4 of 4" in page


def test_the_inbox_items_are_on_the_page(client, scenario):
    scenario.propose()
    scenario.join()
    client.force_login(scenario.b.researcher)
    page = text(client.get(reverse(PAGE)))
    assert "Ratify revision 1 of Tumour malignancy from biopsy features" in page
    assert reverse("problem-revision", args=[scenario.problem.slug, 1]) in page

    scenario.ratify()
    scenario.register()
    scenario.draft()
    client.force_login(scenario.a.steward)
    page = text(client.get(reverse(PAGE)))
    assert "Approve agreement version 1 of Tumour malignancy" in page
    assert "Nothing waits for you" not in page


def test_our_problems_show_our_role_and_the_stage(client, ready):
    client.force_login(ready.c.admin)
    page = text(client.get(reverse(PAGE)))
    assert "Tumour malignancy from biopsy features" in page
    assert "Validator (evaluates on held-out data)" in page
    assert "Data ready" in page and "(stage 3 of 6)" in page
    assert "(we proposed it)" not in page
    client.force_login(ready.a.viewer)
    page = text(client.get(reverse(PAGE)))
    assert "Contributor (brings data)" in page and "(we proposed it)" in page


# --- Empty states ----------------------------------------------------------------------------


def test_a_new_institution_is_told_what_to_do_next(client):
    admin = member(Role.ADMIN)
    client.force_login(admin)
    page = text(client.get(reverse(PAGE)))
    assert "Nothing waits for you right now." in page
    assert "takes part in no problem yet" in page
    assert reverse("problem-propose") in page
    assert "registered no dataset yet" in page and "describe_dataset" in page
    assert admin.username in page  # the people table is still there
    assert "Invite a colleague" in page


def test_a_registered_dataset_without_runs_says_how_runs_start(client, ready):
    client.force_login(ready.a.steward)
    page = text(client.get(reverse(PAGE)))
    assert "No run has used this dataset yet." in page
    assert reverse("run-list", args=[ready.problem.slug]) in page
    assert reverse("dataset-register", args=[ready.problem.slug]) not in page  # one is there


def test_a_contributor_without_a_dataset_gets_a_link_to_register_one(client, scenario):
    scenario.propose()
    scenario.join()
    scenario.ratify()
    client.force_login(scenario.b.steward)
    page = text(client.get(reverse(PAGE)))
    assert "registered no dataset yet" in page
    assert reverse("dataset-register", args=[scenario.problem.slug]) in page


# --- Who sees what ---------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_log_in(client, ready):
    for url in (
        reverse(PAGE),
        reverse("my-institution-dataset-runs", args=[dataset_of(ready, ready.a).pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_staff_are_sent_to_the_staff_overview(client):
    client.force_login(StaffFactory())
    response = client.get(reverse(PAGE))
    assert response.status_code == 302
    assert response["Location"] == reverse("staff-overview")
    notes = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("Staff accounts belong to no institution" in note for note in notes)


def test_a_person_without_an_institution_is_told_why_and_what_to_do(client):
    client.force_login(UserFactory())
    response = client.get(reverse(PAGE))
    assert response.status_code == 403
    assert "does not belong to a member institution" in text(response)
    assert reverse("apply") in text(response)


def test_the_runs_of_another_institutions_dataset_are_404(client, ready):
    theirs = dataset_of(ready, ready.b)
    client.force_login(ready.a.admin)
    url = reverse("my-institution-dataset-runs", args=[theirs.pk])
    assert client.get(url).status_code == 404
    client.force_login(ready.b.viewer)
    assert client.get(url).status_code == 200


# --- People are still managed here -----------------------------------------------------------


def test_admins_invite_from_the_page_and_others_cannot(client, admin_user, researcher):
    client.force_login(researcher)
    page = text(client.get(reverse(PAGE)))
    assert "Invite a colleague" not in page
    assert reverse("member-action", args=[researcher.membership.pk, "role"]) not in page
    response = client.post(reverse(PAGE), {"email": "z@x.org", "role": "viewer"})
    assert "Only your institution" in text(response)

    client.force_login(admin_user)
    page = text(client.get(reverse(PAGE)))
    assert reverse("member-action", args=[researcher.membership.pk, "role"]) in page
    response = client.post(reverse(PAGE), {"email": "new@tnh.example.org", "role": "viewer"})
    assert response.status_code == 302
    assert Membership.objects.filter(user__email="new@tnh.example.org").exists()
    page = text(client.get(reverse(PAGE)))
    assert "Invitation sent to new@tnh.example.org." in page
    assert "Invited, not joined yet" in page


# --- Long lists page by cursor, in a fixed number of queries ------------------------------------


def test_query_count_does_not_grow_with_runs_rounds_and_datasets(client, ready):
    mine, theirs = dataset_of(ready, ready.a), dataset_of(ready, ready.b)
    client.force_login(ready.a.admin)
    url = reverse(PAGE)

    first = launch(ready, rounds=5)
    play(first, [mine, theirs], 5, dropped=(2,), rejected=(4,))
    small, page = count_queries(client, url)
    assert "contributed to 3 of 5" in page
    assert "All runs that used this dataset" not in page

    # 500 rounds more, over 25 more runs.
    for run in clone_runs(first, 25):
        play(run, [mine, theirs], 20, dropped=(2, 3), rejected=(4,))
    large, page = count_queries(client, url)
    assert small == large, f"{small} queries with 5 rounds, {large} with 505"
    assert "contributed to 17 of 20" in page
    assert "All runs that used this dataset" in page
    assert page.count("round 2: Dropped at the deadline") == 5  # the latest five runs

    older = reverse("my-institution-dataset-runs", args=[mine.pk])
    with CaptureQueriesContext(connection) as captured:
        first_page = text(client.get(older))
    assert first_page.count('<th scope="row">') == 25
    assert "Older runs" in first_page
    cursor = first_page.split('href="?before=')[1].split('"')[0]
    with CaptureQueriesContext(connection) as captured_last:
        last_page = text(client.get(older + "?before=" + cursor))
    assert len(captured) == len(captured_last)
    assert last_page.count('<th scope="row">') == 1  # the first run, alone
    assert "contributed to 3 of 5" in last_page
    assert "Older runs" not in last_page and "Newest runs" in last_page


def test_query_count_does_not_grow_with_people(client, admin_user, institution):
    for i in range(4):
        member(Role.RESEARCHER, institution, user__username=f"person-{i:03}")
    client.force_login(admin_user)
    small, page = count_queries(client, reverse(PAGE))
    assert "More people" not in page

    users = get_user_model().objects.bulk_create(
        get_user_model()(username=f"person-{i:03}", email=f"p{i}@example.org")
        for i in range(4, 200)
    )
    Membership.objects.bulk_create(
        Membership(user=u, institution=institution, role=Role.VIEWER, joined_at=timezone.now())
        for u in users
    )
    large, page = count_queries(client, reverse(PAGE))
    assert small == large, f"{small} queries with 5 people, {large} with 200"
    assert "More people" in page
    assert "<td>person-048</td>" in page and "<td>person-049</td>" not in page
    page = text(client.get(reverse(PAGE) + "?people_after=person-048"))
    assert "<td>person-049</td>" in page and "<td>person-048</td>" not in page


def test_datasets_page_by_cursor(client, ready):
    Dataset.objects.bulk_create(
        Dataset(
            problem=ready.problem,
            institution=ready.a.institution,
            registered_by=ready.a.steward,
            revision=1,
            **description(f"extra-{i:02}.csv", collection_start=None, collection_end=None),
        )
        for i in range(12)
    )
    client.force_login(ready.a.steward)
    keys = [f"extra-{i:02}.csv" for i in reversed(range(12))] + ["north-hospital.csv"]
    url, seen, pages = reverse(PAGE), [], 0
    while url:
        page = text(client.get(url))
        pages += 1
        seen += [key for key in keys if f"site key {key}," in page]
        older = page.split('href="?datasets_before=')
        cursor = older[1].split("#")[0] if len(older) > 1 else ""
        url = reverse(PAGE) + "?datasets_before=" + cursor if cursor else ""
        assert pages == 1 or "Newest datasets" in page
    assert seen == keys  # newest first, each once
    assert pages == 3


def test_a_bad_cursor_is_ignored_with_a_note(client, ready):
    client.force_login(ready.a.admin)
    for url in (
        reverse(PAGE) + "?datasets_before=abc",
        reverse("my-institution-dataset-runs", args=[dataset_of(ready, ready.a).pk]) + "?before=-1",
    ):
        response = client.get(url)
        assert response.status_code == 200
        assert "That page link is not valid" in text(response)
