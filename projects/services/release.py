"""Release: a certified model version enters the alliance's registry under its agreement's terms.

Only the proposing institution's admins release, only a certified version, and only once. The
release records the agreement version whose terms govern the model (download scope, commercial
use, revenue sharing) and the SHA-256 of those terms, and is audited.
"""

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.models import Role
from alliance.permissions import acting_membership
from alliance.services.audit import audit_record
from portal.common.errors import ApplicationError, Conflict
from projects.models import Certification, ModelVersion, Problem, Release
from projects.services.stages import problem_advance_stage


def may_release(actor: AbstractBaseUser | None, model: ModelVersion) -> bool:
    """The proposing institution's admins."""
    if actor is None or not actor.is_authenticated:
        return False
    try:
        membership = acting_membership(actor, roles=(Role.ADMIN,))
    except PermissionDenied:
        return False
    return membership.institution_id == model.run.problem.proposer_id


@transaction.atomic
def model_release(*, actor: AbstractBaseUser, model: ModelVersion, note: str = "") -> Release:
    """Release a certified model version (the proposer's admins), recording the terms."""
    if not may_release(actor, model):
        raise PermissionDenied(_("Only the proposing institution's admins release a model."))
    model = (
        ModelVersion.objects.select_for_update().select_related("run__agreement").get(pk=model.pk)
    )
    certification = Certification.objects.filter(model=model).first()
    if certification is None or not certification.certified:
        raise ApplicationError(
            _("Only a certified model is released; this one is not certified.")
            if certification is not None
            else _("Only a certified model is released; the validators have not certified it.")
        )
    if Release.objects.filter(model=model).exists():
        raise Conflict(_("This model version is already released."))
    run = model.run
    agreement = run.agreement
    membership = acting_membership(actor, roles=(Role.ADMIN,))
    release = Release.objects.create(
        model=model,
        released_by=actor,
        institution=membership.institution,
        agreement=agreement,
        terms_sha256=agreement.terms_sha256,
        note=(note or "").strip()[:4000],
        released_at=timezone.now(),
    )
    audit_record(
        actor=actor,
        action="model.released",
        target=run,
        subject_institution=membership.institution,
        payload={
            "run": run.number,
            "round": model.round_number,
            "model_sha256": model.sha256,
            "agreement_version": agreement.number,
            "terms_sha256": agreement.terms_sha256,
            "download_scope": agreement.download_scope,
            "commercial_use": agreement.commercial_use,
            "revenue_sharing": agreement.revenue_sharing,
            "certified_on": certification.metric,
        },
    )
    problem_advance_stage(problem=Problem(pk=run.problem_id), to=Problem.Stage.RELEASED)
    return release
