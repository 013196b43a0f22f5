"""The OpenAPI schema tells the truth: schemathesis over every operation, as a member and as staff.

Every operation of ``/api/v1/schema/`` is called with data generated from the schema itself,
fitting it (positive) and breaking it (negative), through the real stack (WSGI, middleware,
PostgreSQL). No answer may be a server error, and every answer the schema documents must match
it. Path parameters come half from seeded objects (a data-ready problem with a run that has
rounds and models, its revisions, agreement versions, datasets, participants, people, an open
application, audit events) so that operations reach their real work, and half from the
generator, so that missing objects are exercised too.

Bounded and repeatable: a fixed number of examples per operation (``EXAMPLES`` fitting the
schema for each caller, ``NEGATIVE_EXAMPLES`` breaking it, sent as the member) and Hypothesis
derandomised, so every run sends the same requests.
"""

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from alliance import services as alliance_services
from alliance.models import AuditEvent, Membership, Role, SignedCheckpoint
from alliance.services.audit_log import audit_checkpoint_issue
from portal.wsgi import application
from projects.models import AgreementVersion, Dataset
from tests.factories import PASSWORD, StaffFactory
from tests.projects.scenario import DEFINITION, build_scenario, description, terms
from tests.projects.test_api import proposal
from tests.projects.test_run_pages import add_rounds, launch

pytestmark = pytest.mark.django_db

EXAMPLES = 10
NEGATIVE_EXAMPLES = 5
CHECKS = [not_a_server_error, response_schema_conformance]


def app(environ: dict, start_response: Any) -> list[bytes]:
    """The portal's WSGI application, keeping the test's database connection open.

    A server closes the connection after each request; here it holds the test's transaction,
    so requests are served as Django's own test client serves them (the signal detached)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        result = application(environ, start_response)
        try:
            return [b"".join(result)]
        finally:
            result.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def seeded(settings, tmp_path) -> dict[str, Any]:
    """A small alliance with an object behind every kind of path parameter."""
    settings.MEDIA_ROOT = tmp_path / "media"
    scenario = build_scenario().ready()
    run = add_rounds(scenario, launch(scenario), closed=2)
    invited = alliance_services.member_invite(
        actor=scenario.a.admin, email="newcomer@example.org", role=Role.VIEWER
    )
    application_ = alliance_services.application_submit(
        actor=None,
        name="Harbour Freight",
        sector="transportation",
        country="Taiwan",
        website="",
        contact_name="Lin",
        contact_email="lin@freight.example.org",
        motivation="Routing.",
    )
    staff = StaffFactory(username="api-staff")
    member = scenario.a.admin
    # After each commit in production; here the test's transaction never commits.
    audit_checkpoint_issue()
    return {
        "member": Token.objects.create(user=member).key,
        "staff": Token.objects.create(user=staff).key,
        "slug": [scenario.problem.slug],
        "number": sorted({1, 2, run.number}),
        "round_number": [0, 1, 2],
        "institution": [
            scenario.a.institution.slug,
            scenario.b.institution.slug,
            scenario.c.institution.slug,
            application_.institution.slug,
        ],
        "dataset_id": list(Dataset.objects.values_list("pk", flat=True)),
        "seq": list(AuditEvent.objects.values_list("seq", flat=True)[:5]),
        "size": list(SignedCheckpoint.objects.values_list("size", flat=True)),
        "applications": [application_.pk],
        "members": [
            invited.pk,
            *Membership.objects.filter(institution=scenario.a.institution).values_list(
                "pk", flat=True
            ),
        ],
    }


def _seeds(seeded: dict[str, Any], path: str, name: str) -> list[Any]:
    if name == "id":
        return seeded["applications" if "/applications/" in path else "members"]
    if name == "slug" and path.startswith("/api/v1/institutions/"):
        return seeded["institution"]
    return seeded.get(name, [])


def _path_choices(seeded: dict[str, Any], operation: Any) -> Iterator[dict[str, Any] | None]:
    """Every combination of seeded values for the operation's path parameters, then None
    (all generated)."""
    names = [p.name for p in operation.path_parameters]
    pools = [_seeds(seeded, operation.path, name) for name in names]
    if names and all(pools):
        for values in itertools.product(*pools):
            yield dict(zip(names, values, strict=True))
    yield None


def _strategy(seeded: dict[str, Any], operation: Any, mode: GenerationMode):
    options = [
        operation.as_strategy(generation_mode=mode, path_parameters=choice)
        for choice in _path_choices(seeded, operation)
    ]
    return st.one_of(*options)


def _negatable(operation: Any) -> bool:
    """Whether data breaking the schema exists: a body, or a parameter with more than "any
    string" to break (a plain string query parameter accepts everything)."""
    if len(operation.body):
        return True
    for parameter in operation.iter_parameters():
        if parameter.definition["in"] not in ("path", "query"):
            continue
        schema = parameter.definition.get("schema", {})
        if schema.get("type") != "string" or {"pattern", "enum", "format"} & set(schema):
            return True
    return False


def _run(operation: Any, strategy: Any, token: str, examples: int) -> list[str]:
    failures: list[str] = []

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Token {token}"})
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:  # collect, test the other operations
            failures.append(f"{operation.label}: {exc}")

    check()
    return failures


def _distinct(failures: list[str]) -> list[str]:
    """One report per operation and kind of failure (the same flaw found by many examples)."""
    seen: dict[tuple[str, ...], str] = {}
    for text in failures:
        lines = text.splitlines()
        marks = [line for line in lines if line.lstrip().startswith(("- ST", "Schema at", "["))]
        key = (lines[0].split(":")[0], *marks[:3])
        seen.setdefault(key, text[:2500])
    return list(seen.values())


@pytest.mark.parametrize("who", ["member", "staff"])
def test_every_operation_answers_as_its_schema_says(seeded, who):
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", app)
    failures: list[str] = []
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        count += 1
        modes = [(GenerationMode.POSITIVE, EXAMPLES)]
        if who == "member" and _negatable(operation):
            # Something to break; an operation with no input has no negative case. Broken
            # input meets the same parsers and serializers whoever sends it: once is enough.
            modes.append((GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES))
        for mode, examples in modes:
            strategy = _strategy(seeded, operation, mode)
            failures += _run(operation, strategy, seeded[who], examples)
    assert count >= 58  # every operation of the schema, none skipped
    assert not failures, "\n\n".join(_distinct(failures))


@pytest.mark.parametrize(
    ("who", "path", "parameter"),
    [
        ("staff", "/api/v1/institutions/", None),  # website "" is not a URI
        ("staff", "/api/v1/institutions/{slug}/", "institution"),
        ("staff", "/api/v1/applications/", None),  # reviewed_by null while pending
        ("staff", "/api/v1/applications/{id}/", "applications"),
        ("staff", "/api/v1/audit-events/", None),  # actor_institution null: an applicant
        ("member", "/api/v1/audit-events/", None),
    ],
)
def test_the_held_out_schema_disagreements_are_gone(seeded, who, path, parameter):
    """Each found by the run above before it was fixed; here once, directly."""
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", app)
    operation = schema[path]["GET"]
    path_parameters = {}
    if parameter is not None:
        name = "id" if parameter == "applications" else "slug"
        path_parameters = {name: seeded[parameter][-1]}
    case = operation.Case(path_parameters=path_parameters)
    response = case.call(headers={"Authorization": f"Token {seeded[who]}"})
    assert response.status_code == 200
    case.validate_response(response, checks=CHECKS)


def _call(schema: Any, token: str, label: str, expected: int, body: Any = None, **path: Any):
    method, template = label.split(" ", 1)
    operation = schema[template][method]
    kwargs = {"path_parameters": path}
    if body is not None:
        kwargs.update(body=body, media_type="application/json")
    case = operation.Case(**kwargs)
    response = case.call(headers={"Authorization": f"Token {token}"} if token else {})
    assert response.status_code == expected, (label, response.status_code, response.text[:300])
    case.validate_response(response, checks=CHECKS)
    return response


def test_success_answers_match_the_schema_along_the_governance_story(settings, tmp_path):
    """The answers generated data rarely reaches (a valid proposal, a dataset that fits the
    ratified schema, a steward's approval), each sent once in the story's order and checked
    against the schema like every other answer."""
    settings.MEDIA_ROOT = tmp_path / "media"
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", app)
    sc = build_scenario()
    token = {
        person.username: Token.objects.create(user=person).key
        for site in (sc.a, sc.b, sc.c)
        for person in (site.admin, site.researcher, site.steward)
    }
    a, b, c = sc.a, sc.b, sc.c
    p = "/api/v1/problems/{slug}"
    slug = {"slug": "tumour-malignancy"}
    sent = _call(
        schema,
        "",
        "POST /api/v1/auth/token/",
        200,
        {"username": a.researcher.username, "password": PASSWORD},
    )
    assert sent.json()["token"] == token[a.researcher.username]
    _call(schema, token[a.researcher.username], "POST /api/v1/problems/", 201, proposal())
    _call(
        schema,
        token[a.admin.username],
        f"POST {p}/participants/",
        201,
        {"institution": b.institution.slug, "role": "contributor"},
        **slug,
    )
    _call(
        schema,
        token[b.admin.username],
        f"POST {p}/participants/{{institution}}/accept/",
        200,
        institution=b.institution.slug,
        **slug,
    )
    _call(schema, token[c.admin.username], f"POST {p}/join/", 201, {"role": "validator"}, **slug)
    _call(
        schema,
        token[a.admin.username],
        f"POST {p}/participants/{{institution}}/decline/",
        200,
        {"reason": "Not this time."},
        institution=c.institution.slug,
        **slug,
    )
    revision = {**DEFINITION, "threshold": 0.95, "change_note": "Higher bar."}
    _call(schema, token[a.researcher.username], f"POST {p}/revisions/", 201, revision, **slug)
    ratify = f"POST {p}/revisions/{{number}}/ratify/"
    for site in (a, b):
        _call(schema, token[site.researcher.username], ratify, 200, number=2, **slug)
    for site in (a, b):
        body = description(f"{site.institution.slug}.csv")
        _call(schema, token[site.steward.username], f"POST {p}/datasets/", 201, body, **slug)
    _call(
        schema,
        token[a.researcher.username],
        f"POST {p}/agreement/versions/",
        201,
        {**terms(), "expires_on": terms()["expires_on"].isoformat()},
        **slug,
    )
    version = AgreementVersion.objects.get(problem__slug=slug["slug"])
    approve = {"terms_sha256": version.terms_sha256}
    for site in (a, b):
        path = f"POST {p}/agreement/versions/{{number}}/approve/"
        _call(schema, token[site.steward.username], path, 200, approve, number=1, **slug)
    revoke = f"POST {p}/agreement/versions/{{number}}/revoke/"
    _call(
        schema,
        token[b.steward.username],
        revoke,
        200,
        {"reason": "Ethics board."},
        number=1,
        **slug,
    )
    dataset = Dataset.objects.get(institution=b.institution)
    withdraw = f"POST {p}/datasets/{{dataset_id}}/withdraw/"
    _call(schema, token[b.steward.username], withdraw, 200, {}, dataset_id=dataset.pk, **slug)
    _call(schema, token[b.admin.username], f"POST {p}/leave/", 200, {}, **slug)
    _call(
        schema,
        token[a.admin.username],
        "PATCH /api/v1/institutions/{slug}/",
        200,
        {"website": "", "description": "A hospital."},
        slug=a.institution.slug,
    )


def test_the_schema_is_valid_and_complete(client):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")
