"""Problems: proposing, editing, revising, ratifying and re-ratifying, discussing."""

import copy

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from alliance.models import AuditEvent
from alliance.tasks import email_send_task
from portal.common.errors import ApplicationError, Conflict
from projects import services
from projects.models import Participation, Problem, ProblemComment, ProblemRevision, Ratification
from tests.projects.scenario import DEFINITION, FEATURES, make_site

pytestmark = pytest.mark.django_db


def emails(callbacks: list) -> list[tuple[str, str, list[str]]]:
    """(subject, body, recipients) of every email a block scheduled for after its commit."""
    return [
        callback.args
        for callback in callbacks
        if getattr(callback, "func", None) == email_send_task.delay
    ]


def recipients(callbacks: list) -> set[str]:
    return {address for _subject, _body, to in emails(callbacks) for address in to}


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def revised_definition(**overrides) -> dict:
    """The scenario's definition with the age bound tightened (a change that needs ratifying)."""
    features = copy.deepcopy(FEATURES)
    features[0]["max"] = 110
    return {**DEFINITION, "features": features, **overrides}


# --- Proposing ---------------------------------------------------------------------------------


def test_researcher_proposes_a_problem_at_revision_one(scenario):
    problem = scenario.propose()
    assert problem.proposer == scenario.a.institution
    assert problem.proposed_by == scenario.a.researcher
    assert problem.stage == Problem.Stage.PROPOSED
    assert problem.current_revision == 1
    assert problem.ratified_revision is None
    revision = ProblemRevision.objects.get(problem=problem)
    assert revision.number == 1
    assert revision.label_column == "malignant"
    assert [c["name"] for c in revision.features] == ["age", "size", "grade", "malignant"]
    assert revision.features[0]["unit"] == "years"
    participation = scenario.participation(scenario.a)
    assert participation.status == Participation.Status.ACTIVE
    assert participation.role == Participation.Role.CONTRIBUTOR
    (event,) = events("problem.proposed")
    assert event.actor == scenario.a.researcher
    assert event.actor_institution == scenario.a.institution
    assert event.subject_institution == scenario.a.institution
    assert event.target_id == str(problem.pk)
    assert event.payload == {
        "slug": "tumour-malignancy",
        "revision": 1,
        "visibility": "listed",
        "proposer_role": "contributor",
        "metric": "roc_auc",
        "threshold": 0.9,
    }


def test_proposer_may_take_part_as_validator(scenario):
    scenario.propose(role="validator")
    assert scenario.participation(scenario.a).role == Participation.Role.VALIDATOR


@pytest.mark.parametrize("role", ["data_steward", "viewer"])
def test_only_admins_and_researchers_propose(scenario, role):
    actor = {"data_steward": scenario.a.steward, "viewer": scenario.a.viewer}[role]
    with pytest.raises(PermissionDenied):
        services.problem_propose(
            actor=actor,
            slug="x",
            title="X",
            sector="medicine",
            summary="S",
            question="Q",
            **DEFINITION,
        )
    assert not Problem.objects.exists()
    assert not AuditEvent.objects.exists()


def test_staff_cannot_propose(scenario, staff):
    with pytest.raises(PermissionDenied):
        services.problem_propose(
            actor=staff,
            slug="x",
            title="X",
            sector="medicine",
            summary="S",
            question="Q",
            **DEFINITION,
        )


def test_every_validation_error_is_reported_at_once(scenario):
    bad_features = [*copy.deepcopy(FEATURES), {"name": "notes", "type": "text"}]
    with pytest.raises(ValidationError) as info:
        services.problem_propose(
            actor=scenario.a.researcher,
            slug="Bad Slug!",
            title="Tumour malignancy",
            sector="medicine",
            summary="Predict malignancy.",
            question="Is it malignant?",
            task_type="multiclass",  # ROC AUC is for binary problems
            label_column="malignant",
            features=bad_features,
            metric="roc_auc",
            threshold=1.5,  # outside (0, 1]
        )
    errors = info.value.message_dict
    assert set(errors) == {"slug", "metric", "threshold", "features"}
    assert "lower-case letters" in errors["slug"][0]
    assert errors["metric"] == ["ROC AUC is for binary problems; choose accuracy or F1."]
    assert errors["threshold"] == ["For this metric the threshold lies between 0 and 1."]
    features = " ".join(errors["features"])
    assert "Column “notes”: the type must be “numeric” or “categorical”." in features
    assert "at least 3 categories" in features  # the binary label cannot be multiclass
    assert not Problem.objects.exists()
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    ("task_type", "metric", "threshold", "field", "message"),
    [
        ("regression", "accuracy", 0.5, "metric", "A regression problem is measured by RMSE"),
        ("binary", "rmse", 0.5, "metric", "A classification problem is measured by"),
        ("binary", "accuracy", 0, "threshold", "between 0 and 1"),
        ("binary", "f1", "high", "threshold", "must be a number"),
        ("binary", "auc", 0.5, "metric", "Choose a metric"),
    ],
)
def test_metric_must_fit_the_task_and_threshold_its_range(
    scenario, task_type, metric, threshold, field, message
):
    features = copy.deepcopy(FEATURES)
    if task_type == "regression":
        features[3] = {"name": "malignant", "type": "numeric", "min": 0, "max": 1}
    with pytest.raises(ValidationError) as info:
        scenario.propose(task_type=task_type, metric=metric, threshold=threshold, features=features)
    assert message in " ".join(info.value.message_dict[field])


def test_regression_threshold_is_a_positive_error(scenario):
    features = copy.deepcopy(FEATURES)
    features[3] = {"name": "malignant", "type": "numeric", "min": 0, "max": 1}
    with pytest.raises(ValidationError) as info:
        scenario.propose(task_type="regression", metric="rmse", threshold=-1, features=features)
    assert info.value.message_dict == {
        "threshold": ["For an error metric the threshold is a positive number."]
    }
    problem = scenario.propose(
        task_type="regression", metric="mae", threshold=3.5, features=features
    )
    assert ProblemRevision.objects.get(problem=problem).threshold == 3.5


def test_a_taken_slug_is_a_conflict(scenario):
    scenario.propose()
    with pytest.raises(Conflict, match="tumour-malignancy already exists"):
        services.problem_propose(
            actor=scenario.b.researcher,
            slug="Tumour-Malignancy",
            title="Another",
            sector="medicine",
            summary="S",
            question="Q",
            **DEFINITION,
        )
    assert Problem.objects.count() == 1
    assert len(events("problem.proposed")) == 1


# --- Editing the descriptive fields ------------------------------------------------------------


def test_proposer_edits_descriptive_fields_in_place(scenario):
    problem = scenario.propose()
    updated = services.problem_update(
        actor=scenario.a.admin,
        problem=problem,
        title="Tumour malignancy (biopsies)",
        summary=problem.summary,
        visibility="invitation",
    )
    assert updated.title == "Tumour malignancy (biopsies)"
    assert updated.visibility == Problem.Visibility.INVITATION
    assert updated.current_revision == 1
    (event,) = events("problem.updated")
    assert event.actor == scenario.a.admin
    assert event.payload == {
        "changes": {
            "title": {
                "from": "Tumour malignancy from biopsy features",
                "to": "Tumour malignancy (biopsies)",
            },
            "visibility": {"from": "listed", "to": "invitation"},
        }
    }


def test_an_edit_that_changes_nothing_is_not_audited(scenario):
    problem = scenario.propose()
    services.problem_update(actor=scenario.a.researcher, problem=problem, title=problem.title)
    assert not events("problem.updated")


def test_edit_refuses_definition_fields_and_bad_values(scenario):
    problem = scenario.propose()
    with pytest.raises(ApplicationError, match="cannot be edited here: threshold"):
        services.problem_update(actor=scenario.a.admin, problem=problem, threshold=0.5)
    with pytest.raises(ValidationError) as info:
        services.problem_update(actor=scenario.a.admin, problem=problem, title=" ", sector="x")
    assert set(info.value.message_dict) == {"title", "sector"}
    assert not events("problem.updated")


def test_only_the_proposer_edits(scenario):
    problem = scenario.propose()
    scenario.join()
    for actor in (scenario.b.admin, scenario.b.researcher, scenario.a.steward, scenario.a.viewer):
        with pytest.raises(PermissionDenied):
            services.problem_update(actor=actor, problem=problem, title="Hijacked")
    problem.refresh_from_db()
    assert problem.title == "Tumour malignancy from biopsy features"


# --- Revising ----------------------------------------------------------------------------------


def test_revision_writes_n_plus_one_and_asks_ratifiers_again(
    scenario, django_capture_on_commit_callbacks
):
    problem = scenario.propose()
    scenario.join()
    with django_capture_on_commit_callbacks() as callbacks:
        revision = services.problem_revise(
            actor=scenario.a.researcher,
            problem=problem,
            change_note="Nobody is older than 110 in our cohorts.",
            **revised_definition(threshold=0.92),
        )
    assert revision.number == 2
    assert revision.change_note == "Nobody is older than 110 in our cohorts."
    scenario.refresh()
    assert problem.current_revision == 2
    assert ProblemRevision.objects.get(problem=problem, number=1).features[0]["max"] == 120
    (event,) = events("problem.revised")
    assert event.actor == scenario.a.researcher
    assert event.payload == {"revision": 2, "previous": 1, "changed": ["features", "threshold"]}
    # Admins and researchers of every ratifier hear of it, except the author.
    assert recipients(callbacks) == {
        "north-hospital-admin@example.org",
        "harbour-hospital-admin@example.org",
        "harbour-hospital-researcher@example.org",
        "data-university-admin@example.org",
        "data-university-researcher@example.org",
    }
    subjects = {subject for subject, _body, _to in emails(callbacks)}
    assert subjects == {"Ratify revision 2 of Tumour malignancy from biopsy features"}


def test_a_revision_that_changes_nothing_is_refused(scenario):
    problem = scenario.propose()
    with pytest.raises(ApplicationError, match="same definition as revision 1"):
        services.problem_revise(actor=scenario.a.researcher, problem=problem, **DEFINITION)
    assert ProblemRevision.objects.filter(problem=problem).count() == 1
    assert not events("problem.revised")


def test_an_invalid_revision_is_refused_whole(scenario):
    problem = scenario.propose()
    with pytest.raises(ValidationError) as info:
        services.problem_revise(
            actor=scenario.a.researcher,
            problem=problem,
            **revised_definition(metric="rmse", label_column="nothing"),
        )
    assert set(info.value.message_dict) == {"metric", "features"}
    assert ProblemRevision.objects.filter(problem=problem).count() == 1


def test_only_the_proposer_revises(scenario):
    problem = scenario.propose()
    scenario.join()
    for actor in (scenario.b.researcher, scenario.c.admin, scenario.a.steward):
        with pytest.raises(PermissionDenied):
            services.problem_revise(actor=actor, problem=problem, **revised_definition())
    assert ProblemRevision.objects.filter(problem=problem).count() == 1


def test_revising_a_ratified_problem_sends_it_back_to_proposed(ready):
    assert ready.problem.stage == Problem.Stage.DATA_READY
    services.problem_revise(actor=ready.a.researcher, problem=ready.problem, **revised_definition())
    problem = ready.refresh()
    assert problem.stage == Problem.Stage.PROPOSED
    assert not problem.is_ratified
    stage_event = events("problem.stage_changed")[-1]
    assert stage_event.payload == {"from": "data_ready", "to": "proposed"}
    assert stage_event.actor == ready.a.researcher


# --- Ratifying ---------------------------------------------------------------------------------


def test_ratified_only_when_every_contributor_and_validator_ratified(
    scenario, django_capture_on_commit_callbacks
):
    problem = scenario.propose()
    scenario.join()
    observer = make_site("observer-lab", "Observer Lab")
    invitation = services.participation_invite(
        actor=scenario.a.admin, problem=problem, institution=observer.institution, role="observer"
    )
    services.participation_accept(actor=observer.admin, participation=invitation)

    services.problem_ratify(actor=scenario.a.researcher, problem=problem, revision=1)
    services.problem_ratify(actor=scenario.b.admin, problem=problem, revision=1)
    assert not scenario.refresh().is_ratified
    assert problem.stage == Problem.Stage.PROPOSED
    assert not events("problem.ratified")

    with django_capture_on_commit_callbacks() as callbacks:
        ratification = services.problem_ratify(
            actor=scenario.c.researcher, problem=problem, revision=1
        )
    assert ratification.institution == scenario.c.institution
    assert ratification.ratified_by == scenario.c.researcher
    problem = scenario.refresh()
    assert problem.is_ratified  # the observer was not needed
    assert problem.ratified_revision == 1
    assert problem.stage == Problem.Stage.RATIFIED

    ratified = events("problem.revision_ratified")
    assert [(e.actor, e.payload["institution"]) for e in ratified] == [
        (scenario.a.researcher, "north-hospital"),
        (scenario.b.admin, "harbour-hospital"),
        (scenario.c.researcher, "data-university"),
    ]
    assert ratified[0].payload["revision"] == 1
    (event,) = events("problem.ratified")
    assert event.actor == scenario.c.researcher
    assert event.payload == {"revision": 1}
    assert events("problem.stage_changed")[-1].payload == {"from": "proposed", "to": "ratified"}
    # Every active participant's admins, stewards and researchers are told (the observer too).
    told = recipients(callbacks)
    assert "observer-lab-steward@example.org" in told
    assert "harbour-hospital-steward@example.org" in told
    assert not any("viewer" in address for address in told)
    assert {subject for subject, _b, _t in emails(callbacks)} == {
        "Tumour malignancy from biopsy features is ratified"
    }


def test_observers_stewards_and_viewers_do_not_ratify(scenario):
    problem = scenario.propose()
    scenario.join()
    observer = make_site("observer-lab", "Observer Lab")
    invitation = services.participation_invite(
        actor=scenario.a.admin, problem=problem, institution=observer.institution, role="observer"
    )
    services.participation_accept(actor=observer.admin, participation=invitation)
    for actor in (observer.admin, scenario.b.steward, scenario.b.viewer):
        with pytest.raises(PermissionDenied):
            services.problem_ratify(actor=actor, problem=problem, revision=1)
    assert not Ratification.objects.exists()


def test_an_institution_ratifies_a_revision_once(scenario):
    problem = scenario.propose()
    scenario.join()
    services.problem_ratify(actor=scenario.b.admin, problem=problem, revision=1)
    with pytest.raises(Conflict, match="Harbour Hospital has already ratified revision 1"):
        services.problem_ratify(actor=scenario.b.researcher, problem=problem, revision=1)
    assert Ratification.objects.count() == 1


def test_a_problem_without_a_contributor_is_never_ratified(scenario):
    problem = scenario.propose(role="validator")
    services.problem_ratify(actor=scenario.a.researcher, problem=problem, revision=1)
    assert not scenario.refresh().is_ratified


def test_re_ratification_after_an_edit(scenario):
    problem = scenario.propose()
    scenario.join()
    scenario.ratify()
    assert scenario.refresh().ratified_revision == 1
    services.problem_revise(actor=scenario.a.researcher, problem=problem, **revised_definition())
    problem = scenario.refresh()
    assert not problem.is_ratified

    with pytest.raises(Conflict, match=r"Revision 1 is no longer current; .* revision 2"):
        services.problem_ratify(actor=scenario.b.researcher, problem=problem, revision=1)
    assert Ratification.objects.filter(revision__number=2).count() == 0

    services.problem_ratify(actor=scenario.a.researcher, problem=problem, revision=2)
    services.problem_ratify(actor=scenario.b.researcher, problem=problem, revision=2)
    assert not scenario.refresh().is_ratified  # the earlier ratifications do not carry over
    services.problem_ratify(actor=scenario.c.researcher, problem=problem, revision=2)
    problem = scenario.refresh()
    assert problem.is_ratified
    assert problem.ratified_revision == 2
    assert problem.stage == Problem.Stage.RATIFIED
    assert [e.payload for e in events("problem.ratified")] == [{"revision": 1}, {"revision": 2}]


def test_a_new_contributor_reopens_a_ratified_revision(scenario):
    problem = scenario.propose()
    scenario.join()
    scenario.ratify()
    newcomer = make_site("east-clinic", "East Clinic")
    services.participation_request(
        actor=newcomer.admin, problem=problem, role="contributor", message="We have 300 cases."
    )
    participation = Participation.objects.get(problem=problem, institution=newcomer.institution)
    services.participation_accept(actor=scenario.a.admin, participation=participation)
    problem = scenario.refresh()
    assert not problem.is_ratified
    assert problem.ratified_revision is None
    assert problem.stage == Problem.Stage.PROPOSED
    (event,) = events("problem.ratification_reopened")
    assert event.actor == scenario.a.admin
    assert event.payload == {"revision": 1}

    services.problem_ratify(actor=newcomer.researcher, problem=problem, revision=1)
    problem = scenario.refresh()
    assert problem.is_ratified
    assert problem.stage == Problem.Stage.RATIFIED


def test_a_new_observer_does_not_reopen_ratification(scenario):
    problem = scenario.propose()
    scenario.join()
    scenario.ratify()
    observer = make_site("observer-lab", "Observer Lab")
    invitation = services.participation_invite(
        actor=scenario.a.admin, problem=problem, institution=observer.institution, role="observer"
    )
    services.participation_accept(actor=observer.admin, participation=invitation)
    assert scenario.refresh().is_ratified
    assert not events("problem.ratification_reopened")


def test_a_ratifier_leaving_can_complete_ratification(scenario):
    problem = scenario.propose()
    scenario.join()
    services.problem_ratify(actor=scenario.a.researcher, problem=problem, revision=1)
    services.problem_ratify(actor=scenario.b.researcher, problem=problem, revision=1)
    assert not scenario.refresh().is_ratified
    services.participation_leave(
        actor=scenario.c.admin, problem=problem, reason="No held-out data."
    )
    problem = scenario.refresh()
    assert problem.is_ratified
    assert problem.stage == Problem.Stage.RATIFIED
    (event,) = events("problem.ratified")
    assert event.actor == scenario.c.admin
    assert event.payload == {"revision": 1}


# --- Discussing --------------------------------------------------------------------------------


def test_participants_comment_on_a_revision(scenario):
    problem = scenario.propose()
    scenario.join()
    comment = services.problem_comment(
        actor=scenario.b.steward, problem=problem, revision=1, body="  Is grade optional?  "
    )
    assert comment.body == "Is grade optional?"
    assert comment.institution == scenario.b.institution
    assert comment.revision.number == 1
    (event,) = events("problem.commented")
    assert event.actor == scenario.b.steward
    assert event.payload == {"revision": 1, "comment": comment.pk}


def test_comments_are_refused_when_empty_too_long_or_on_no_revision(scenario):
    problem = scenario.propose()
    with pytest.raises(ValidationError) as info:
        services.problem_comment(actor=scenario.a.researcher, problem=problem, revision=1, body=" ")
    assert info.value.message_dict == {"body": ["Write something before posting."]}
    with pytest.raises(ValidationError):
        services.problem_comment(
            actor=scenario.a.researcher, problem=problem, revision=1, body="x" * 5001
        )
    with pytest.raises(ApplicationError, match="There is no revision 7"):
        services.problem_comment(actor=scenario.a.researcher, problem=problem, revision=7, body="?")
    assert not ProblemComment.objects.exists()
    assert not events("problem.commented")


def test_only_participants_comment(scenario):
    problem = scenario.propose()  # B and C are not in it yet; the problem is listed
    for actor in (scenario.b.admin, scenario.a.viewer):
        with pytest.raises(PermissionDenied):
            services.problem_comment(actor=actor, problem=problem, revision=1, body="Hello")
    assert not ProblemComment.objects.exists()


def test_suspending_a_contributor_takes_the_data_readiness_away_and_back(ready, staff):
    from alliance.services import institution_reinstate, institution_suspend

    assert ready.refresh().stage == Problem.Stage.DATA_READY
    institution_suspend(actor=staff, institution=ready.b.institution, reason="Unpaid dues.")
    assert ready.refresh().stage == Problem.Stage.RATIFIED
    change = AuditEvent.objects.filter(action="problem.stage_changed").order_by("-seq").first()
    assert change.actor == staff
    assert change.payload == {"from": "data_ready", "to": "ratified"}
    institution_reinstate(actor=staff, institution=ready.b.institution, reason="Paid.")
    assert ready.refresh().stage == Problem.Stage.DATA_READY
