"""The staff console shows every problem record and changes none of them."""

import pytest
from django.db import connection
from django.db.models import Model
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from alliance.models import AuditEvent
from projects import services
from projects.models import (
    AgreementApproval,
    AgreementVersion,
    Dataset,
    Participation,
    Problem,
    ProblemRevision,
)
from tests.projects.scenario import DEFINITION, Scenario, description, terms

pytestmark = pytest.mark.django_db

MODELS: list[type[Model]] = [
    Problem,
    ProblemRevision,
    Participation,
    Dataset,
    AgreementVersion,
    AgreementApproval,
]


def _url(model: type[Model], view: str, *args: object) -> str:
    return reverse(f"admin:projects_{model._meta.model_name}_{view}", args=args)


def _grow(scenario: Scenario, count: int) -> None:
    """``count`` more data-ready problems, each with revisions, participants, datasets and an
    agreement, built through the services like the first one."""
    a, b, c = scenario.a, scenario.b, scenario.c
    for i in range(count):
        problem = services.problem_propose(
            actor=a.researcher,
            slug=f"grown-{i}",
            title=f"Grown problem {i}",
            sector="medicine",
            summary="More data for the console.",
            question="Does the console keep its query count?",
            **DEFINITION,
        )
        for site, role in ((b, "contributor"), (c, "validator")):
            invitation = services.participation_invite(
                actor=a.admin, problem=problem, institution=site.institution, role=role
            )
            services.participation_accept(actor=site.admin, participation=invitation)
        for site in (a, b, c):
            services.problem_ratify(actor=site.researcher, problem=problem, revision=1)
        for site in (a, b):
            services.dataset_register(
                actor=site.steward, problem=problem, **description(f"{problem.slug}.csv")
            )
        version = services.agreement_draft(actor=a.researcher, problem=problem, **terms())
        for site in (a, b):
            services.agreement_approve(
                actor=site.steward, version=version, terms_sha256=version.terms_sha256
            )


@pytest.mark.parametrize("superuser", [False, True])
def test_staff_opens_every_changelist_and_record(client, staff, ready, superuser):
    staff.is_superuser = superuser
    staff.save()
    services.problem_comment(
        actor=ready.b.researcher, problem=ready.problem, revision=1, body="Ranges look right."
    )
    client.force_login(staff)
    index = client.get(reverse("admin:index")).content.decode()
    assert "Problems" in index
    assert "Agreement versions" in index
    for model in MODELS:
        response = client.get(_url(model, "changelist"))
        assert response.status_code == 200, model
        assert "through the member portal and the API" in response.content.decode()
        assert model.objects.exists()
        for obj in model.objects.all():
            page = client.get(_url(model, "change", obj.pk))
            assert page.status_code == 200, (model, obj.pk)
            assert "Save" not in page.content.decode()


def test_record_pages_show_their_story(client, staff, ready):
    services.problem_comment(
        actor=ready.b.researcher, problem=ready.problem, revision=1, body="Ranges look right."
    )
    client.force_login(staff)
    problem = client.get(_url(Problem, "change", ready.problem.pk)).content.decode()
    for name in ("North Hospital", "Harbour Hospital", "Data University"):
        assert name in problem  # participants inline
    revision = ProblemRevision.objects.get(problem=ready.problem, number=1)
    page = client.get(_url(ProblemRevision, "change", revision.pk)).content.decode()
    assert "Ranges look right." in page  # comments inline
    assert "Data University" in page  # ratifications inline
    assert "malignant (label)" in page  # the schema as a table
    agreement = client.get(_url(AgreementVersion, "change", ready.agreement.pk)).content.decode()
    assert "Logistic regression" in agreement
    assert ready.agreement.terms_sha256 in agreement  # approvals inline
    dataset = Dataset.objects.filter(problem=ready.problem).first()
    page = client.get(_url(Dataset, "change", dataset.pk)).content.decode()
    assert dataset.sha256 in page


def test_console_cannot_add_change_or_delete(client, staff, ready):
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    counts = {model: model.objects.count() for model in MODELS}
    events = AuditEvent.objects.count()
    for model in MODELS:
        obj = model.objects.first()
        assert client.get(_url(model, "add")).status_code == 403
        assert client.post(_url(model, "add"), {}).status_code == 403
        assert client.post(_url(model, "change", obj.pk), {}).status_code == 403
        assert client.get(_url(model, "delete", obj.pk)).status_code == 403
        assert client.post(_url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
        changelist = client.get(_url(model, "changelist")).content.decode()
        assert "delete_selected" not in changelist
        client.post(
            _url(model, "changelist"),
            {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"},
        )
    assert {model: model.objects.count() for model in MODELS} == counts
    assert AuditEvent.objects.count() == events
    ready.refresh()
    assert ready.problem.stage == Problem.Stage.DATA_READY


def test_members_cannot_open_the_console(client, ready):
    for person in (None, ready.a.admin, ready.b.steward, ready.c.researcher):
        if person is not None:
            client.force_login(person)
        for url in (reverse("admin:index"), _url(Problem, "changelist")):
            response = client.get(url)
            assert response.status_code == 302, (person, url)
            assert response["Location"].startswith(reverse("admin:login"))
        response = client.get(_url(Problem, "change", ready.problem.pk))
        assert response.status_code == 302


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model._meta.model_name)
def test_changelist_query_count_does_not_grow(
    client, staff, ready, model, django_assert_num_queries
):
    client.force_login(staff)
    url = _url(model, "changelist")
    with CaptureQueriesContext(connection) as small:
        assert client.get(url).status_code == 200
    _grow(ready, 3)
    assert model.objects.count() >= 4
    with django_assert_num_queries(len(small)):
        assert client.get(url).status_code == 200
