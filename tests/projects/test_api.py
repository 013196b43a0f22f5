"""The projects API under /api/v1/: the governance story, permissions, diffs, policy, inbox."""

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from alliance.models import AuditEvent, Institution
from projects import selectors, services
from projects.diff import definition_diff, revision_diff
from projects.federation import signing
from projects.models import AgreementVersion, Dataset, Participation, Problem, ProblemRevision
from projects.models.agreement import terms_sha256
from projects.schema import describe_csv
from tests.factories import InstitutionFactory
from tests.projects.scenario import (
    DEFINITION,
    FEATURES,
    Scenario,
    Site,
    description,
    make_site,
    terms,
)

pytestmark = pytest.mark.django_db

SLUG = "tumour-malignancy"


def url(name: str, *args: Any) -> str:
    return reverse(f"api:{name}", args=args)


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))


def count(action: str) -> int:
    return AuditEvent.objects.filter(action=action).count()


def write_csv(path: Path, rows: int = 40) -> Path:
    """A biopsy CSV that fits ``FEATURES``: ages 20-79, sizes 1-40 mm, a few grades missing."""
    lines = ["age,size,grade,malignant"]
    for i in range(rows):
        grade = "" if i % 10 == 0 else str(1 + i % 3)
        lines.append(f"{20 + i % 60},{1 + i % 40}.5,{grade},{i % 2}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def proposal(**overrides: Any) -> dict[str, Any]:
    return {
        "slug": SLUG,
        "title": "Tumour malignancy from biopsy features",
        "sector": "medicine",
        "summary": "Predict whether a biopsied tumour is malignant.",
        "question": "Is this tumour malignant?",
        **copy.deepcopy(DEFINITION),
        **overrides,
    }


def api_terms(**overrides: Any) -> dict[str, Any]:
    """The scenario's terms as a JSON body (the test client writes the date as YYYY-MM-DD)."""
    return terms(**overrides)


# --- The whole story, through the API alone -----------------------------------------------------


def test_the_governance_story_through_the_api(scenario, api_as, tmp_path):
    a, b, c = scenario.a, scenario.b, scenario.c

    response = api_as(a.researcher).post(
        url("problem-list"), proposal(visibility="invitation"), format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["slug"] == SLUG
    assert body["stage"] == "proposed"
    assert body["visibility"] == "invitation"
    assert body["definition"]["number"] == 1
    assert [f["name"] for f in body["definition"]["features"]] == [f["name"] for f in FEATURES]
    assert body["participants"]["contributors"] == [a.institution.slug]
    assert body["effective_agreement"] is None

    # The proposer's admin invites; each invitee's admin accepts.
    for site, role in ((b, "contributor"), (c, "validator")):
        assert api_as(site.admin).get(url("problem-detail", SLUG)).status_code == 404
        response = api_as(a.admin).post(
            url("problem-participant-list", SLUG),
            {"institution": site.institution.slug, "role": role, "message": "Join us."},
            format="json",
        )
        assert response.status_code == 201, response.content
        assert response.json()["status"] == "invited"
        response = api_as(site.admin).post(
            url("problem-participant-accept", SLUG, site.institution.slug)
        )
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "active"
    participants = api_as(c.viewer).get(url("problem-participant-list", SLUG)).json()
    assert {(p["institution"], p["role"], p["status"]) for p in participants["results"]} == {
        (a.institution.slug, "contributor", "active"),
        (b.institution.slug, "contributor", "active"),
        (c.institution.slug, "validator", "active"),
    }

    # Every contributor and validator ratifies revision 1.
    for site in (a, b, c):
        response = api_as(site.researcher).post(url("problem-revision-ratify", SLUG, 1))
        assert response.status_code == 200, response.content
    revision = response.json()
    assert revision["is_ratified"] is True
    assert {r["institution"] for r in revision["ratifications"]} == {
        a.institution.slug,
        b.institution.slug,
        c.institution.slug,
    }
    assert api_as(a.viewer).get(url("problem-detail", SLUG)).json()["stage"] == "ratified"

    # Each steward registers what describe_dataset printed at its site, byte for byte.
    described = describe_csv(write_csv(tmp_path / "north.csv"), label="malignant")
    response = api_as(a.steward).post(
        url("problem-dataset-list", SLUG), json.dumps(described), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["sha256"] == described["sha256"]
    assert response.json()["fits_current_revision"] is True
    printed = StringIO()
    call_command(
        "describe_dataset", str(write_csv(tmp_path / "harbour.csv", rows=55)), "--label",
        "malignant", stdout=printed,
    )  # fmt: skip
    response = api_as(b.steward).post(
        url("problem-dataset-list", SLUG), printed.getvalue(), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["row_count"] == 55
    assert Dataset.objects.filter(problem__slug=SLUG).count() == 2

    # Each contributor's admin registers the key its site worker signs with.
    for site in (a, b):
        public = signing.public_to_text(signing.generate())
        response = api_as(site.admin).post(
            url("site-key-list"), {"public_key": public, "label": "fl-worker-01"}, format="json"
        )
        assert response.status_code == 201, response.content
        assert response.json()["fingerprint"] == signing.fingerprint(public)

    # The proposer drafts the agreement; both contributors' stewards approve that exact text.
    response = api_as(a.researcher).post(
        url("problem-agreement-list", SLUG), {**api_terms(), "change_note": ""}, format="json"
    )
    assert response.status_code == 201, response.content
    version = response.json()
    assert version["number"] == 1
    assert version["status"] == "pending"
    assert sorted(version["awaiting"]) == sorted([a.institution.slug, b.institution.slug])
    assert terms_sha256(version["canonical_terms"]) == version["terms_sha256"]
    for site in (a, b):
        response = api_as(site.steward).post(
            url("problem-agreement-approve", SLUG, 1),
            {"terms_sha256": version["terms_sha256"]},
            format="json",
        )
        assert response.status_code == 200, response.content
    version = response.json()
    assert version["status"] == "effective"
    assert version["awaiting"] == []
    assert {row["institution"]: row["decision"] for row in version["approvals"]} == {
        a.institution.slug: "approved",
        b.institution.slug: "approved",
    }
    detail = api_as(c.researcher).get(url("problem-detail", SLUG)).json()
    assert detail["stage"] == "data_ready"
    assert detail["effective_agreement"] == 1
    assert detail["pending_agreement"] is None

    # A logistic regression over both contributors may run.
    response = api_as(a.researcher).post(
        url("problem-policy-check", SLUG),
        {"model_family": "logistic_regression", "min_contributors": 2},
        format="json",
    )
    assert response.status_code == 200, response.content
    decision = response.json()
    assert decision == {
        "allowed": True,
        "reasons": [],
        "agreement_version": 1,
        "contributors": decision["contributors"],
        "excluded": [],
    }
    assert {(x["institution"], x["sha256"]) for x in decision["contributors"]} == {
        (a.institution.slug, described["sha256"]),
        (b.institution.slug, json.loads(printed.getvalue())["sha256"]),
    }

    recorded = actions()
    for action in (
        "problem.proposed",
        "participation.invited",
        "participation.accepted",
        "problem.revision_ratified",
        "problem.ratified",
        "dataset.registered",
        "agreement.drafted",
        "agreement.approved",
        "agreement.effective",
        "problem.stage_changed",
    ):
        assert action in recorded, action
    assert recorded.count("participation.accepted") == 2
    assert recorded.count("problem.revision_ratified") == 3
    assert recorded.count("dataset.registered") == 2


# --- Permission matrices ------------------------------------------------------------------------


@pytest.fixture
def world(scenario) -> Scenario:
    """The scenario plus two more institutions: Delta Bank proposes a problem of its own (so its
    people hold every role, on another problem), and Echo Museum takes part in nothing."""
    scenario.extra["d"] = make_site("delta-bank", "Delta Bank")
    scenario.extra["e"] = make_site("echo-museum", "Echo Museum")
    services.problem_propose(
        actor=scenario.extra["d"].researcher,
        slug="credit-risk",
        title="Credit risk",
        sector="finance",
        summary="Default within a year.",
        question="Will this loan default?",
        **DEFINITION,
    )
    return scenario


@dataclass
class Case:
    """One state-changing endpoint, prepared so that ``authorised`` may call it."""

    method: str
    path: str
    body: dict[str, Any]
    authorised: Any
    roleless: Any  # a member of an institution concerned, without the role the act needs
    role: str  # the role outsiders try it with
    action: str  # the audit event of the act
    ok: int
    outsider_on_listed: int = 403


def _update(sc: Scenario) -> Case:
    return Case(
        "patch", url("problem-detail", SLUG), {"summary": "Sharper."},
        sc.a.researcher, sc.a.steward, "researcher", "problem.updated", 200,
    )  # fmt: skip


def _revise(sc: Scenario) -> Case:
    body = {**copy.deepcopy(DEFINITION), "threshold": 0.95, "change_note": "Higher bar."}
    return Case(
        "post", url("problem-revision-list", SLUG), body,
        sc.a.researcher, sc.a.viewer, "researcher", "problem.revised", 201,
    )  # fmt: skip


def _ratify(sc: Scenario) -> Case:
    return Case(
        "post", url("problem-revision-ratify", SLUG, 1), {},
        sc.b.researcher, sc.b.steward, "researcher", "problem.revision_ratified", 200,
    )  # fmt: skip


def _comment(sc: Scenario) -> Case:
    return Case(
        "post", url("problem-revision-comments", SLUG, 1), {"body": "Why 0.9 and not 0.95?"},
        sc.b.steward, sc.b.viewer, "researcher", "problem.commented", 201,
    )  # fmt: skip


def _invite(sc: Scenario) -> Case:
    InstitutionFactory(slug="fox-clinic", name="Fox Clinic")
    return Case(
        "post", url("problem-participant-list", SLUG),
        {"institution": "fox-clinic", "role": "observer"},
        sc.a.admin, sc.a.researcher, "admin", "participation.invited", 201,
    )  # fmt: skip


def _invited(sc: Scenario) -> Site:
    fox = make_site("fox-clinic", "Fox Clinic")
    services.participation_invite(
        actor=sc.a.admin, problem=sc.refresh(), institution=fox.institution, role="observer"
    )
    return fox


def _accept(sc: Scenario) -> Case:
    fox = _invited(sc)
    return Case(
        "post", url("problem-participant-accept", SLUG, "fox-clinic"), {},
        fox.admin, fox.researcher, "admin", "participation.accepted", 200,
    )  # fmt: skip


def _decline_invitation(sc: Scenario) -> Case:
    fox = _invited(sc)
    return Case(
        "post", url("problem-participant-decline", SLUG, "fox-clinic"), {"reason": "No staff."},
        fox.admin, fox.researcher, "admin", "participation.declined", 200,
    )  # fmt: skip


def _decline_request(sc: Scenario) -> Case:
    """Echo Museum asked to join while the problem was listed (it may have been closed since)."""
    e, visibility = sc.extra["e"], sc.extra["visibility"]
    services.problem_update(actor=sc.a.admin, problem=sc.refresh(), visibility="listed")
    services.participation_request(actor=e.admin, problem=sc.refresh(), role="observer")
    services.problem_update(actor=sc.a.admin, problem=sc.refresh(), visibility=visibility)
    return Case(
        "post", url("problem-participant-decline", SLUG, "echo-museum"), {"reason": "Full."},
        sc.a.admin, sc.a.researcher, "admin", "participation.declined", 200,
    )  # fmt: skip


def _leave(sc: Scenario) -> Case:
    # Someone not taking part cannot leave: a clear conflict rather than a permission denial.
    return Case(
        "post", url("problem-leave", SLUG), {"reason": "Merger."},
        sc.b.admin, sc.b.researcher, "admin", "participation.left", 200, outsider_on_listed=409,
    )  # fmt: skip


def _register(sc: Scenario) -> Case:
    sc.ratify()
    return Case(
        "post", url("problem-dataset-list", SLUG), description("north.csv"),
        sc.a.steward, sc.a.researcher, "steward", "dataset.registered", 201,
    )  # fmt: skip


def _withdraw(sc: Scenario) -> Case:
    sc.ratify()
    sc.register()
    dataset = Dataset.objects.get(institution=sc.a.institution)
    return Case(
        "post", url("problem-dataset-withdraw", SLUG, dataset.pk), {"reason": "Re-extracting."},
        sc.a.steward, sc.a.researcher, "steward", "dataset.withdrawn", 200,
    )  # fmt: skip


def _draft(sc: Scenario) -> Case:
    sc.ratify()
    return Case(
        "post", url("problem-agreement-list", SLUG), api_terms(),
        sc.a.researcher, sc.a.steward, "researcher", "agreement.drafted", 201,
    )  # fmt: skip


def _approve(sc: Scenario) -> Case:
    sc.ratify()
    sc.draft()
    return Case(
        "post", url("problem-agreement-approve", SLUG, 1),
        {"terms_sha256": sc.agreement.terms_sha256},
        sc.b.steward, sc.b.researcher, "steward", "agreement.approved", 200,
    )  # fmt: skip


def _decline_agreement(sc: Scenario) -> Case:
    sc.ratify()
    sc.draft()
    return Case(
        "post", url("problem-agreement-decline", SLUG, 1), {"reason": "Purpose too broad."},
        sc.b.steward, sc.b.researcher, "steward", "agreement.declined", 200,
    )  # fmt: skip


def _revoke(sc: Scenario) -> Case:
    sc.ratify()
    sc.register()
    sc.draft()
    sc.approve()
    return Case(
        "post", url("problem-agreement-revoke", SLUG, 1), {"reason": "Consent withdrawn."},
        sc.b.steward, sc.b.researcher, "steward", "agreement.revoked", 200,
    )  # fmt: skip


ENDPOINTS: dict[str, Callable[[Scenario], Case]] = {
    "update": _update,
    "revise": _revise,
    "ratify": _ratify,
    "comment": _comment,
    "invite": _invite,
    "accept-invitation": _accept,
    "decline-invitation": _decline_invitation,
    "decline-request": _decline_request,
    "leave": _leave,
    "register-dataset": _register,
    "withdraw-dataset": _withdraw,
    "draft-agreement": _draft,
    "approve-agreement": _approve,
    "decline-agreement": _decline_agreement,
    "revoke-approval": _revoke,
}


@pytest.mark.parametrize("visibility", ["listed", "invitation"])
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_permission_matrix(world, api_as, endpoint, visibility):
    world.extra["visibility"] = visibility
    world.propose(visibility=visibility)
    world.join()
    case = ENDPOINTS[endpoint](world)
    d, e = world.extra["d"], world.extra["e"]
    invisible = visibility == "invitation"
    attempts = [
        ("anonymous", None, 401),
        ("outsider", getattr(e, case.role), 404 if invisible else case.outsider_on_listed),
        (
            "role on another problem",
            getattr(d, case.role),
            404 if invisible else case.outsider_on_listed,
        ),
        ("member without the role", case.roleless, 403),
    ]
    if endpoint == "decline-request":
        # The requester itself may not decide on its own request.
        attempts[1] = ("requester", e.admin, 404 if invisible else 403)
    before = count(case.action)
    for who, actor, expected in attempts:
        response = getattr(api_as(actor), case.method)(case.path, case.body, format="json")
        assert response.status_code == expected, (who, response.content)
        assert "detail" in response.json(), who
        assert count(case.action) == before, who
    response = getattr(api_as(case.authorised), case.method)(case.path, case.body, format="json")
    assert response.status_code == case.ok, response.content
    assert count(case.action) == before + 1


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("anonymous", 401),
        ("staff", 403),
        ("viewer", 403),
        ("steward", 403),
        ("researcher", 201),
        ("admin", 201),
    ],
)
def test_propose_permission_matrix(scenario, api_as, staff, who, expected):
    actor = {"anonymous": None, "staff": staff}[who] if who in ("anonymous", "staff") else None
    actor = actor or (None if who == "anonymous" else getattr(scenario.a, who))
    response = api_as(actor).post(url("problem-list"), proposal(), format="json")
    assert response.status_code == expected, response.content
    assert Problem.objects.filter(slug=SLUG).exists() == (expected == 201)
    assert count("problem.proposed") == (1 if expected == 201 else 0)


def test_proposal_errors_are_named_and_a_taken_slug_is_a_conflict(scenario, api_as):
    client = api_as(scenario.a.researcher)
    bad_features = [{"name": "age", "type": "text"}]
    response = client.post(url("problem-list"), proposal(features=bad_features), format="json")
    assert response.status_code == 400
    assert "features" in response.json()
    response = client.post(url("problem-list"), proposal(features="age,size"), format="json")
    assert response.status_code == 400
    assert "JSON list" in response.json()["features"][0]
    response = client.post(url("problem-list"), proposal(metric="rmse"), format="json")
    assert response.status_code == 400
    assert "metric" in response.json()
    assert client.post(url("problem-list"), proposal(), format="json").status_code == 201
    again = client.post(url("problem-list"), proposal(), format="json")
    assert again.status_code == 409
    assert SLUG in again.json()["detail"]


@pytest.mark.parametrize(
    ("who", "visibility", "expected"),
    [
        ("anonymous", "listed", 401),
        ("outsider admin", "listed", 201),
        ("outsider admin", "invitation", 404),
        ("outsider researcher", "listed", 403),
        ("participant admin", "listed", 409),
    ],
)
def test_join_permission_matrix(world, api_as, who, visibility, expected):
    world.propose(visibility=visibility)
    world.join()
    e = world.extra["e"]
    actor = {
        "anonymous": None,
        "outsider admin": e.admin,
        "outsider researcher": e.researcher,
        "participant admin": world.b.admin,
    }[who]
    response = api_as(actor).post(
        url("problem-join", SLUG), {"role": "observer", "message": "We can help."}, format="json"
    )
    assert response.status_code == expected, response.content
    assert count("participation.requested") == (1 if expected == 201 else 0)
    if expected == 201:
        assert response.json()["status"] == "requested"
        accepted = api_as(world.a.admin).post(
            url("problem-participant-accept", SLUG, e.institution.slug)
        )
        assert accepted.status_code == 200
        assert accepted.json()["status"] == "active"


def test_invisible_and_missing_problems_answer_the_same_404(scenario, api_as, staff):
    scenario.propose(visibility="invitation")
    outsider = make_site("echo-museum", "Echo Museum").researcher
    for path in (
        url("problem-detail", SLUG),
        url("problem-revision-list", SLUG),
        url("problem-participant-list", SLUG),
        url("problem-dataset-list", SLUG),
        url("problem-agreement-list", SLUG),
        url("problem-diff", SLUG),
    ):
        hidden = api_as(outsider).get(path)
        missing = api_as(outsider).get(path.replace(SLUG, "no-such-problem"))
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json() == missing.json() == {"detail": "No such problem."}
        assert api_as(staff).get(path).status_code == 200
    listed = api_as(outsider).get(url("problem-list")).json()
    assert listed["count"] == 0
    assert api_as(staff).get(url("problem-list")).json()["count"] == 1


def test_problem_list_filters_by_stage_and_sector(ready, api_as):
    client = api_as(ready.b.viewer)
    assert client.get(url("problem-list")).json()["count"] == 1
    assert client.get(url("problem-list") + "?stage=data_ready").json()["count"] == 1
    assert client.get(url("problem-list") + "?stage=proposed").json()["count"] == 0
    assert client.get(url("problem-list") + "?sector=medicine").json()["count"] == 1
    assert client.get(url("problem-list") + "?sector=finance").json()["count"] == 0
    response = client.get(url("problem-list") + "?stage=dreaming")
    assert response.status_code == 400
    assert "stage" in response.json()
    assert client.get(url("problem-list")).status_code == 200
    assert api_as(None).get(url("problem-list")).status_code == 401


def test_patch_edits_descriptions_and_refuses_definition_fields(scenario, api_as):
    scenario.propose()
    client = api_as(scenario.a.researcher)
    response = client.patch(url("problem-detail", SLUG), {"threshold": 0.5}, format="json")
    assert response.status_code == 400
    assert "threshold" in response.json()["non_field_errors"][0]
    response = client.patch(
        url("problem-detail", SLUG), {"title": "Malignancy", "visibility": "invitation"}
    )
    assert response.status_code == 200, response.content
    assert response.json()["title"] == "Malignancy"
    assert response.json()["visibility"] == "invitation"
    (event,) = AuditEvent.objects.filter(action="problem.updated")
    assert set(event.payload["changes"]) == {"title", "visibility"}


# --- Revisions, the diff, comments --------------------------------------------------------------


def test_a_revision_needs_ratifying_again_and_the_diff_says_what_changed(ready, api_as):
    features = copy.deepcopy(FEATURES)
    features[0]["max"] = 110  # age bound tightened
    features[1]["unit"] = "cm"
    del features[2]  # grade dropped
    features.append({"name": "density", "type": "numeric", "min": 0, "max": 1, "required": False})
    client = api_as(ready.a.researcher)
    response = client.post(
        url("problem-revision-list", SLUG),
        {**DEFINITION, "features": features, "threshold": 0.95, "change_note": "Stricter."},
        format="json",
    )
    assert response.status_code == 201, response.content
    revision = response.json()
    assert revision["number"] == 2
    assert revision["is_current"] is True
    assert revision["is_ratified"] is False
    assert revision["ratifications"] == []
    assert count("problem.revised") == 1
    detail = client.get(url("problem-detail", SLUG)).json()
    assert detail["stage"] == "proposed"
    assert detail["current_revision"] == 2
    assert sorted(detail["participants"]["awaiting_ratification"]) == sorted(
        [ready.a.institution.slug, ready.b.institution.slug, ready.c.institution.slug]
    )

    diff = api_as(ready.c.viewer).get(url("problem-diff", SLUG)).json()
    assert diff["from"] == 1
    assert diff["to"] == 2
    assert diff["changed"] is True
    assert diff["change_note"] == "Stricter."
    assert diff["fields"] == [
        {"field": "threshold", "label": "acceptance threshold", "old": 0.9, "new": 0.95}
    ]
    assert [c["name"] for c in diff["columns"]["added"]] == ["density"]
    assert [c["name"] for c in diff["columns"]["removed"]] == ["grade"]
    changed = {c["name"]: c["changes"] for c in diff["columns"]["changed"]}
    assert changed["age"] == [{"key": "max", "label": "maximum", "old": 120.0, "new": 110.0}]
    assert changed["size"] == [{"key": "unit", "label": "unit", "old": "mm", "new": "cm"}]
    assert diff["unchanged_columns"] == ["malignant"]
    assert diff["columns"]["reordered"] is False
    backwards = client.get(url("problem-diff", SLUG) + "?from=2&to=1").json()
    assert [c["name"] for c in backwards["columns"]["added"]] == ["grade"]
    same = client.get(url("problem-diff", SLUG) + "?from=1&to=1").json()
    assert same["changed"] is False
    response = client.get(url("problem-diff", SLUG) + "?from=7&to=x")
    assert response.status_code == 400
    assert set(response.json()) == {"from", "to"}

    # Ratifying the old revision is refused; the new one is ratified by all three again.
    stale = api_as(ready.b.researcher).post(url("problem-revision-ratify", SLUG, 1))
    assert stale.status_code == 409
    for site in (ready.a, ready.b, ready.c):
        response = api_as(site.researcher).post(url("problem-revision-ratify", SLUG, 2))
        assert response.status_code == 200, response.content
    assert response.json()["is_ratified"] is True
    listed = client.get(url("problem-revision-list", SLUG)).json()
    assert [(r["number"], r["is_current"]) for r in listed["results"]] == [(1, False), (2, True)]
    assert client.get(url("problem-revision-detail", SLUG, 3)).status_code == 404


def test_revision_diff_reports_reordered_columns_and_nothing_else():
    old = {**DEFINITION, "features": copy.deepcopy(FEATURES)}
    new = {**DEFINITION, "features": list(reversed(copy.deepcopy(FEATURES)))}
    diff = definition_diff(old, new)
    assert diff["changed"] is True
    assert diff["columns"] == {"added": [], "removed": [], "changed": [], "reordered": True}
    assert diff["fields"] == []
    assert sorted(diff["unchanged_columns"]) == sorted(f["name"] for f in FEATURES)


def test_revision_diff_of_model_revisions_carries_their_numbers(scenario):
    problem = scenario.propose()
    services.problem_revise(
        actor=scenario.a.researcher, problem=problem, **{**DEFINITION, "metric": "accuracy"}
    )
    one, two = ProblemRevision.objects.filter(problem=problem).order_by("number")
    diff = revision_diff(one, two)
    assert (diff["from"], diff["to"]) == (1, 2)
    assert diff["fields"] == [
        {"field": "metric", "label": "evaluation metric", "old": "roc_auc", "new": "accuracy"}
    ]


def test_participants_discuss_a_revision(scenario, api_as):
    scenario.propose()
    scenario.join()
    path = url("problem-revision-comments", SLUG, 1)
    response = api_as(scenario.c.researcher).post(path, {"body": "Is 0.9 enough?"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["institution"] == scenario.c.institution.slug
    assert api_as(scenario.a.admin).post(path, {"body": "  "}, format="json").status_code == 400
    comments = api_as(scenario.b.viewer).get(path).json()
    assert [c["body"] for c in comments["results"]] == ["Is 0.9 enough?"]
    assert comments["results"][0]["author"] == scenario.c.researcher.username
    missing = url("problem-revision-comments", SLUG, 9)
    assert api_as(scenario.b.viewer).get(missing).status_code == 404
    assert count("problem.commented") == 1


# --- Datasets -----------------------------------------------------------------------------------


def test_dataset_registration_names_every_mismatch_and_stores_nothing(scenario, api_as):
    scenario.propose()
    scenario.join()
    scenario.ratify()
    columns = description()["columns"]
    columns = [c for c in columns if c["name"] != "size"]  # a required column missing
    columns[0] = {**columns[0], "max": 130.0}  # age above the declared maximum
    body = description(columns=columns)
    response = api_as(scenario.a.steward).post(url("problem-dataset-list", SLUG), body, "json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert len(errors) == 2
    assert any("“size”" in message for message in errors)
    assert any("“age”" in message and "130" in message for message in errors)
    assert not Dataset.objects.exists()
    assert count("dataset.registered") == 0


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [
        ("[1, 2]", "application/json"),
        ('"describe"', "application/json"),
        ("name=x&row_count=3", "application/x-www-form-urlencoded"),
    ],
)
def test_a_dataset_body_that_is_not_a_json_object_is_a_clear_400(
    scenario, api_as, payload, content_type
):
    scenario.propose()
    scenario.join()
    scenario.ratify()
    response = api_as(scenario.a.steward).post(
        url("problem-dataset-list", SLUG), payload, content_type=content_type
    )
    assert response.status_code == 400
    assert "JSON object" in response.json()["detail"]


def test_a_dataset_description_with_foreign_keys_is_refused(scenario, api_as):
    scenario.propose()
    scenario.join()
    scenario.ratify()
    client = api_as(scenario.a.steward)
    for extra in ({"problem": "other"}, {"actor": "me"}, {"rows": []}):
        response = client.post(url("problem-dataset-list", SLUG), description(**extra), "json")
        assert response.status_code == 400
        assert "Unknown keys" in response.json()["detail"]
    assert not Dataset.objects.exists()
    broken = client.post(url("problem-dataset-list", SLUG), "{", content_type="application/json")
    assert broken.status_code == 400


def test_datasets_are_listed_and_withdrawn_by_their_own_steward(ready, api_as):
    listed = api_as(ready.c.viewer).get(url("problem-dataset-list", SLUG)).json()
    assert listed["count"] == 2
    first = listed["results"][0]
    assert set(first) >= {"institution", "site_key", "sha256", "columns", "revision", "status"}
    own = Dataset.objects.get(institution=ready.b.institution)
    path = url("problem-dataset-withdraw", SLUG, own.pk)
    assert api_as(ready.a.steward).post(path, {}, format="json").status_code == 403
    response = api_as(ready.b.steward).post(path, {"reason": "Errors found."}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "withdrawn"
    assert api_as(ready.b.steward).post(path, {}, format="json").status_code == 409
    assert api_as(ready.b.steward).get(url("problem-dataset-detail", SLUG, 999)).status_code == 404
    assert api_as(ready.a.viewer).get(url("problem-detail", SLUG)).json()["stage"] == "ratified"
    assert count("dataset.withdrawn") == 1


# --- Agreements ---------------------------------------------------------------------------------


def test_a_stale_terms_hash_is_refused(ready, api_as):
    old_hash = ready.agreement.terms_sha256
    response = api_as(ready.a.researcher).post(
        url("problem-agreement-list", SLUG),
        {**api_terms(min_contributors=3), "change_note": "Three sites per round."},
        format="json",
    )
    assert response.status_code == 201, response.content
    amendment = response.json()
    assert amendment["number"] == 2
    assert amendment["status"] == "pending"
    assert count("agreement.amended") == 1
    path = url("problem-agreement-approve", SLUG, 2)
    response = api_as(ready.b.steward).post(path, {"terms_sha256": old_hash}, format="json")
    assert response.status_code == 400
    assert "changed since you read them" in response.json()["detail"]
    assert count("agreement.approved") == 2  # the two approvals of version 1 only
    version = api_as(ready.b.steward).get(url("problem-agreement-detail", SLUG, 2)).json()
    assert {row["decision"] for row in version["approvals"]} == {"awaiting"}
    response = api_as(ready.b.steward).post(
        path, {"terms_sha256": amendment["terms_sha256"]}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "pending"  # North Hospital has not approved yet
    versions = api_as(ready.c.viewer).get(url("problem-agreement-list", SLUG)).json()
    assert [(v["number"], v["status"]) for v in versions["results"]] == [
        (2, "pending"),
        (1, "effective"),
    ]
    assert versions["results"][1]["terms"]["min_contributors"] == 2


def test_decline_and_revoke_show_in_the_approvals_matrix(ready, api_as):
    response = api_as(ready.b.steward).post(
        url("problem-agreement-revoke", SLUG, 1), {"reason": "Consent withdrawn."}, format="json"
    )
    assert response.status_code == 200, response.content
    rows = {row["institution"]: row for row in response.json()["approvals"]}
    revoked = rows[ready.b.institution.slug]
    assert revoked["decision"] == "revoked"
    assert revoked["revoke_reason"] == "Consent withdrawn."
    assert revoked["revoked_by"] == ready.b.steward.username
    assert response.json()["awaiting"] == [ready.b.institution.slug]
    path = url("problem-agreement-revoke", SLUG, 1)
    empty = api_as(ready.a.steward).post(path, {}, format="json")
    assert empty.status_code == 400
    assert "reason" in empty.json()
    detail = api_as(ready.a.viewer).get(url("problem-detail", SLUG)).json()
    assert detail["stage"] == "ratified"
    assert count("agreement.revoked") == 1


def test_agreement_input_is_checked_before_the_service(scenario, api_as):
    scenario.propose()
    scenario.join()
    scenario.ratify()
    client = api_as(scenario.a.researcher)
    response = client.post(
        url("problem-agreement-list", SLUG),
        {**api_terms(), "model_families": ["random_forest"], "min_contributors": 1},
        format="json",
    )
    assert response.status_code == 400
    assert {"model_families", "min_contributors"} <= set(response.json())
    response = client.post(
        url("problem-agreement-list", SLUG),
        api_terms(expires_on="2001-01-01"),
        format="json",
    )
    assert response.status_code == 400
    assert "expires_on" in response.json()
    assert not AgreementVersion.objects.exists()
    missing = api_as(scenario.a.viewer).get(url("problem-agreement-detail", SLUG, 1))
    assert missing.status_code == 404


# --- The policy check ---------------------------------------------------------------------------


def test_policy_check_gives_every_reason_for_an_mlp_run(ready, api_as):
    services.agreement_revoke(actor=ready.b.steward, version=ready.agreement, reason="Audit.")
    response = api_as(ready.a.researcher).post(
        url("problem-policy-check", SLUG),
        {
            "model_family": "mlp",
            "min_contributors": 1,
            "agreement_version": 3,
            "contributors": [ready.a.institution.slug, ready.b.institution.slug, "nowhere"],
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    decision = response.json()
    assert decision["allowed"] is False
    assert decision["agreement_version"] == 1
    reasons = "\n".join(decision["reasons"])
    assert "does not permit the model family Multilayer perceptron" in reasons
    assert "requires at least 2 contributors per round; the run asks for 1" in reasons
    assert "launched under agreement version 3" in reasons
    assert "Harbour Hospital revoked its approval of agreement version 1" in reasons
    assert "nowhere is not a contributor of this problem" in reasons
    assert "Only 1 contributors may take part" in reasons
    assert [c["institution"] for c in decision["contributors"]] == [ready.a.institution.slug]
    assert decision["excluded"] == [
        {
            "institution": ready.b.institution.slug,
            "reason": "Harbour Hospital revoked its approval of agreement version 1.",
        }
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model_family": "random_forest", "min_contributors": 2}, "model_family"),
        ({"model_family": "mlp", "min_contributors": 0}, "min_contributors"),
        ({"model_family": "mlp", "dp_options": {"epsilon": -1}}, "dp_options"),
        (
            {"model_family": "mlp", "min_contributors": 2, "contributors": ["a", "a"]},
            "contributors",
        ),
    ],
)
def test_policy_check_input_is_validated(ready, api_as, body, field):
    response = api_as(ready.a.researcher).post(url("problem-policy-check", SLUG), body, "json")
    assert response.status_code == 400
    assert field in response.json()


def test_policy_check_needs_sight_of_the_problem(ready, api_as):
    ready.refresh()
    services.problem_update(actor=ready.a.admin, problem=ready.problem, visibility="invitation")
    outsider = make_site("echo-museum", "Echo Museum").researcher
    body = {"model_family": "logistic_regression", "min_contributors": 2}
    assert api_as(None).post(url("problem-policy-check", SLUG), body, "json").status_code == 401
    assert api_as(outsider).post(url("problem-policy-check", SLUG), body, "json").status_code == 404
    response = api_as(ready.c.viewer).post(url("problem-policy-check", SLUG), body, "json")
    assert response.json()["allowed"] is True


# --- Inbox --------------------------------------------------------------------------------------


def test_the_inbox_lists_pending_actions(scenario, api_as):
    scenario.propose()
    scenario.join()
    fox = make_site("fox-clinic", "Fox Clinic")
    services.participation_invite(
        actor=scenario.a.admin,
        problem=scenario.refresh(),
        institution=fox.institution,
        role="observer",
    )
    items = api_as(scenario.b.researcher).get(url("inbox")).json()
    assert items["count"] == 1
    (item,) = items["results"]
    assert item["kind"] == "ratify"
    assert item["problem"] == SLUG
    assert item["url"] == f"http://testserver/problems/{SLUG}/revisions/1/"
    assert "Ratify revision 1" in item["text"]
    invitation = api_as(fox.admin).get(url("inbox")).json()["results"]
    assert [i["kind"] for i in invitation] == ["invitation"]
    scenario.ratify()
    scenario.draft()
    kinds = {i["kind"] for i in api_as(scenario.b.steward).get(url("inbox")).json()["results"]}
    assert kinds == {"agreement", "dataset"}
    assert api_as(scenario.c.viewer).get(url("inbox")).json()["count"] == 0
    assert api_as(None).get(url("inbox")).status_code == 401


def test_the_api_root_links_problems_and_inbox(api):
    links = api.get(reverse("api:root")).json()
    assert links["problem-list"].endswith("/api/v1/problems/")
    assert links["inbox"].endswith("/api/v1/inbox/")


# --- Query counts -------------------------------------------------------------------------------


def _queries(client, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200
    return len(captured)


def _more_problems(scenario: Scenario, start: int, size: int) -> None:
    for i in range(start, start + size):
        services.problem_propose(
            actor=scenario.a.researcher,
            slug=f"problem-{i}",
            title=f"Problem {i}",
            sector="medicine",
            summary="More.",
            question="More?",
            visibility="invitation" if i % 2 else "listed",
            **DEFINITION,
        )


def _more_participants(scenario: Scenario, start: int, size: int) -> None:
    problem = scenario.refresh()
    for i in range(start, start + size):
        institution = InstitutionFactory(slug=f"member-{i}", name=f"Member {i}")
        services.participation_invite(
            actor=scenario.a.admin, problem=problem, institution=institution, role="observer"
        )


def test_problem_list_queries_do_not_grow(scenario, api_as, django_assert_num_queries):
    scenario.propose()
    scenario.join()
    client = api_as(scenario.b.researcher)
    _more_problems(scenario, 0, 2)
    small = _queries(client, url("problem-list"))
    _more_problems(scenario, 2, 20)
    assert client.get(url("problem-list")).json()["count"] == 12  # listed ones and its own
    with django_assert_num_queries(small):
        client.get(url("problem-list"))


def test_participant_list_queries_do_not_grow(scenario, api_as, django_assert_num_queries):
    scenario.propose()
    scenario.join()
    client = api_as(scenario.c.viewer)
    path = url("problem-participant-list", SLUG)
    _more_participants(scenario, 0, 2)
    small = _queries(client, path)
    _more_participants(scenario, 2, 20)
    assert client.get(path).json()["count"] == 25
    with django_assert_num_queries(small):
        client.get(path)


# --- The schema ---------------------------------------------------------------------------------


def test_the_openapi_schema_generates_without_warnings(tmp_path):
    target = tmp_path / "schema.yml"
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(target), stdout=StringIO()
    )
    text = target.read_text()
    for path in (
        "/api/v1/problems/{slug}/diff/",
        "/api/v1/problems/{slug}/policy-check/",
        "/api/v1/problems/{slug}/agreement/versions/{number}/approve/",
        "/api/v1/inbox/",
    ):
        assert path in text


def test_institution_slugs_in_invitations_must_be_admitted(scenario, api_as):
    scenario.propose()
    InstitutionFactory(slug="pending-lab", status=Institution.Status.APPLIED, admitted_at=None)
    response = api_as(scenario.a.admin).post(
        url("problem-participant-list", SLUG),
        {"institution": "pending-lab", "role": "contributor"},
        format="json",
    )
    assert response.status_code == 400
    assert "institution" in response.json()
    assert not Participation.objects.filter(institution__slug="pending-lab").exists()


def test_pages_and_api_read_one_approval_state(ready, api_as, client):
    """The agreement page, the problem page's grid and the API answer from one read model."""
    api_as(ready.b.steward).post(
        url("problem-agreement-revoke", SLUG, 1), {"reason": "Consent withdrawn."}, format="json"
    )
    api = api_as(ready.a.viewer).get(url("problem-agreement-detail", SLUG, 1)).json()
    from_api = {row["institution"]: row["decision"] for row in api["approvals"]}
    client.force_login(ready.a.viewer)
    page = client.get(reverse("agreement-detail", args=[SLUG, 1]))
    from_page = {row.institution.slug: row.state for row in page.context["matrix"]}
    problem_page = client.get(reverse("problem-detail", args=[SLUG]))
    grid = problem_page.context["dash"].grid
    column = [v.number for v in grid.versions].index(1)
    from_grid = {row.institution.slug: row.cells[column].state for row in grid.rows}
    assert from_api == from_page == from_grid
    assert from_api[ready.b.institution.slug] == "revoked"
    assert api["awaiting"] == [ready.b.institution.slug]
    assert page.context["matrix"] == selectors.approval_rows(
        AgreementVersion.objects.get(problem__slug=SLUG, number=1),
        selectors.problem_participations(Problem.objects.get(slug=SLUG)),
    )
