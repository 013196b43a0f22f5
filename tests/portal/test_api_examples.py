"""Every request example in the OpenAPI document works as written.

Each example is sent, unchanged, to its operation by the person the story gives it to, from
the same starting state (a savepoint rolled back after each), and must get the answer planned
for it: success, or for the one example that cannot know a hash in advance, the refusal its
operation documents.
"""

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from django.db import transaction
from django.urls import reverse

from alliance import services as alliance_services
from alliance.models import Role
from alliance.services import webhooks
from portal.api_examples import REQUEST_EXAMPLES, SEPSIS_FEATURES
from projects import services
from projects.federation.encoding import encode_params
from projects.models import Problem
from projects.services import runs, sites
from tests.factories import ApplicationFactory, InstitutionFactory, StaffFactory, member

pytestmark = pytest.mark.django_db

PASSWORD = "alliance-demo"  # the demo's, which the token example uses
SITE_KEY = "4YQkOfkY0YnyQ+sF2KEBqJTF2QpTBD+t0hac8rWSSmw="  # the worker's key before the example's
# A contributor without a site key is left out of runs: the other hospital registers one too.
HARBOUR_KEY = "aD7reSCXHvSBcUS1/TRIiA8vaFNnEXqZDomiejN1iGk="


@dataclass
class Story:
    people: dict[str, Any]
    ids: dict[str, Any]


def _description(site_key: str) -> dict[str, Any]:
    body = copy.deepcopy(REQUEST_EXAMPLES["problems_datasets_create"][1])
    return {**body, "site_key": site_key}


def _terms(**overrides: Any) -> dict[str, Any]:
    body = copy.deepcopy(REQUEST_EXAMPLES["problems_agreement_versions_create"][1])
    body.pop("change_note")
    return {**body, **overrides}


@pytest.fixture
def story(settings, tmp_path) -> Story:
    """The demo's institutions, a data-ready sepsis problem and what each example acts on."""
    slugs = {
        "north": "taipei-north-hospital",
        "harbour": "kaohsiung-harbour-hospital",
        "taichung": "taichung-medical-centre",
        "university": "national-data-science-university",
        "metro": "metro-taipei",
        "museum": "formosa-art-museum",
    }
    places = {key: InstitutionFactory(slug=slug, name=slug.title()) for key, slug in slugs.items()}
    people: dict[str, Any] = {"staff": StaffFactory(username="staff")}
    for key in ("north", "harbour", "taichung", "university", "metro"):
        for role, suffix in ((Role.ADMIN, "admin"), (Role.RESEARCHER, "researcher")):
            people[f"{key}-{suffix}"] = member(
                role, places[key], user__username=f"{slugs[key]}-{suffix}"
            )
    for key in ("north", "harbour"):
        people[f"{key}-steward"] = member(
            Role.DATA_STEWARD, places[key], user__username=f"{slugs[key]}-steward"
        )
    viewer = member(Role.VIEWER, places["north"], user__username="taipei-north-hospital-viewer")
    people["north-researcher"].set_password(PASSWORD)
    people["north-researcher"].save()

    example = copy.deepcopy(REQUEST_EXAMPLES["problems_create"][1])
    problem = services.problem_propose(
        actor=people["north-researcher"], **{**example, "slug": "sepsis"}
    )
    invited = services.participation_invite(
        actor=people["north-admin"],
        problem=problem,
        institution=places["harbour"],
        role="contributor",
    )
    services.participation_accept(actor=people["harbour-admin"], participation=invited)
    for key in ("north", "harbour"):
        problem.refresh_from_db()
        services.problem_ratify(actor=people[f"{key}-researcher"], problem=problem, revision=1)
    for key in ("north", "harbour"):
        problem.refresh_from_db()
        services.dataset_register(
            actor=people[f"{key}-steward"], problem=problem, **_description(f"{key}.csv")
        )
    problem.refresh_from_db()
    first = services.agreement_draft(
        actor=people["north-researcher"],
        problem=problem,
        **_terms(clauses="Results are published jointly."),
    )
    for key in ("north", "harbour"):
        services.agreement_approve(
            actor=people[f"{key}-steward"], version=first, terms_sha256=first.terms_sha256
        )
    problem.refresh_from_db()
    assert problem.stage == Problem.Stage.DATA_READY
    services.agreement_draft(
        actor=people["north-researcher"],
        problem=problem,
        **_terms(clauses="Results are published jointly; code is shared too."),
    )
    services.participation_request(
        actor=people["metro-admin"], problem=problem, role="validator", message="Transit data."
    )
    alliance_services.institution_suspend(
        actor=people["staff"], institution=places["museum"], reason="Certificate expired."
    )
    key = sites.site_key_register(actor=people["north-admin"], public_key=SITE_KEY)
    sites.site_key_register(actor=people["harbour-admin"], public_key=HARBOUR_KEY)
    # A run with a model after its first round, not certified yet (no validator scored it).
    settings.MEDIA_ROOT = tmp_path / "media"
    run = runs.run_launch(
        actor=people["north-researcher"], problem=problem, config=runs.LaunchConfig(rounds=2)
    )
    blob = encode_params([np.zeros((3, 1)), np.zeros(1)])
    runs.model_store(run=run, round_number=1, blob=blob, metrics={"roc_auc": 0.8})
    hook = webhooks.webhook_create(
        actor=people["north-admin"],
        institution=places["north"],
        url="https://north-hospital.example.org/events",
        events=["run.failed"],
    )
    return Story(
        people=people,
        ids={
            "sepsis": problem.slug,
            "application": ApplicationFactory().pk,
            "north": slugs["north"],
            "taichung": slugs["taichung"],
            "museum": slugs["museum"],
            "metro": slugs["metro"],
            "viewer": viewer.membership.pk,
            "dataset": problem.datasets.get(site_key="north.csv").pk,
            "key": key.fingerprint,
            "run": run.number,
            "webhook": hook.pk,
        },
    )


# operationId -> (who sends it, the path's parameters, the answer planned for the example)
Plan = tuple[str | None, Callable[[dict[str, Any]], dict[str, Any]], int]
PLANS: dict[str, Plan] = {
    "auth_token_create": (None, lambda i: {}, 200),
    "applications_create": (None, lambda i: {}, 201),
    "applications_reject_create": ("staff", lambda i: {"id": i["application"]}, 200),
    "institutions_partial_update": ("north-admin", lambda i: {"slug": i["north"]}, 200),
    "institutions_suspend_create": ("staff", lambda i: {"slug": i["taichung"]}, 200),
    "institutions_reinstate_create": ("staff", lambda i: {"slug": i["museum"]}, 200),
    "members_create": ("north-admin", lambda i: {}, 201),
    "members_partial_update": ("north-admin", lambda i: {"id": i["viewer"]}, 200),
    "problems_create": ("north-researcher", lambda i: {}, 201),
    "problems_partial_update": ("north-researcher", lambda i: {"slug": i["sepsis"]}, 200),
    "problems_participants_create": ("north-admin", lambda i: {"slug": i["sepsis"]}, 201),
    "problems_participants_decline_create": (
        "north-admin",
        lambda i: {"slug": i["sepsis"], "institution": i["metro"]},
        200,
    ),
    "problems_join_create": ("university-admin", lambda i: {"slug": i["sepsis"]}, 201),
    "problems_leave_create": ("harbour-admin", lambda i: {"slug": i["sepsis"]}, 200),
    "problems_revisions_create": ("north-researcher", lambda i: {"slug": i["sepsis"]}, 201),
    "problems_revisions_comments_create": (
        "harbour-researcher",
        lambda i: {"slug": i["sepsis"], "number": 1},
        201,
    ),
    "problems_datasets_create": ("north-steward", lambda i: {"slug": i["sepsis"]}, 201),
    "problems_datasets_withdraw_create": (
        "north-steward",
        lambda i: {"slug": i["sepsis"], "dataset_id": i["dataset"]},
        200,
    ),
    "problems_agreement_versions_create": (
        "north-researcher",
        lambda i: {"slug": i["sepsis"]},
        201,
    ),
    # The example cannot know the hash of the terms the steward read: the documented refusal.
    "problems_agreement_versions_approve_create": (
        "harbour-steward",
        lambda i: {"slug": i["sepsis"], "number": 2},
        400,
    ),
    "problems_agreement_versions_decline_create": (
        "harbour-steward",
        lambda i: {"slug": i["sepsis"], "number": 2},
        200,
    ),
    "problems_agreement_versions_revoke_create": (
        "harbour-steward",
        lambda i: {"slug": i["sepsis"], "number": 1},
        200,
    ),
    "site_keys_create": ("north-admin", lambda i: {}, 201),
    "site_keys_revoke_create": ("north-admin", lambda i: {"fingerprint": i["key"]}, 200),
    "problems_policy_check_create": ("north-researcher", lambda i: {"slug": i["sepsis"]}, 200),
    "problems_runs_create": ("north-researcher", lambda i: {"slug": i["sepsis"]}, 201),
    # Release needs a certified model; the story's has not been validated: the documented refusal.
    "problems_runs_models_release_create": (
        "north-admin",
        lambda i: {"slug": i["sepsis"], "number": i["run"], "round_number": 1},
        400,
    ),
    "notification_preferences_partial_update": ("harbour-researcher", lambda i: {}, 200),
    "webhooks_create": ("north-admin", lambda i: {}, 201),
    "webhooks_partial_update": ("north-admin", lambda i: {"id": i["webhook"]}, 200),
}


def _examples(schema: dict[str, Any]) -> list[tuple[str, str, dict, str, Any]]:
    """(path, method, operation, media type, example value) for every request example."""
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            for media, body in content.items():
                for example in body.get("examples", {}).values():
                    found.append((path, method, operation, media, example["value"]))
                if "example" in body:
                    found.append((path, method, operation, media, body["example"]))
    return found


def test_every_request_example_works_as_written(api, story):
    schema = api.get(reverse("api:schema"), {"format": "json"}).json()
    with_body = {
        operation["operationId"]
        for operations in schema["paths"].values()
        for operation in operations.values()
        if "requestBody" in operation
    }
    examples = _examples(schema)
    # Every operation that takes a body shows one, as the docs' first (JSON) body.
    assert {operation["operationId"] for _p, _m, operation, _c, _v in examples} == with_body
    assert set(PLANS) == with_body
    outcomes = {}
    for path, method, operation, media, value in examples:
        name = operation["operationId"]
        assert next(iter(operation["requestBody"]["content"])) == "application/json", name
        who, parameters, planned = PLANS[name]
        url = path.format(**parameters(story.ids))
        api.force_authenticate(story.people[who] if who else None)
        with transaction.atomic():
            response = api.generic(method.upper(), url, json.dumps(value), content_type=media)
            transaction.set_rollback(True)
        documented = {int(code) for code in operation["responses"]}
        outcomes[name] = (response.status_code, response.content[:300])
        assert response.status_code in documented, (name, outcomes[name])
        assert response.status_code == planned, (name, outcomes[name])
    assert set(outcomes) == with_body


def test_the_run_example_is_the_launch_forms_defaults_and_fits_the_features():
    """The sepsis story holds together: its dataset fits the columns it proposes."""
    dataset = REQUEST_EXAMPLES["problems_datasets_create"][1]
    assert [c["name"] for c in dataset["columns"]] == [f["name"] for f in SEPSIS_FEATURES]
    launch = REQUEST_EXAMPLES["problems_runs_create"][1]
    assert launch["strategy_options"] == {} and launch["min_contributors"] is None
