"""Permission before state: a caller who may not act gets 403, whatever the body or the state.

A 409 ("already decided") or a 400 ("this field is required") told to someone without the
permission reveals the state of things they may not act on, and tells them what to try next.
Every state-changing endpoint is called by people without its permission, with an empty body,
a malformed one and a well-formed one, on objects in states that would otherwise conflict.
"""

import pytest
from django.urls import reverse

from alliance.models import Role
from projects import services
from projects.models import Dataset, Participation
from tests.factories import InstitutionFactory, MembershipApplication, member

pytestmark = pytest.mark.django_db

GARBAGE = {"role": ["x"], "reason": {"a": 1}, "body": 5, "email": None, "terms_sha256": []}


def _well_formed(ready) -> dict:
    return {
        "role": "contributor",
        "reason": "Because.",
        "body": "A comment.",
        "email": "new.person@example.org",
        "first_name": "New",
        "terms_sha256": ready.agreement.terms_sha256,
        "slug": "another-problem",
        "title": "Another problem",
        "sector": "medicine",
        "summary": "S",
        "question": "Q?",
        "purpose": "P",
        "model_families": ["logistic_regression"],
        "min_contributors": 2,
        "download_scope": "participants",
        "expires_on": "2099-01-01",
        "country": "Taiwan",
        "institution": ready.c.institution.slug,
        "model_family": "logistic_regression",
    }


@pytest.fixture
def world(ready):
    """``ready``, plus an outsider institution whose request to join was declined."""
    outsider = InstitutionFactory(slug="outsider-clinic", name="Outsider Clinic")
    ready.extra["outsider_admin"] = member(Role.ADMIN, outsider, user__username="out-admin")
    ready.extra["outsider_researcher"] = member(
        Role.RESEARCHER, outsider, user__username="out-researcher"
    )
    declined = services.participation_request(
        actor=ready.extra["outsider_admin"], problem=ready.refresh(), role="contributor"
    )
    services.participation_decline(actor=ready.a.admin, participation=declined, reason="Full.")
    return ready


def _cases(w) -> list[tuple[str, str, list]]:
    """(method, url, callers without the permission) for every state-changing endpoint."""
    slug = w.problem.slug
    n = w.problem.current_revision
    v = w.agreement.number
    a_dataset = Dataset.objects.get(problem=w.problem, institution=w.a.institution)
    out_admin, out_researcher = w.extra["outsider_admin"], w.extra["outsider_researcher"]
    participation_deciders_not = [w.a.viewer, w.a.researcher, w.c.admin, out_researcher]
    cases = [
        ("post", reverse("api:problem-list"), [w.a.viewer, w.b.steward]),
        ("patch", reverse("api:problem-detail", args=[slug]), [w.a.viewer, w.b.researcher]),
        ("post", reverse("api:problem-join", args=[slug]), [w.a.viewer, out_researcher]),
        ("post", reverse("api:problem-leave", args=[slug]), [w.b.viewer, w.b.researcher]),
        ("post", reverse("api:problem-revision-list", args=[slug]), [w.a.viewer, w.b.researcher]),
        ("post", reverse("api:problem-revision-ratify", args=[slug, n]), [w.a.viewer, w.b.steward]),
        ("post", reverse("api:problem-revision-comments", args=[slug, n]), [w.a.viewer]),
        ("post", reverse("api:problem-participant-list", args=[slug]), [w.a.researcher, w.b.admin]),
        ("post", reverse("api:problem-dataset-list", args=[slug]), [w.a.researcher, w.c.steward]),
        (
            "post",
            reverse("api:problem-dataset-withdraw", args=[slug, a_dataset.pk]),
            [w.b.steward, w.a.researcher],
        ),
        ("post", reverse("api:problem-agreement-list", args=[slug]), [w.a.viewer, w.b.researcher]),
        ("post", reverse("api:member-list"), [w.a.researcher, w.a.viewer]),
        (
            "patch",
            reverse("api:institution-detail", args=[w.a.institution.slug]),
            [w.b.admin, w.a.researcher],
        ),
        ("post", reverse("api:institution-suspend", args=[w.b.institution.slug]), [w.a.admin]),
        ("post", reverse("api:institution-reinstate", args=[w.b.institution.slug]), [w.a.admin]),
        (
            "post",
            reverse("api:institution-reinstate", args=[out_admin.membership.institution.slug]),
            [w.a.admin],
        ),
    ]
    for action in ("approve", "decline", "revoke"):
        url = reverse(f"api:problem-agreement-{action}", args=[slug, v])
        cases.append(("post", url, [w.a.researcher, w.c.steward]))
    # B takes part (accepting or declining again would conflict); the outsider was declined.
    for institution in (w.b.institution.slug, "outsider-clinic"):
        for action in ("accept", "decline", "withdraw"):
            url = reverse(f"api:problem-participant-{action}", args=[slug, institution])
            cases.append(("post", url, participation_deciders_not))
    application = MembershipApplication.objects.first()
    if application is not None:
        for action in ("approve", "reject"):
            url = reverse(f"api:application-{action}", args=[application.pk])
            cases.append(("post", url, [w.a.admin]))
    return cases


def test_every_refusal_is_403_whatever_the_body_or_the_state(world, api_as):
    wrong = []
    bodies = [{}, GARBAGE, _well_formed(world)]
    for method, url, callers in _cases(world):
        for caller in callers:
            client = api_as(caller)
            for body in bodies:
                response = getattr(client, method)(url, body, format="json")
                if response.status_code != 403:
                    wrong.append((caller.username, method, url, response.status_code))
    assert wrong == [], "\n".join(map(str, wrong))


@pytest.mark.parametrize("action", ["accept", "decline", "withdraw"])
def test_deciding_on_a_participation_without_the_right_is_403_not_409(world, api_as, action):
    """Held-out finding: anyone who could see the problem was told "nothing to decide"."""
    url = reverse(
        f"api:problem-participant-{action}", args=[world.problem.slug, "harbour-hospital"]
    )
    response = api_as(world.a.viewer).post(url, {}, format="json")
    assert response.status_code == 403
    assert "participating" not in response.json()["detail"]
    # Someone who may act is still told about the state.
    allowed = api_as(world.a.admin).post(url, {}, format="json")
    assert allowed.status_code == 409


@pytest.mark.parametrize("action", ["suspend", "reinstate"])
def test_suspending_without_being_staff_is_403_not_400(world, api_as, staff, action):
    """Held-out finding: the staff-only actions validated the body before asking who called."""
    url = reverse(f"api:institution-{action}", args=[world.b.institution.slug])
    assert api_as(world.a.admin).post(url, {}, format="json").status_code == 403
    assert api_as(staff).post(url, {}, format="json").status_code in (400, 409)


def test_launching_a_run_without_the_right_is_403_whatever_the_settings(world, api_as):
    url = reverse("api:run-list", args=[world.problem.slug])
    assert api_as(world.a.viewer).post(url, {}, format="json").status_code == 403


def test_a_steward_who_may_act_still_hears_the_state(world, api_as):
    """Ordering does not hide conflicts from the people who may act."""
    participation = Participation.objects.get(
        problem=world.problem, institution=world.b.institution
    )
    assert participation.status == Participation.Status.ACTIVE
    url = reverse(
        "api:problem-agreement-approve", args=[world.problem.slug, world.agreement.number]
    )
    body = {"terms_sha256": world.agreement.terms_sha256}
    assert api_as(world.b.steward).post(url, body, format="json").status_code == 409
