"""Problems: proposing, editing, revising, ratifying, discussing; the lifecycle stage."""

import re
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.models import Role, Sector
from alliance.permissions import acting_membership
from alliance.services.audit import audit_record
from portal.common.errors import ApplicationError, Conflict
from projects.models import (
    AgreementVersion,
    Metric,
    Participation,
    Problem,
    ProblemComment,
    ProblemRevision,
    Ratification,
    TaskType,
)
from projects.permissions import problem_sync_permissions
from projects.schema import feature_schema_clean
from projects.services.common import notify, require_problem_perm

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
RESERVED_SLUGS = frozenset({"new"})  # /problems/new/ is the proposal form
CLASSIFICATION_METRICS = (Metric.ACCURACY, Metric.ROC_AUC, Metric.F1)
REGRESSION_METRICS = (Metric.RMSE, Metric.MAE)
DEFINITION_FIELDS = ("task_type", "label_column", "features", "metric", "threshold")
MAX_COMMENT = 5000

# Who proposes a problem for an institution.
PROPOSER_ROLES = (Role.ADMIN, Role.RESEARCHER)


def _clean_definition(
    *, task_type: str, label_column: str, features: Any, metric: str, threshold: Any
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The normalised definition of a revision, and every problem with it by field."""
    errors: dict[str, list[str]] = {}
    if task_type not in TaskType.values:
        errors["task_type"] = [
            _("Choose a task type: %(choices)s.") % {"choices": ", ".join(TaskType.values)}
        ]
    if metric not in Metric.values:
        errors["metric"] = [
            _("Choose a metric: %(choices)s.") % {"choices": ", ".join(Metric.values)}
        ]
    elif task_type == TaskType.REGRESSION and metric not in REGRESSION_METRICS:
        errors["metric"] = [_("A regression problem is measured by RMSE or MAE.")]
    elif task_type in (TaskType.BINARY, TaskType.MULTICLASS) and metric not in (
        CLASSIFICATION_METRICS
    ):
        errors["metric"] = [_("A classification problem is measured by accuracy, ROC AUC or F1.")]
    elif task_type == TaskType.MULTICLASS and metric == Metric.ROC_AUC:
        errors["metric"] = [_("ROC AUC is for binary problems; choose accuracy or F1.")]
    try:
        threshold = float(threshold)
        if threshold != threshold or threshold in (float("inf"), float("-inf")):
            raise ValueError
    except (TypeError, ValueError):
        errors["threshold"] = [_("The acceptance threshold must be a number.")]
    else:
        if metric in CLASSIFICATION_METRICS and not 0 < threshold <= 1:
            errors["threshold"] = [_("For this metric the threshold lies between 0 and 1.")]
        elif metric in REGRESSION_METRICS and threshold <= 0:
            errors["threshold"] = [_("For an error metric the threshold is a positive number.")]
    label_column = (label_column or "").strip()
    if not label_column:
        errors["label_column"] = [_("Name the label column.")]
    clean_features: list[dict] = []
    if task_type in TaskType.values and label_column:
        try:
            clean_features = feature_schema_clean(
                features, label_column=label_column, task_type=task_type
            )
        except ValidationError as exc:
            errors["features"] = list(exc.messages)
    definition = {
        "task_type": task_type,
        "label_column": label_column,
        "features": clean_features,
        "metric": metric,
        "threshold": threshold,
    }
    return definition, errors


def _clean_descriptive(fields: dict[str, Any], errors: dict[str, list[str]]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for name in ("title", "summary", "question"):
        if name in fields:
            value = (fields[name] or "").strip()
            if not value:
                errors[name] = [_("This field is required.")]
            clean[name] = value
    if "title" in clean and len(clean["title"]) > 200:
        errors["title"] = [_("Keep the title under 200 characters.")]
    if "sector" in fields:
        if fields["sector"] not in Sector.values:
            errors["sector"] = [_("Choose one of the alliance's sectors.")]
        clean["sector"] = fields["sector"]
    if "visibility" in fields:
        if fields["visibility"] not in Problem.Visibility.values:
            errors["visibility"] = [_("Choose listed or invitation only.")]
        clean["visibility"] = fields["visibility"]
    return clean


@transaction.atomic
def problem_propose(
    *,
    actor: AbstractBaseUser,
    slug: str,
    title: str,
    sector: str,
    summary: str,
    question: str,
    task_type: str,
    label_column: str,
    features: list[dict],
    metric: str,
    threshold: float,
    visibility: str = Problem.Visibility.LISTED,
    role: str = Participation.Role.CONTRIBUTOR,
) -> Problem:
    """A researcher or admin proposes a problem for their institution; revision 1 is written.

    The proposing institution takes part from the start in ``role`` (contributor by default).
    """
    membership = acting_membership(actor, roles=PROPOSER_ROLES)
    errors: dict[str, list[str]] = {}
    slug = (slug or "").strip().lower()
    if not SLUG_RE.match(slug) or len(slug) > 80:
        errors["slug"] = [_("Use lower-case letters, digits and hyphens (at most 80).")]
    elif slug in RESERVED_SLUGS:
        errors["slug"] = [_("%(slug)s is reserved by the portal; choose another.") % {"slug": slug}]
    descriptive = _clean_descriptive(
        {
            "title": title,
            "summary": summary,
            "question": question,
            "sector": sector,
            "visibility": visibility,
        },
        errors,
    )
    if role not in Participation.Role.values:
        errors["role"] = [_("Choose contributor, validator or observer.")]
    definition, definition_errors = _clean_definition(
        task_type=task_type,
        label_column=label_column,
        features=features,
        metric=metric,
        threshold=threshold,
    )
    errors.update(definition_errors)
    if errors:
        raise ValidationError(errors)
    if Problem.objects.filter(slug=slug).exists():
        raise Conflict(_("A problem with the slug %(slug)s already exists.") % {"slug": slug})
    problem = Problem.objects.create(
        slug=slug, proposer=membership.institution, proposed_by=actor, **descriptive
    )
    ProblemRevision.objects.create(problem=problem, number=1, created_by=actor, **definition)
    Participation.objects.create(
        problem=problem,
        institution=membership.institution,
        role=role,
        status=Participation.Status.ACTIVE,
        requested_by=actor,
        decided_by=actor,
        decided_at=problem.created_at,
    )
    problem_sync_permissions(problem)
    audit_record(
        actor=actor,
        action="problem.proposed",
        target=problem,
        subject_institution=membership.institution,
        payload={
            "slug": slug,
            "revision": 1,
            "visibility": problem.visibility,
            "proposer_role": role,
            "metric": definition["metric"],
            "threshold": definition["threshold"],
        },
    )
    return problem


@transaction.atomic
def problem_update(*, actor: AbstractBaseUser, problem: Problem, **fields: Any) -> Problem:
    """Edit the descriptive fields (title, sector, summary, question, visibility) in place.

    What models are held to is not editable here: that is a new revision.
    """
    require_problem_perm(actor, "projects.change_problem", problem)
    unknown = set(fields) - {"title", "sector", "summary", "question", "visibility"}
    if unknown:
        raise ApplicationError(
            _("These fields cannot be edited here: %(fields)s.") % {"fields": ", ".join(unknown)}
        )
    errors: dict[str, list[str]] = {}
    clean = _clean_descriptive(fields, errors)
    if errors:
        raise ValidationError(errors)
    problem = Problem.objects.select_for_update().get(pk=problem.pk)
    changes = {
        name: {"from": getattr(problem, name), "to": value}
        for name, value in clean.items()
        if getattr(problem, name) != value
    }
    if not changes:
        return problem
    for name, change in changes.items():
        setattr(problem, name, change["to"])
    problem.save()
    audit_record(
        actor=actor,
        action="problem.updated",
        target=problem,
        subject_institution=problem.proposer,
        payload={"changes": changes},
    )
    return problem


def current_revision(problem: Problem) -> ProblemRevision:
    return ProblemRevision.objects.get(problem=problem, number=problem.current_revision)


@transaction.atomic
def problem_revise(
    *,
    actor: AbstractBaseUser,
    problem: Problem,
    task_type: str,
    label_column: str,
    features: list[dict],
    metric: str,
    threshold: float,
    change_note: str = "",
) -> ProblemRevision:
    """Write revision N+1 of the definition; it needs every ratifier's approval again."""
    require_problem_perm(actor, "projects.change_problem", problem)
    definition, errors = _clean_definition(
        task_type=task_type,
        label_column=label_column,
        features=features,
        metric=metric,
        threshold=threshold,
    )
    if errors:
        raise ValidationError(errors)
    problem = Problem.objects.select_for_update().get(pk=problem.pk)
    previous = current_revision(problem)
    old = previous.definition()
    changed = [name for name in DEFINITION_FIELDS if old[name] != definition[name]]
    if not changed:
        raise ApplicationError(
            _("This is the same definition as revision %(n)s: nothing to ratify.")
            % {"n": previous.number}
        )
    revision = ProblemRevision.objects.create(
        problem=problem,
        number=previous.number + 1,
        created_by=actor,
        change_note=(change_note or "").strip(),
        **definition,
    )
    problem.current_revision = revision.number
    problem.save(update_fields=["current_revision", "updated_at"])
    audit_record(
        actor=actor,
        action="problem.revised",
        target=problem,
        subject_institution=problem.proposer,
        payload={"revision": revision.number, "previous": previous.number, "changed": changed},
    )
    problem_refresh_stage(actor=actor, problem=problem)
    notify(
        institution_ids=ratifier_ids(problem),
        roles=[Role.ADMIN, Role.RESEARCHER],
        template="revision_to_ratify",
        context={"problem": problem, "revision": revision, "path": revision.get_absolute_url()},
        skip=actor,
    )
    return revision


def ratifier_ids(problem: Problem) -> set[int]:
    """Institutions whose approval a revision needs: active contributors and validators."""
    return set(
        problem.participations.filter(
            status=Participation.Status.ACTIVE,
            role__in=[Participation.Role.CONTRIBUTOR, Participation.Role.VALIDATOR],
        ).values_list("institution_id", flat=True)
    )


def awaiting_ratification(problem: Problem) -> set[int]:
    """Ratifiers that have not yet approved the current revision."""
    done = set(
        Ratification.objects.filter(
            revision__problem=problem, revision__number=problem.current_revision
        ).values_list("institution_id", flat=True)
    )
    return ratifier_ids(problem) - done


@transaction.atomic
def problem_ratify(*, actor: AbstractBaseUser, problem: Problem, revision: int) -> Ratification:
    """The actor's institution approves revision ``revision``, which must be the current one."""
    membership = require_problem_perm(actor, "projects.ratify_problem", problem)
    problem = Problem.objects.select_for_update().get(pk=problem.pk)
    if revision != problem.current_revision:
        raise Conflict(
            _("Revision %(n)s is no longer current; read and ratify revision %(current)s.")
            % {"n": revision, "current": problem.current_revision}
        )
    current = current_revision(problem)
    if Ratification.objects.filter(revision=current, institution=membership.institution).exists():
        raise Conflict(
            _("%(institution)s has already ratified revision %(n)s.")
            % {"institution": membership.institution, "n": revision}
        )
    ratification = Ratification.objects.create(
        revision=current, institution=membership.institution, ratified_by=actor
    )
    audit_record(
        actor=actor,
        action="problem.revision_ratified",
        target=problem,
        subject_institution=problem.proposer,
        payload={"revision": revision, "institution": membership.institution.slug},
    )
    problem_recompute_ratification(actor=actor, problem=problem)
    return ratification


def problem_recompute_ratification(*, actor: AbstractBaseUser | None, problem: Problem) -> None:
    """Mark the current revision ratified once every ratifier approved it, or reopen it.

    Called after a ratification and after every change of participants: a new contributor
    must ratify too, and a departed one no longer holds the problem back.
    """
    from projects.services.datasets import datasets_recheck

    has_contributor = problem.participations.filter(
        status=Participation.Status.ACTIVE, role=Participation.Role.CONTRIBUTOR
    ).exists()
    complete = has_contributor and not awaiting_ratification(problem)
    if complete and problem.ratified_revision != problem.current_revision:
        problem.ratified_revision = problem.current_revision
        problem.save(update_fields=["ratified_revision", "updated_at"])
        audit_record(
            actor=actor,
            action="problem.ratified",
            target=problem,
            subject_institution=problem.proposer,
            payload={"revision": problem.current_revision},
        )
        datasets_recheck(actor=actor, problem=problem)
        notify(
            institution_ids=problem.participations.filter(
                status=Participation.Status.ACTIVE
            ).values_list("institution_id", flat=True),
            roles=[Role.ADMIN, Role.DATA_STEWARD, Role.RESEARCHER],
            template="problem_ratified",
            context={"problem": problem, "path": problem.get_absolute_url()},
        )
    elif not complete and problem.ratified_revision == problem.current_revision:
        problem.ratified_revision = None
        problem.save(update_fields=["ratified_revision", "updated_at"])
        audit_record(
            actor=actor,
            action="problem.ratification_reopened",
            target=problem,
            subject_institution=problem.proposer,
            payload={"revision": problem.current_revision},
        )
    problem_refresh_stage(actor=actor, problem=problem)


@transaction.atomic
def problem_comment(
    *, actor: AbstractBaseUser, problem: Problem, revision: int, body: str
) -> ProblemComment:
    """A participant adds a comment to the discussion of one revision."""
    membership = require_problem_perm(actor, "projects.comment_problem", problem)
    body = (body or "").strip()
    if not body:
        raise ValidationError({"body": [_("Write something before posting.")]})
    if len(body) > MAX_COMMENT:
        raise ValidationError(
            {"body": [_("Keep a comment under %(n)s characters.") % {"n": MAX_COMMENT}]}
        )
    target = ProblemRevision.objects.filter(problem=problem, number=revision).first()
    if target is None:
        raise ApplicationError(_("There is no revision %(n)s.") % {"n": revision})
    comment = ProblemComment.objects.create(
        revision=target, author=actor, institution=membership.institution, body=body
    )
    audit_record(
        actor=actor,
        action="problem.commented",
        target=problem,
        subject_institution=problem.proposer,
        payload={"revision": revision, "comment": comment.pk},
    )
    return comment


def effective_agreement(problem: Problem) -> AgreementVersion | None:
    return problem.agreements.filter(status=AgreementVersion.Status.EFFECTIVE).first()


def problem_refresh_stage(*, actor: AbstractBaseUser | None, problem: Problem) -> None:
    """Set the stage that the facts imply (proposed, ratified, data ready), auditing a change.

    Training, certified and released are set by later steps and kept while the data is ready.
    """
    if not problem.is_ratified:
        stage = Problem.Stage.PROPOSED
    else:
        # "Enough datasets" means what the policy check would let take part in a round.
        from projects.services.policy import eligible_contributors

        agreement = effective_agreement(problem)
        ready = (
            agreement is not None
            and not agreement_expired(agreement)
            and len(eligible_contributors(problem, agreement)[0]) >= agreement.min_contributors
        )
        stage = Problem.Stage.DATA_READY if ready else Problem.Stage.RATIFIED
    later = (Problem.Stage.TRAINING, Problem.Stage.CERTIFIED, Problem.Stage.RELEASED)
    if stage == Problem.Stage.DATA_READY and problem.stage in later:
        return
    if stage != problem.stage:
        previous = problem.stage
        problem.stage = stage
        problem.save(update_fields=["stage", "updated_at"])
        audit_record(
            actor=actor,
            action="problem.stage_changed",
            target=problem,
            subject_institution=problem.proposer,
            payload={"from": previous, "to": stage},
        )


def agreement_expired(agreement: AgreementVersion) -> bool:
    return agreement.expires_on < timezone.localdate()
