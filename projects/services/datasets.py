"""Datasets: registering a site's dataset by its description, checking it against the schema."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.models import Membership, Role
from alliance.permissions import acting_membership
from alliance.services.audit import audit_record
from portal.common.errors import ApplicationError, Conflict
from projects.models import Dataset, Participation, Problem, ProblemRevision
from projects.permissions import require_dataset_steward
from projects.schema import description_clean, description_mismatches
from projects.services.common import require_problem_perm


def _registering(actor: AbstractBaseUser, problem: Problem) -> tuple[Membership, str]:
    """Who registers, and what for: a validator's steward its held-out data, a contributor's
    steward its training data (PermissionDenied for anyone else)."""
    membership = acting_membership(actor)
    validator = problem.participations.filter(
        institution=membership.institution,
        role=Participation.Role.VALIDATOR,
        status=Participation.Status.ACTIVE,
    ).exists()
    if validator and membership.role == Role.DATA_STEWARD:
        return membership, Dataset.Purpose.HOLDOUT
    return require_problem_perm(actor, "projects.register_dataset", problem), (
        Dataset.Purpose.TRAINING
    )


@transaction.atomic
def dataset_register(*, actor: AbstractBaseUser, problem: Problem, **description: Any) -> Dataset:
    """A participant's data steward registers a dataset by its description, and nothing more.

    A contributor's steward registers training data; a validator's steward registers the
    held-out data its site scores models on (``purpose`` holdout: it never trains).
    ``description`` is what ``manage.py describe_dataset`` prints at the site (name, site key,
    row count, SHA-256, columns with summaries, personal-data flag and legal basis, collection
    period). It is checked against the current ratified revision; every mismatch is named and
    nothing is stored unless all of it fits.
    """
    membership, purpose = _registering(actor, problem)
    problem = Problem.objects.select_for_update().get(pk=problem.pk)
    if not problem.is_ratified:
        raise ApplicationError(
            _(
                "Revision %(n)s of this problem is not ratified yet; datasets are checked "
                "against a ratified schema."
            )
            % {"n": problem.current_revision}
        )
    clean = description_clean(description)
    revision = ProblemRevision.objects.get(problem=problem, number=problem.current_revision)
    mismatches = description_mismatches(
        revision.features, label_column=revision.label_column, description=clean
    )
    if mismatches:
        raise ValidationError(mismatches)
    if Dataset.objects.filter(
        problem=problem,
        institution=membership.institution,
        site_key=clean["site_key"],
        status=Dataset.Status.ACTIVE,
    ).exists():
        raise Conflict(
            _(
                "%(institution)s already has a dataset registered under the site key "
                "%(key)s; withdraw it first to register a new one."
            )
            % {"institution": membership.institution.name, "key": clean["site_key"]}
        )
    dataset = Dataset.objects.create(
        problem=problem,
        institution=membership.institution,
        registered_by=actor,
        name=clean["name"],
        description=clean["description"],
        site_key=clean["site_key"],
        row_count=clean["row_count"],
        sha256=clean["sha256"],
        label_column=clean["label_column"] or "",
        columns=clean["columns"],
        collection_start=clean["collection_start"],
        collection_end=clean["collection_end"],
        personal_data=clean["personal_data"],
        legal_basis=clean["legal_basis"],
        revision=revision.number,
        purpose=purpose,
    )
    audit_record(
        actor=actor,
        action="dataset.registered",
        target=dataset,
        subject_institution=membership.institution,
        payload={
            "problem": problem.slug,
            "name": dataset.name,
            "site_key": dataset.site_key,
            "sha256": dataset.sha256,
            "row_count": dataset.row_count,
            "revision": revision.number,
            "personal_data": dataset.personal_data,
            "purpose": purpose,
        },
    )
    from projects.services.problems import problem_refresh_stage

    problem_refresh_stage(actor=actor, problem=problem)
    return dataset


@transaction.atomic
def dataset_withdraw(*, actor: AbstractBaseUser, dataset: Dataset, reason: str = "") -> Dataset:
    """A steward of the dataset's institution withdraws it: later rounds no longer use it."""
    require_dataset_steward(actor, dataset)
    dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
    if dataset.status != Dataset.Status.ACTIVE:
        raise Conflict(_("This dataset is already withdrawn."))
    dataset.status = Dataset.Status.WITHDRAWN
    dataset.withdrawn_at = timezone.now()
    dataset.save(update_fields=["status", "withdrawn_at"])
    audit_record(
        actor=actor,
        action="dataset.withdrawn",
        target=dataset,
        subject_institution=dataset.institution,
        payload={"problem": dataset.problem.slug, "reason": (reason or "").strip()[:2000]},
    )
    from projects.services.problems import problem_refresh_stage

    problem_refresh_stage(actor=actor, problem=dataset.problem)
    return dataset


def datasets_recheck(*, actor: AbstractBaseUser | None, problem: Problem) -> None:
    """Check the registered datasets against a newly ratified revision.

    A dataset whose description fits moves to the new revision; one that does not keeps its
    old revision number (and so stops counting as ready) until it is registered again.
    """
    revision = ProblemRevision.objects.get(problem=problem, number=problem.current_revision)
    stale = Dataset.objects.filter(
        problem=problem, status=Dataset.Status.ACTIVE, revision__lt=revision.number
    )
    fitting: list[int] = []
    unfit: dict[str, list[str]] = {}
    for dataset in stale:
        mismatches = description_mismatches(
            revision.features,
            label_column=revision.label_column,
            description={
                "label_column": dataset.label_column or None,
                "columns": dataset.columns,
                "row_count": dataset.row_count,
            },
        )
        if mismatches:
            unfit[str(dataset.pk)] = mismatches
        else:
            fitting.append(dataset.pk)
    if not fitting and not unfit:
        return
    Dataset.objects.filter(pk__in=fitting).update(revision=revision.number)
    audit_record(
        actor=actor,
        action="datasets.rechecked",
        target=problem,
        subject_institution=problem.proposer,
        payload={"revision": revision.number, "fit": fitting, "unfit": unfit},
    )
