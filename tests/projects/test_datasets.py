"""Datasets: registered by the description the site computes, checked against the schema."""

import copy
import hashlib
import io
import json
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command

from alliance.models import AuditEvent
from portal.common.errors import ApplicationError, Conflict
from projects import services
from projects.models import Dataset, Problem
from projects.services import RunConfig
from tests.projects.scenario import DEFINITION, FEATURES, description

pytestmark = pytest.mark.django_db

CSV = """age,size,grade,malignant
34,12.5,1,0
61,40,3,1
47,22.25,,0
72,55,2,1
29,8,1,0
"""


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def with_column(desc: dict, name: str, **changes) -> dict:
    """A copy of a description whose column ``name`` has ``changes`` (None: no such column)."""
    desc = copy.deepcopy(desc)
    columns = []
    for column in desc["columns"]:
        if column["name"] == name:
            if changes.get("drop"):
                continue
            column.update(changes)
        columns.append(column)
    desc["columns"] = columns
    return desc


def register(scenario, desc: dict, site=None) -> Dataset:
    return services.dataset_register(
        actor=(site or scenario.a).steward, problem=scenario.refresh(), **desc
    )


def mismatches(scenario, desc: dict) -> list[str]:
    before = AuditEvent.objects.count()
    with pytest.raises(ValidationError) as info:
        register(scenario, desc)
    assert not Dataset.objects.exists()  # nothing half-registered
    assert AuditEvent.objects.count() == before
    return info.value.messages


# --- describe_dataset output is what registration accepts ------------------------------------


def test_describe_dataset_output_is_accepted_verbatim(ratified, tmp_path: Path):
    path = tmp_path / "biopsies-2025.csv"
    path.write_text(CSV, encoding="utf-8")
    out = io.StringIO()
    call_command(
        "describe_dataset",
        str(path),
        "--label",
        "malignant",
        "--personal-data",
        "--legal-basis",
        "Research exemption approved by the ethics board (IRB 2026-114).",
        stdout=out,
    )
    data = json.loads(out.getvalue())
    assert data["row_count"] == 5
    assert {column["name"] for column in data["columns"]} == {f["name"] for f in FEATURES}

    dataset = services.dataset_register(actor=ratified.a.steward, problem=ratified.problem, **data)

    assert dataset.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert dataset.site_key == "biopsies-2025.csv"
    assert dataset.name == "biopsies-2025"
    assert dataset.row_count == 5
    assert dataset.label_column == "malignant"
    assert dataset.columns == data["columns"]
    assert dataset.personal_data is True
    assert dataset.legal_basis.startswith("Research exemption")
    assert dataset.institution == ratified.a.institution
    assert dataset.registered_by == ratified.a.steward
    assert dataset.revision == 1
    assert dataset.status == Dataset.Status.ACTIVE
    (event,) = events("dataset.registered")
    assert event.actor == ratified.a.steward
    assert event.subject_institution == ratified.a.institution
    assert event.target_id == str(dataset.pk)
    assert event.payload == {
        "problem": "tumour-malignancy",
        "name": "biopsies-2025",
        "site_key": "biopsies-2025.csv",
        "sha256": dataset.sha256,
        "row_count": 5,
        "revision": 1,
        "personal_data": True,
        "purpose": "training",
    }


# --- Schema mismatches, each named ------------------------------------------------------------


def test_missing_required_column_is_named(ratified):
    messages = mismatches(ratified, with_column(description(), "size", drop=True))
    assert messages == ["The required column “size” is not in the dataset."]


def test_a_missing_optional_column_is_fine(ratified):
    dataset = register(ratified, with_column(description(), "grade", drop=True))
    assert dataset.column_names == ["age", "size", "malignant"]


def test_missing_values_in_a_required_column_are_named(ratified):
    messages = mismatches(ratified, with_column(description(), "age", missing=4))
    assert messages == ["The required column “age” has 4 missing values."]


def test_wrong_type_is_named(ratified):
    desc = with_column(
        description(),
        "age",
        type="categorical",
        min=None,
        max=None,
        categories=["adult", "child"],
        distinct=2,
    )
    assert mismatches(ratified, desc) == [
        "Column “age” must be numeric, but the dataset's values are not all numbers."
    ]


def test_categorical_column_with_too_many_values_is_named(ratified):
    desc = with_column(description(), "grade", categories=None, distinct=None)
    assert mismatches(ratified, desc) == [
        "Column “grade” must be categorical, but the dataset lists no categories for it "
        "(too many distinct values)."
    ]


def test_category_not_allowed_is_named(ratified):
    desc = with_column(description(), "grade", categories=["1", "2", "3", "4"], max=4.0, distinct=4)
    assert mismatches(ratified, desc) == [
        "Column “grade” has categories the schema does not allow: 4."
    ]


def test_range_outside_the_declared_bounds_is_named(ratified):
    desc = with_column(description(), "age", min=-1.0, max=130.0)
    assert mismatches(ratified, desc) == [
        "Column “age” has values down to -1, below the declared minimum 0.",
        "Column “age” has values up to 130, above the declared maximum 120.",
    ]


def test_wrong_label_column_is_named(ratified):
    desc = {**description(), "label_column": "size"}
    assert mismatches(ratified, desc) == [
        "The dataset's label column “size” is not the problem's label column “malignant”."
    ]


def test_every_mismatch_is_named_at_once(ratified):
    desc = with_column(description(), "size", drop=True)
    desc = with_column(desc, "age", max=130.0)
    desc = with_column(desc, "grade", categories=["1", "2", "5"], max=5.0)
    desc = with_column(
        desc, "malignant", type="categorical", min=None, max=None, categories=["no", "yes"]
    )
    desc["label_column"] = "age"
    assert mismatches(ratified, desc) == [
        "The dataset's label column “age” is not the problem's label column “malignant”.",
        "Column “age” has values up to 130, above the declared maximum 120.",
        "The required column “size” is not in the dataset.",
        "Column “grade” has categories the schema does not allow: 5.",
        "Column “malignant” has categories the schema does not allow: no, yes.",
    ]


def test_a_malformed_description_is_refused_whole(ratified):
    desc = {**description(), "site_key": "../etc/passwd", "sha256": "xyz", "rows": 3}
    messages = mismatches(ratified, desc)
    assert any("Unknown keys" in message and "rows" in message for message in messages)
    assert any("SHA-256" in message for message in messages)
    assert any("not a path" in message for message in messages)


# --- When registration is refused --------------------------------------------------------------


def test_registration_is_refused_before_ratification(scenario):
    scenario.propose()
    scenario.join()
    with pytest.raises(ApplicationError, match="Revision 1 of this problem is not ratified yet"):
        register(scenario, description())
    assert not Dataset.objects.exists()
    assert not events("dataset.registered")


def test_registration_is_refused_on_an_unratified_revision(ratified):
    features = copy.deepcopy(FEATURES)
    features[1]["max"] = 80
    services.problem_revise(
        actor=ratified.a.researcher,
        problem=ratified.problem,
        **{**DEFINITION, "features": features},
    )
    with pytest.raises(ApplicationError, match="Revision 2 of this problem is not ratified yet"):
        register(ratified, description())


def test_a_second_dataset_under_the_same_site_key_is_a_conflict(ratified):
    register(ratified, description("tumours.csv"))
    with pytest.raises(Conflict, match="already has a dataset registered under the site key"):
        register(ratified, description("tumours.csv", name="Again"))
    # Another key, or another institution with the same key, is fine.
    register(ratified, description("tumours-2026.csv"))
    register(ratified, description("tumours.csv"), site=ratified.b)
    assert Dataset.objects.count() == 3
    assert len(events("dataset.registered")) == 3


@pytest.mark.parametrize("who", ["a.researcher", "a.admin", "c.researcher", "b.viewer"])
def test_only_stewards_of_contributors_register(ratified, who):
    site, role = who.split(".")
    with pytest.raises(PermissionDenied):
        services.dataset_register(
            actor=getattr(getattr(ratified, site), role),
            problem=ratified.problem,
            **description(),
        )
    assert not Dataset.objects.exists()


def test_a_validators_steward_registers_held_out_data_that_never_trains(ratified):
    held_out = services.dataset_register(
        actor=ratified.c.steward, problem=ratified.problem, **description("holdout.csv")
    )
    assert held_out.purpose == Dataset.Purpose.HOLDOUT
    assert events("dataset.registered")[0].payload["purpose"] == "holdout"
    ratified.register()
    ratified.draft()
    ratified.approve()
    decision = services.run_policy_check(
        problem=ratified.refresh(),
        config=services.RunConfig(model_family="logistic_regression", min_contributors=2),
    )
    assert held_out not in [c.dataset for c in decision.contributors]
    assert ratified.c.institution not in [c.institution for c in decision.contributors]


# --- Withdrawing -------------------------------------------------------------------------------


def test_steward_withdraws_a_dataset(ready):
    dataset = Dataset.objects.get(institution=ready.b.institution)
    withdrawn = services.dataset_withdraw(
        actor=ready.b.steward, dataset=dataset, reason="Consent withdrawn by some patients."
    )
    assert withdrawn.status == Dataset.Status.WITHDRAWN
    assert withdrawn.withdrawn_at is not None
    (event,) = events("dataset.withdrawn")
    assert event.actor == ready.b.steward
    assert event.subject_institution == ready.b.institution
    assert event.payload == {
        "problem": "tumour-malignancy",
        "reason": "Consent withdrawn by some patients.",
    }
    assert ready.refresh().stage == Problem.Stage.RATIFIED  # one dataset left, two needed
    with pytest.raises(Conflict, match="already withdrawn"):
        services.dataset_withdraw(actor=ready.b.steward, dataset=dataset)
    # The key is free again.
    register(ready, description("harbour-hospital.csv"), site=ready.b)
    assert ready.refresh().stage == Problem.Stage.DATA_READY


def test_only_the_datasets_own_stewards_withdraw_it(ready):
    dataset = Dataset.objects.get(institution=ready.b.institution)
    for actor in (ready.a.steward, ready.b.admin, ready.b.researcher):
        with pytest.raises(PermissionDenied):
            services.dataset_withdraw(actor=actor, dataset=dataset)
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.ACTIVE


# --- A later revision re-checks the datasets --------------------------------------------------


def test_a_newly_ratified_revision_rechecks_the_datasets(scenario):
    scenario.propose()
    scenario.join()
    scenario.ratify()
    young = register(scenario, with_column(description("a.csv"), "age", max=70.0))
    old = register(scenario, description("b.csv"), site=scenario.b)  # ages up to 88
    scenario.draft()
    scenario.approve()
    scenario.keys()
    assert scenario.refresh().stage == Problem.Stage.DATA_READY

    features = copy.deepcopy(FEATURES)
    features[0]["max"] = 80
    services.problem_revise(
        actor=scenario.a.researcher,
        problem=scenario.problem,
        change_note="Adults under 80 only.",
        **{**DEFINITION, "features": features},
    )
    young.refresh_from_db()
    assert young.revision == 1  # not re-checked until the revision is ratified
    assert not events("datasets.rechecked")
    scenario.ratify()

    young.refresh_from_db()
    old.refresh_from_db()
    assert young.revision == 2
    assert old.revision == 1
    assert old.status == Dataset.Status.ACTIVE
    (event,) = events("datasets.rechecked")
    assert event.actor == scenario.c.researcher  # the last ratification triggered it
    assert event.payload == {
        "revision": 2,
        "fit": [young.pk],
        "unfit": {
            str(old.pk): ["Column “age” has values up to 88, above the declared maximum 80."]
        },
    }
    problem = scenario.refresh()
    assert problem.stage == Problem.Stage.RATIFIED  # one fitting dataset, two needed
    decision = services.run_policy_check(
        problem=problem, config=RunConfig(model_family="logistic_regression", min_contributors=2)
    )
    assert [c.dataset for c in decision.contributors] == [young]
    assert [(e.institution, e.reason) for e in decision.excluded] == [
        (
            scenario.b.institution,
            "Harbour Hospital's dataset was checked against an older revision; it must be "
            "registered again.",
        )
    ]
    # Registering a fitting description again brings B back.
    services.dataset_withdraw(actor=scenario.b.steward, dataset=old)
    register(scenario, with_column(description("b.csv"), "age", max=79.0), site=scenario.b)
    assert scenario.refresh().stage == Problem.Stage.DATA_READY
