"""The browser pages of problems, datasets and agreements: rendering, forms, denials, queries."""

import html
import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from alliance.models import AuditEvent, Role
from projects import services
from projects.models import (
    AgreementApproval,
    AgreementVersion,
    Dataset,
    Participation,
    Problem,
    ProblemComment,
    ProblemRevision,
    Ratification,
)
from tests.factories import InstitutionFactory, StaffFactory, member
from tests.projects.scenario import FEATURES, description, make_site

pytestmark = pytest.mark.django_db

SLUG = "tumour-malignancy"


def url(name: str, *args) -> str:
    return reverse(name, args=args)


def text(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture
def outsider():
    site = make_site("outside-bank", "Outside Bank")
    return site


# --- Every page renders for someone who may see it ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "who"),
    [
        ("inbox", (), "a.admin"),
        ("problem-list", (), "c.viewer"),
        ("problem-propose", (), "b.researcher"),
        ("problem-detail", (SLUG,), "b.steward"),
        ("problem-edit", (SLUG,), "a.researcher"),
        ("problem-revise", (SLUG,), "a.admin"),
        ("problem-revision", (SLUG, 1), "c.researcher"),
        ("problem-diff", (SLUG,), "c.viewer"),
        ("dataset-register", (SLUG,), "b.steward"),
        ("agreement-list", (SLUG,), "b.viewer"),
        ("agreement-draft", (SLUG,), "a.researcher"),
        ("agreement-detail", (SLUG, 1), "b.steward"),
        ("agreement-print", (SLUG, 1), "c.admin"),
        ("dashboard", (), "b.steward"),
    ],
)
def test_page_renders_for_an_authorised_user(client, ready, name, args, who):
    site, role = who.split(".")
    client.force_login(getattr(getattr(ready, site), role))
    response = client.get(url(name, *args))
    assert response.status_code == 200
    assert "<h1" in text(response)


def test_staff_read_problem_pages_without_buttons(client, ready):
    client.force_login(StaffFactory())
    page = text(client.get(url("problem-detail", SLUG)))
    assert "Tumour malignancy from biopsy features" in page
    assert "Register a dataset" not in page
    assert "Send invitation" not in page
    assert client.get(url("agreement-detail", SLUG, 1)).status_code == 200


def test_anonymous_visitors_are_sent_to_log_in(client, ready):
    for name, args in (
        ("inbox", ()),
        ("problem-list", ()),
        ("problem-propose", ()),
        ("problem-detail", (SLUG,)),
        ("problem-diff", (SLUG,)),
        ("agreement-detail", (SLUG, 1)),
        ("agreement-print", (SLUG, 1)),
    ):
        response = client.get(url(name, *args))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    response = client.post(
        url("agreement-action", SLUG, 1, "revoke"), {"reason": "No."}, follow=False
    )
    assert response.status_code == 302
    assert AgreementApproval.objects.filter(revoked_at__isnull=False).count() == 0


# --- Inbox, navigation and dashboard --------------------------------------------------------------


def test_inbox_lists_what_waits_and_links_to_it(client, drafted):
    client.force_login(drafted.b.steward)
    page = text(client.get(url("inbox")))
    assert "Approve agreement version 1 of Tumour malignancy from biopsy features" in page
    assert url("agreement-detail", SLUG, 1) in page
    # The navigation badge counts the same item, and the dashboard lists it.
    assert '<span class="badge" aria-hidden="true">1</span>' in page
    dashboard = text(client.get(url("dashboard")))
    assert "Approve agreement version 1 of Tumour malignancy" in dashboard


def test_an_empty_inbox_says_nothing_waits(client, ready):
    client.force_login(ready.c.viewer)
    page = text(client.get(url("inbox")))
    assert "Nothing waits for you." in page
    assert 'class="badge" aria-hidden' not in page


# --- The list -------------------------------------------------------------------------------------


def test_problem_list_shows_stage_sector_proposer_and_visibility(client, ready, outsider):
    services.problem_propose(
        actor=ready.a.researcher,
        slug="hidden-one",
        title="Hidden one",
        sector="medicine",
        summary="s",
        question="q",
        visibility=Problem.Visibility.INVITATION,
        task_type="binary",
        label_column="malignant",
        features=FEATURES,
        metric="roc_auc",
        threshold=0.9,
    )
    client.force_login(outsider.researcher)
    page = text(client.get(url("problem-list")))
    assert "Tumour malignancy from biopsy features" in page
    assert "Data ready" in page
    assert "Medicine" in page
    assert "North Hospital" in page
    assert "Listed to the whole alliance" in page
    assert "Hidden one" not in page
    assert "Propose a problem" in page
    client.force_login(outsider.steward)
    assert "Propose a problem" not in text(client.get(url("problem-list")))
    assert client.get(url("problem-propose")).status_code == 403


def test_problem_list_paginates(client, scenario):
    for i in range(27):
        services.problem_propose(
            actor=scenario.a.researcher,
            slug=f"problem-{i}",
            title=f"Problem number {i}",
            sector="medicine",
            summary="s",
            question="q",
            task_type="binary",
            label_column="malignant",
            features=FEATURES,
            metric="roc_auc",
            threshold=0.9,
        )
    client.force_login(scenario.b.viewer)
    first = text(client.get(url("problem-list")))
    assert first.count("Problem number") == 25
    assert "Page 1 of 2" in first
    assert text(client.get(url("problem-list") + "?page=2")).count("Problem number") == 2


# --- Proposing ------------------------------------------------------------------------------------


def propose_data(**overrides) -> dict:
    data = {
        "title": "Tumour malignancy",
        "slug": "tumours",
        "sector": "medicine",
        "summary": "Predict malignancy.",
        "question": "Is it malignant?",
        "visibility": "listed",
        "role": "contributor",
        "task_type": "binary",
        "label_column": "malignant",
        "metric": "roc_auc",
        "threshold": "0.95",
        "features-TOTAL_FORMS": "5",
        "features-INITIAL_FORMS": "0",
        "features-MIN_NUM_FORMS": "0",
        "features-MAX_NUM_FORMS": "500",
        "features-0-name": "age",
        "features-0-type": "numeric",
        "features-0-unit": "years",
        "features-0-min": "0",
        "features-0-max": "120",
        "features-0-required": "on",
        "features-1-name": "malignant",
        "features-1-type": "categorical",
        "features-1-categories": "0, 1",
        "features-1-required": "on",
        # Rows 2 to 4 are left as the page shows them: ignored.
        **{f"features-{i}-type": "numeric" for i in (2, 3, 4)},
        **{f"features-{i}-required": "on" for i in (2, 3, 4)},
    }
    data.update(overrides)
    return data


def test_propose_through_the_form(client, scenario):
    client.force_login(scenario.b.researcher)
    response = client.post(url("problem-propose"), propose_data())
    problem = Problem.objects.get(slug="tumours")
    assert response.status_code == 302
    assert response["Location"] == url("problem-detail", "tumours")
    assert problem.proposer == scenario.b.institution
    revision = ProblemRevision.objects.get(problem=problem, number=1)
    assert revision.threshold == 0.95
    assert [c["name"] for c in revision.features] == ["age", "malignant"]
    assert revision.features[0]["max"] == 120.0
    assert revision.features[1]["categories"] == ["0", "1"]
    assert AuditEvent.objects.filter(action="problem.proposed").count() == 1


def test_add_rows_shows_five_more_rows_and_keeps_what_was_typed(client, scenario):
    client.force_login(scenario.a.researcher)
    response = client.post(url("problem-propose"), propose_data(add_rows="1", title=""))
    page = text(response)
    assert response.status_code == 200
    assert not Problem.objects.exists()
    assert 'name="features-TOTAL_FORMS" value="10"' in page
    assert 'name="features-9-name"' in page
    assert 'value="age"' in page
    assert 'value="malignant"' in page
    assert "This field is required." not in page  # nothing is validated on "Add rows"


def test_import_fills_schema_rows_from_a_dataset_description(client, scenario):
    described = description()
    client.force_login(scenario.a.researcher)
    response = client.post(
        url("problem-propose"),
        propose_data(
            **{"import": "1", "description_json": json.dumps(described), "label_column": ""}
        ),
    )
    page = text(response)
    assert response.status_code == 200
    assert not Problem.objects.exists()
    assert 'name="features-TOTAL_FORMS" value="5"' in page
    assert 'name="features-0-name" value="age"' in page
    assert 'name="features-0-max" value="88"' in page
    # The 0/1 label becomes categorical with its two values, and is the label column.
    assert 'name="features-3-categories" value="0, 1"' in page
    assert 'name="label_column" value="malignant"' in page
    # "grade" has missing values: not required.
    assert '<input type="checkbox" name="features-2-required" id="id_features-2-required">' in page
    # Proposing what was imported works as it stands.
    data = propose_data(**{"features-TOTAL_FORMS": "5"})
    for i, column in enumerate(described["columns"]):
        row = {
            "name": column["name"],
            "type": "numeric",
            "min": column["min"],
            "max": column["max"],
            "categories": "",
        }
        if column["name"] in ("malignant", "grade"):
            row.update(
                type="categorical", min="", max="", categories=", ".join(column["categories"])
            )
        for key, value in row.items():
            data[f"features-{i}-{key}"] = "" if value is None else str(value)
        data[f"features-{i}-required"] = "on"
    response = client.post(url("problem-propose"), data)
    assert response.status_code == 302, text(response)


def test_import_of_bad_json_says_why(client, scenario):
    client.force_login(scenario.a.researcher)
    page = text(
        client.post(
            url("problem-propose"), propose_data(**{"import": "1", "description_json": "{"})
        )
    )
    assert "This is not valid JSON" in page


def test_propose_shows_schema_and_field_errors_and_stores_nothing(client, scenario):
    client.force_login(scenario.a.researcher)
    response = client.post(
        url("problem-propose"),
        propose_data(label_column="outcome", slug="Bad Slug", **{"features-0-min": "200"}),
    )
    page = text(response)
    assert response.status_code == 200
    assert "The label column “outcome” is not one of the schema" in page
    assert "is above the maximum" in page
    assert "Use lower-case letters, digits and hyphens" in page
    assert not Problem.objects.exists()


# --- The problem page -----------------------------------------------------------------------------


def test_problem_page_shows_lifecycle_definition_and_people(client, ready):
    client.force_login(ready.b.admin)
    page = text(client.get(url("problem-detail", SLUG)))
    current = re.findall(r'<li class="step current" aria-current="step">(.*?)</li>', page)
    assert len(current) == 1
    assert "Data ready" in current[0]
    assert page.count('class="step done"') == 2
    for stage in ("Proposed", "Ratified", "Data ready", "Training", "Certified", "Released"):
        assert stage in page
    assert 'id="participants"' in page
    assert "from 0 to 120" in page
    assert "Harbour Hospital" in page and "Data University" in page
    assert "Leave this problem" in page  # B's admin, not the proposer
    assert "Send invitation" not in page
    assert 'title="' + "ab" * 32 + '"' in page
    assert "Version 1" in page


def test_buttons_follow_what_the_person_may_do(client, scenario, outsider):
    scenario.propose()
    scenario.join()
    client.force_login(scenario.b.researcher)
    page = text(client.get(url("problem-detail", SLUG)))
    assert "Ratify revision 1" in page
    assert "Write a new revision" not in page
    client.force_login(scenario.a.admin)
    page = text(client.get(url("problem-detail", SLUG)))
    assert "Send invitation" in page
    assert "Leave this problem" not in page
    assert "Write a new revision" in page
    client.force_login(scenario.b.steward)
    page = text(client.get(url("problem-detail", SLUG)))
    assert "Ratify revision 1" not in page
    assert "Register a dataset" in page


def test_ratify_and_comment_through_the_pages(client, scenario):
    scenario.propose()
    scenario.join()
    client.force_login(scenario.b.researcher)
    response = client.post(url("problem-ratify", SLUG, 1), follow=True)
    assert "Your institution ratified revision 1." in text(response)
    assert Ratification.objects.filter(institution=scenario.b.institution).exists()
    response = client.post(url("problem-ratify", SLUG, 1), follow=True)
    assert "has already ratified revision 1" in text(response)
    response = client.post(url("problem-revision", SLUG, 1), {"body": "Add tumour size units?"})
    assert response.status_code == 302
    assert response["Location"].endswith("#comments")
    page = text(client.get(url("problem-revision", SLUG, 1)))
    assert "Add tumour size units?" in page
    # A viewer may read but not comment: the form is absent and a crafted post is refused.
    client.force_login(scenario.b.viewer)
    assert "Post comment" not in text(client.get(url("problem-revision", SLUG, 1)))
    response = client.post(url("problem-revision", SLUG, 1), {"body": "Me too"})
    assert response.status_code == 200
    assert "Only people of participating institutions comment." in text(response)
    assert ProblemComment.objects.count() == 1


def test_edit_and_revise_through_the_pages(client, ready):
    client.force_login(ready.a.researcher)
    response = client.post(
        url("problem-edit", SLUG),
        {
            "title": "Tumour malignancy (v2)",
            "sector": "medicine",
            "summary": "New summary.",
            "question": "Is it malignant?",
            "visibility": "listed",
        },
    )
    assert response.status_code == 302
    assert Problem.objects.get(slug=SLUG).title == "Tumour malignancy (v2)"
    page = text(client.get(url("problem-revise", SLUG)))
    assert 'name="features-0-name" value="age"' in page
    assert 'name="threshold" value="0.9"' in page
    data = revise_data(threshold="0.95", extra_column=True)
    response = client.post(url("problem-revise", SLUG), data)
    assert response.status_code == 302, text(response)
    assert response["Location"] == url("problem-revision", SLUG, 2)
    problem = Problem.objects.get(slug=SLUG)
    assert problem.current_revision == 2
    assert problem.stage == Problem.Stage.PROPOSED


def revise_data(*, threshold: str = "0.9", extra_column: bool = False) -> dict:
    rows = [dict(c) for c in FEATURES]
    if extra_column:
        rows.insert(2, {"name": "density", "type": "numeric", "unit": "g/cm3", "min": 0, "max": 5})
    data = {
        "task_type": "binary",
        "label_column": "malignant",
        "metric": "roc_auc",
        "threshold": threshold,
        "change_note": "Raise the bar; add density.",
        "features-TOTAL_FORMS": str(len(rows) + 1),
        "features-INITIAL_FORMS": "0",
    }
    for i, row in enumerate(rows):
        data[f"features-{i}-name"] = row["name"]
        data[f"features-{i}-type"] = row["type"]
        data[f"features-{i}-unit"] = row.get("unit", "")
        data[f"features-{i}-min"] = "" if row.get("min") is None else str(row["min"])
        data[f"features-{i}-max"] = "" if row.get("max") is None else str(row["max"])
        data[f"features-{i}-categories"] = ", ".join(row.get("categories", []))
        if row.get("required", True):
            data[f"features-{i}-required"] = "on"
    last = len(rows)
    data[f"features-{last}-type"] = "numeric"
    data[f"features-{last}-required"] = "on"
    return data


def test_revising_with_the_same_definition_is_refused_on_the_form(client, ready):
    client.force_login(ready.a.researcher)
    response = client.post(url("problem-revise", SLUG), revise_data())
    assert response.status_code == 200
    assert "This is the same definition as revision 1" in text(response)
    assert ProblemRevision.objects.count() == 1


# --- Differences ----------------------------------------------------------------------------------


def test_diff_shows_a_changed_threshold_and_an_added_column(client, ready):
    client.force_login(ready.a.researcher)
    client.post(url("problem-revise", SLUG), revise_data(threshold="0.95", extra_column=True))
    client.force_login(ready.c.viewer)
    response = client.get(url("problem-diff", SLUG))  # defaults: previous against current
    page = text(response)
    assert response.status_code == 200
    assert "Revision 1 compared with revision 2" in page
    threshold_row = page[page.index("Acceptance threshold</th>") :].split("</tr>")[0]
    assert "<del>0.9</del>" in threshold_row
    assert "<ins>0.95</ins>" in threshold_row
    assert "Changed" in threshold_row
    density_row = page[page.index("<code>density</code>") :].split("</tr>")[0]
    assert "Added" in density_row
    assert "(not in this revision)" in density_row
    label_row = page[page.index("Label column</th>") :].split("</tr>")[0]
    assert "Unchanged" in label_row
    explicit = text(client.get(url("problem-diff", SLUG) + "?from=2&to=1"))
    assert "Revision 2 compared with revision 1" in explicit
    assert "Removed" in explicit


def test_diff_answers_404_for_unknown_revisions_and_400_for_bad_input(client, ready):
    client.force_login(ready.c.viewer)
    assert client.get(url("problem-diff", SLUG) + "?from=1&to=7").status_code == 404
    assert client.get(url("problem-diff", SLUG) + "?from=-1&to=1").status_code == 404
    response = client.get(url("problem-diff", SLUG) + "?from=one&to=2")
    assert response.status_code == 400
    assert "Revisions are given by their numbers" in text(response)
    assert client.get(url("problem-revision", SLUG, 9)).status_code == 404


# --- Participation --------------------------------------------------------------------------------


def test_invite_and_accept_through_the_pages(client, ready, outsider):
    client.force_login(ready.a.admin)
    response = client.post(
        url("participation-action", SLUG, "invite"),
        {"institution": outsider.institution.slug, "role": "observer", "message": "Join us"},
        follow=True,
    )
    assert "Outside Bank is invited" in text(response)
    invited = Participation.objects.get(institution=outsider.institution)
    assert invited.status == Participation.Status.INVITED
    client.force_login(outsider.admin)
    page = text(client.get(url("problem-detail", SLUG)))
    assert "Accept the invitation" in page
    response = client.post(
        url("participation-action", SLUG, "accept"), {"participation": invited.pk}, follow=True
    )
    assert "Outside Bank now takes part." in text(response)
    invited.refresh_from_db()
    assert invited.status == Participation.Status.ACTIVE


def test_request_and_decline_through_the_pages(client, ready, outsider):
    client.force_login(outsider.admin)
    page = text(client.get(url("problem-detail", SLUG)))
    assert "Ask to join" in page
    client.post(url("participation-action", SLUG, "request"), {"role": "validator"})
    request = Participation.objects.get(institution=outsider.institution)
    assert request.status == Participation.Status.REQUESTED
    # The requester cannot accept its own request: refused, nothing changes.
    response = client.post(
        url("participation-action", SLUG, "accept"), {"participation": request.pk}, follow=True
    )
    assert "Only the proposing institution's admins manage participants." in text(response)
    request.refresh_from_db()
    assert request.status == Participation.Status.REQUESTED
    client.force_login(ready.a.admin)
    response = client.post(
        url("participation-action", SLUG, "decline"), {"participation": request.pk}, follow=True
    )
    assert "Declined" in text(response)
    request.refresh_from_db()
    assert request.status == Participation.Status.DECLINED


def test_leave_and_unknown_actions(client, ready):
    client.force_login(ready.c.admin)
    response = client.post(url("participation-action", SLUG, "leave"), follow=True)
    assert "has left this problem" in text(response)
    assert Participation.objects.get(institution=ready.c.institution).status == "left"
    assert client.post(url("participation-action", SLUG, "explode")).status_code == 404
    assert client.get(url("participation-action", SLUG, "leave")).status_code == 405
    client.force_login(ready.a.admin)
    response = client.post(url("participation-action", SLUG, "accept"), {"participation": "x"})
    assert response.status_code == 404


# --- Datasets -------------------------------------------------------------------------------------


def test_register_page_explains_the_command(client, ratified):
    client.force_login(ratified.b.steward)
    page = text(client.get(url("dataset-register", SLUG)))
    assert "python manage.py describe_dataset FILE.csv --label malignant" in page
    assert "No row leaves your site." in page


def test_register_by_pasting_the_description(client, ratified):
    client.force_login(ratified.b.steward)
    response = client.post(
        url("dataset-register", SLUG), {"description_json": json.dumps(description("b.csv"))}
    )
    assert response.status_code == 302
    dataset = Dataset.objects.get()
    assert dataset.institution == ratified.b.institution
    assert dataset.site_key == "b.csv"


def test_register_by_uploading_the_file(client, ratified):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(ratified.b.steward)
    upload = SimpleUploadedFile(
        "description.json", json.dumps(description()).encode(), "application/json"
    )
    response = client.post(url("dataset-register", SLUG), {"description_file": upload})
    assert response.status_code == 302
    assert Dataset.objects.count() == 1


def test_register_lists_every_mismatch_and_stores_nothing(client, ratified):
    described = description()
    described["columns"] = [c for c in described["columns"] if c["name"] != "size"]
    described["columns"][0]["max"] = 130.0
    client.force_login(ratified.b.steward)
    response = client.post(
        url("dataset-register", SLUG), {"description_json": json.dumps(described)}
    )
    page = text(response)
    assert response.status_code == 200
    assert "<p>The required column “size” is not in the dataset.</p>" in page
    assert "<p>Column “age” has values up to 130, above the declared maximum 120.</p>" in page
    assert not Dataset.objects.exists()


@pytest.mark.parametrize(
    ("pasted", "message"),
    [
        ("{not json", "This is not valid JSON"),
        ("[1, 2]", "The description must be a JSON object"),
        ("", "Paste the description or upload its file."),
        ('{"actor": 1}', "Unknown keys in the description: actor."),
    ],
)
def test_register_refuses_what_is_not_a_description(client, ratified, pasted, message):
    client.force_login(ratified.b.steward)
    response = client.post(url("dataset-register", SLUG), {"description_json": pasted})
    assert response.status_code == 200
    assert message in text(response)
    assert not Dataset.objects.exists()


def test_only_contributors_stewards_open_the_register_page(client, ratified):
    for person in (ratified.b.researcher, ratified.c.steward):
        client.force_login(person)
        assert client.get(url("dataset-register", SLUG)).status_code == 403


def test_withdraw_a_dataset_through_the_page(client, ready):
    dataset = Dataset.objects.get(institution=ready.b.institution)
    client.force_login(ready.a.steward)  # another institution's steward: refused
    client.post(url("dataset-withdraw", SLUG, dataset.pk))
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.ACTIVE
    client.force_login(ready.b.steward)
    response = client.post(url("dataset-withdraw", SLUG, dataset.pk), follow=True)
    assert "is withdrawn" in text(response)
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.WITHDRAWN
    assert Problem.objects.get(slug=SLUG).stage == Problem.Stage.RATIFIED
    assert client.post(url("dataset-withdraw", SLUG, 99999)).status_code == 404


# --- Agreements -----------------------------------------------------------------------------------


def test_draft_an_amendment_through_the_page(client, ready):
    client.force_login(ready.a.researcher)
    page = text(client.get(url("agreement-draft", SLUG)))
    assert "Draft version 2 of the agreement" in page
    assert "Train a tumour malignancy classifier" in page  # prefilled from version 1
    data = {
        "purpose": "Train a tumour malignancy classifier for screening research.",
        "model_families": ["logistic_regression", "mlp"],
        "min_contributors": "2",
        "download_scope": "participants",
        "expires_on": ready.agreement.expires_on.isoformat(),
        "clauses": "Results are published jointly.",
        "change_note": "Allow multilayer perceptrons.",
    }
    response = client.post(url("agreement-draft", SLUG), data)
    assert response.status_code == 302
    version = AgreementVersion.objects.get(number=2)
    assert version.status == AgreementVersion.Status.PENDING
    assert version.model_families == ["logistic_regression", "mlp"]
    listing = text(client.get(url("agreement-list", SLUG)))
    assert "Awaiting approvals" in listing and "Effective" in listing
    # Commercial use without a revenue-sharing note: the service's error lands on its field.
    response = client.post(url("agreement-draft", SLUG), {**data, "commercial_use": "on"})
    assert "Say how revenue is shared" in text(response)


def test_agreement_reads_as_a_document_with_its_approvals(client, drafted):
    client.force_login(drafted.c.viewer)
    page = text(client.get(url("agreement-detail", SLUG, 1)))
    assert "Only these model families may be trained on the data: Logistic regression." in page
    assert "at least 2 contributing institutions" in page
    assert drafted.agreement.terms_sha256 in page
    assert "North Hospital" in page and "Approved" in page and "Awaiting" in page
    assert "Approve version 1" not in page
    printable = text(client.get(url("agreement-print", SLUG, 1)))
    assert drafted.agreement.terms_sha256 in printable
    assert 'class="topbar"' not in printable


def test_approve_through_the_page_makes_the_last_approval_effective(client, drafted):
    client.force_login(drafted.b.steward)
    page = text(client.get(url("agreement-detail", SLUG, 1)))
    assert "Approve version 1" in page
    assert f'name="terms_sha256" value="{drafted.agreement.terms_sha256}"' in page
    response = client.post(
        url("agreement-action", SLUG, 1, "approve"),
        {"terms_sha256": drafted.agreement.terms_sha256},
        follow=True,
    )
    assert "Version 1 is in effect." in text(response)
    drafted.agreement.refresh_from_db()
    assert drafted.agreement.status == AgreementVersion.Status.EFFECTIVE
    assert Problem.objects.get(slug=SLUG).stage == Problem.Stage.DATA_READY


def test_approving_terms_not_read_is_refused(client, drafted):
    client.force_login(drafted.b.steward)
    response = client.post(
        url("agreement-action", SLUG, 1, "approve"), {"terms_sha256": "0" * 64}, follow=True
    )
    assert "These terms changed since you read them" in text(response)
    assert not AgreementApproval.objects.filter(institution=drafted.b.institution).exists()


@pytest.mark.parametrize("who", ["b.researcher", "b.admin", "c.steward", "a.viewer"])
def test_a_non_steward_cannot_approve_and_nothing_changes(client, drafted, who):
    site, role = who.split(".")
    client.force_login(getattr(getattr(drafted, site), role))
    assert "Approve version 1" not in text(client.get(url("agreement-detail", SLUG, 1)))
    response = client.post(
        url("agreement-action", SLUG, 1, "approve"),
        {"terms_sha256": drafted.agreement.terms_sha256},
        follow=True,
    )
    assert response.status_code == 200
    assert "Only data stewards of contributing institutions decide on the agreement." in text(
        response
    )
    assert AgreementApproval.objects.count() == 1
    drafted.agreement.refresh_from_db()
    assert drafted.agreement.status == AgreementVersion.Status.PENDING


def test_decline_and_revoke_need_a_reason(client, drafted):
    client.force_login(drafted.b.steward)
    response = client.post(url("agreement-action", SLUG, 1, "decline"), {"reason": ""}, follow=True)
    assert "Say why, so that the terms can be amended." in text(response)
    assert not AgreementApproval.objects.filter(institution=drafted.b.institution).exists()
    response = client.post(
        url("agreement-action", SLUG, 1, "decline"), {"reason": "Expiry too far."}, follow=True
    )
    assert "You declined version 1" in text(response)
    client.force_login(drafted.a.steward)
    page = text(client.get(url("agreement-detail", SLUG, 1)))
    assert "Revoke the approval" in page
    response = client.post(url("agreement-action", SLUG, 1, "revoke"), {"reason": ""}, follow=True)
    assert "Say why the approval is revoked." in text(response)
    response = client.post(
        url("agreement-action", SLUG, 1, "revoke"), {"reason": "Board decision."}, follow=True
    )
    assert "is revoked" in text(response)
    approval = AgreementApproval.objects.get(institution=drafted.a.institution)
    assert approval.revoked_at is not None
    assert client.post(url("agreement-action", SLUG, 1, "sign")).status_code == 404
    assert client.get(url("agreement-detail", SLUG, 7)).status_code == 404


# --- Invisible problems ---------------------------------------------------------------------------


def test_an_invitation_only_problem_answers_404_to_outsiders_everywhere(client, scenario, outsider):
    scenario.propose(visibility=Problem.Visibility.INVITATION)
    scenario.join()
    scenario.draft()
    for person in (outsider.admin, outsider.steward):
        client.force_login(person)
        for name, args in (
            ("problem-detail", (SLUG,)),
            ("problem-edit", (SLUG,)),
            ("problem-revise", (SLUG,)),
            ("problem-revision", (SLUG, 1)),
            ("problem-diff", (SLUG,)),
            ("dataset-register", (SLUG,)),
            ("agreement-list", (SLUG,)),
            ("agreement-draft", (SLUG,)),
            ("agreement-detail", (SLUG, 1)),
            ("agreement-print", (SLUG, 1)),
        ):
            assert client.get(url(name, *args)).status_code == 404, name
        for name, args in (
            ("participation-action", (SLUG, "request")),
            ("agreement-action", (SLUG, 1, "approve")),
            ("problem-ratify", (SLUG, 1)),
            ("dataset-withdraw", (SLUG, 1)),
        ):
            assert client.post(url(name, *args), {"role": "observer"}).status_code == 404, name
    assert Participation.objects.filter(institution=outsider.institution).count() == 0


def test_forbidden_pages_on_a_visible_problem_answer_403(client, ready, outsider):
    client.force_login(outsider.admin)
    assert client.get(url("problem-detail", SLUG)).status_code == 200
    for name in ("problem-edit", "problem-revise", "agreement-draft", "dataset-register"):
        assert client.get(url(name, SLUG)).status_code == 403, name
    client.force_login(ready.b.researcher)
    assert client.get(url("problem-edit", SLUG)).status_code == 403


# --- Query counts ---------------------------------------------------------------------------------


def _count(client, address: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(address)
    assert response.status_code == 200
    return len(captured)


def _propose(scenario, n: int) -> None:
    for i in range(n):
        services.problem_propose(
            actor=scenario.a.researcher,
            slug=f"extra-{Problem.objects.count()}-{i}",
            title=f"Extra problem {i}",
            sector="manufacturing",
            summary="s",
            question="q",
            task_type="binary",
            label_column="malignant",
            features=FEATURES,
            metric="roc_auc",
            threshold=0.9,
        )


def test_problem_list_queries_do_not_grow(client, scenario, django_assert_num_queries):
    client.force_login(scenario.b.admin)
    _propose(scenario, 2)
    client.get(url("problem-list"))  # the first request fills this process's caches
    small = _count(client, url("problem-list"))
    _propose(scenario, 6)
    with django_assert_num_queries(small):
        assert client.get(url("problem-list")).status_code == 200


def _grow(scenario, n: int) -> None:
    """``n`` more datasets (site A) and ``n`` more participants (observers, one invited)."""
    problem = scenario.refresh()
    for _ in range(n):
        key = f"extra-{Dataset.objects.count()}.csv"
        services.dataset_register(actor=scenario.a.steward, problem=problem, **description(key))
        institution = InstitutionFactory()
        admin = member(Role.ADMIN, institution)
        participation = services.participation_invite(
            actor=scenario.a.admin, problem=problem, institution=institution, role="observer"
        )
        services.participation_accept(actor=admin, participation=participation)
    services.participation_invite(
        actor=scenario.a.admin, problem=problem, institution=InstitutionFactory(), role="observer"
    )


@pytest.mark.parametrize("who", ["a.admin", "b.steward", "c.researcher"])
def test_problem_page_queries_do_not_grow(client, ready, who, django_assert_num_queries):
    site, role = who.split(".")
    client.force_login(getattr(getattr(ready, site), role))
    _grow(ready, 1)
    small = _count(client, url("problem-detail", SLUG))
    _grow(ready, 5)
    with django_assert_num_queries(small):
        assert client.get(url("problem-detail", SLUG)).status_code == 200


def test_agreement_page_queries_do_not_grow(client, ready, django_assert_num_queries):
    client.force_login(ready.b.steward)
    _grow(ready, 1)
    small = _count(client, url("agreement-detail", SLUG, 1))
    _grow(ready, 4)
    with django_assert_num_queries(small):
        assert client.get(url("agreement-detail", SLUG, 1)).status_code == 200
