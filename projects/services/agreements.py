"""Data-use agreements: drafting versions, stewards' decisions, taking effect, revocation."""

import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.utils.translation import gettext as _

from alliance.models import Role
from alliance.services.audit import audit_record
from portal.common.errors import ApplicationError, Conflict
from projects.models import (
    AgreementApproval,
    AgreementVersion,
    DownloadScope,
    FeatureScaling,
    ModelFamily,
    Participation,
    Problem,
)
from projects.models.agreement import LIMIT_DEFAULTS, canonical_terms, terms_sha256
from projects.services.common import notify, require_problem_perm

MAX_TEXT = 20000
# The most contributors a round may require: beyond any alliance, and within every integer column.
MAX_CONTRIBUTORS = 1000
# The bounds within which an agreement sets a run's limits.
MAX_L2_LIMIT = 100.0
MAX_VALIDATION_SHARE_LIMIT = 0.9


def contributor_ids(problem: Problem) -> set[int]:
    return set(
        problem.participations.filter(
            status=Participation.Status.ACTIVE, role=Participation.Role.CONTRIBUTOR
        ).values_list("institution_id", flat=True)
    )


def awaiting_approval(version: AgreementVersion) -> set[int]:
    """Active contributors without a standing approval of this version."""
    approved = set(
        version.approvals.filter(
            decision=AgreementApproval.Decision.APPROVED, revoked_at__isnull=True
        ).values_list("institution_id", flat=True)
    )
    return contributor_ids(version.problem) - approved


def _clean_terms(terms: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    purpose = (terms.get("purpose") or "").strip()
    if not purpose:
        errors["purpose"] = [_("State the purpose the data may be used for.")]
    clean["purpose"] = purpose[:MAX_TEXT]
    families = terms.get("model_families")
    if not isinstance(families, list | tuple) or not families:
        errors["model_families"] = [_("Permit at least one model family.")]
        families = []
    else:
        unknown = [f for f in families if f not in ModelFamily.values]
        if unknown:
            errors["model_families"] = [
                _("Unknown model families: %(unknown)s; choose from %(known)s.")
                % {"unknown": ", ".join(map(str, unknown)), "known": ", ".join(ModelFamily.values)}
            ]
    clean["model_families"] = sorted(set(f for f in families if f in ModelFamily.values))
    minimum = terms.get("min_contributors")
    if isinstance(minimum, str) and minimum.strip().isdigit():
        minimum = int(minimum)
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 2:
        errors["min_contributors"] = [_("At least 2 contributors per round.")]
        minimum = 2
    elif minimum > MAX_CONTRIBUTORS:
        errors["min_contributors"] = [
            _("At most %(n)s contributors per round.") % {"n": MAX_CONTRIBUTORS}
        ]
        minimum = 2
    clean["min_contributors"] = minimum
    for flag in ("secure_aggregation", "commercial_use"):
        value = terms.get(flag, False)
        if not isinstance(value, bool):
            errors[flag] = [_("Answer yes or no (true or false).")]
            value = False
        clean[flag] = value
    epsilon = terms.get("dp_max_epsilon")
    if epsilon in (None, ""):
        clean["dp_max_epsilon"] = None
    else:
        try:
            epsilon = float(epsilon)
            if not 0 < epsilon < float("inf"):
                raise ValueError
        except (TypeError, ValueError):
            errors["dp_max_epsilon"] = [
                _("The privacy ceiling is a positive epsilon, or empty when not required.")
            ]
            epsilon = None
        clean["dp_max_epsilon"] = epsilon
    scope = terms.get("download_scope")
    if scope not in DownloadScope.values:
        errors["download_scope"] = [
            _("Say who may download models: %(choices)s.")
            % {"choices": ", ".join(DownloadScope.values)}
        ]
    clean["download_scope"] = scope
    clean["revenue_sharing"] = (terms.get("revenue_sharing") or "").strip()[:MAX_TEXT]
    if clean["commercial_use"] and not clean["revenue_sharing"]:
        errors["revenue_sharing"] = [_("Say how revenue is shared when commercial use is allowed.")]
    expires = terms.get("expires_on")
    if isinstance(expires, str):
        try:
            expires = parse_date(expires)
        except ValueError:
            expires = None
    if not isinstance(expires, datetime.date) or isinstance(expires, datetime.datetime):
        errors["expires_on"] = [_("Give an expiry date (YYYY-MM-DD).")]
    elif expires <= timezone.localdate():
        errors["expires_on"] = [_("The expiry date must be in the future.")]
    clean["expires_on"] = expires
    clean["clauses"] = (terms.get("clauses") or "").strip()[:MAX_TEXT]
    _clean_limits(terms, clean, errors)
    unknown_fields = set(terms) - set(clean)
    if unknown_fields:
        errors["non_field_errors"] = [
            _("Unknown terms: %(fields)s.") % {"fields": ", ".join(sorted(unknown_fields))}
        ]
    if errors:
        raise ValidationError(errors)
    return clean


def _limit(value: Any, low: float, high: float) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if low <= value <= high else None


def _clean_limits(terms: dict[str, Any], clean: dict[str, Any], errors: dict[str, Any]) -> None:
    """The limits on a run's options; a term left out (or empty) takes its default."""
    for name, high, message in (
        ("max_l2", MAX_L2_LIMIT, _("The strongest L2 strength is a number from 0 to %(high)s.")),
        (
            "max_validation_share",
            MAX_VALIDATION_SHARE_LIMIT,
            _("The largest validation share is a number from 0 to %(high)s."),
        ),
    ):
        raw = terms.get(name)
        value = LIMIT_DEFAULTS[name] if raw in (None, "") else _limit(raw, 0.0, high)
        if value is None:
            errors[name] = [message % {"high": high}]
            value = LIMIT_DEFAULTS[name]
        clean[name] = value
    scalings = terms.get("feature_scalings")
    if scalings in (None, ""):
        scalings = LIMIT_DEFAULTS["feature_scalings"]
    if not isinstance(scalings, list | tuple) or not scalings:
        errors["feature_scalings"] = [_("Permit at least one feature scaling.")]
        scalings = LIMIT_DEFAULTS["feature_scalings"]
    elif any(s not in FeatureScaling.values for s in scalings):
        errors["feature_scalings"] = [
            _("Unknown feature scalings; choose from %(known)s.")
            % {"known": ", ".join(FeatureScaling.values)}
        ]
        scalings = LIMIT_DEFAULTS["feature_scalings"]
    clean["feature_scalings"] = sorted(set(scalings))


@transaction.atomic
def agreement_draft(
    *, actor: AbstractBaseUser, problem: Problem, change_note: str = "", **terms: Any
) -> AgreementVersion:
    """Write the next version of the problem's agreement; every contributor's steward decides.

    A version still awaiting approvals is withdrawn by the new one. The effective version (if
    any) stays effective until this one is approved by every contributor.
    """
    require_problem_perm(actor, "projects.change_problem", problem)
    clean = _clean_terms(terms)
    problem = Problem.objects.select_for_update().get(pk=problem.pk)
    versions = problem.agreements.all()
    effective = versions.filter(status=AgreementVersion.Status.EFFECTIVE).first()
    if effective is not None and effective.terms() == clean:
        raise ApplicationError(
            _("These are the terms of version %(n)s, already in effect.") % {"n": effective.number}
        )
    pending = versions.filter(status=AgreementVersion.Status.PENDING).first()
    if pending is not None:
        pending.status = AgreementVersion.Status.WITHDRAWN
        pending.ended_at = timezone.now()
        pending.save(update_fields=["status", "ended_at"])
        audit_record(
            actor=actor,
            action="agreement.withdrawn",
            target=pending,
            subject_institution=problem.proposer,
            payload={"problem": problem.slug, "version": pending.number},
        )
    number = (versions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
    digest = terms_sha256(canonical_terms(problem_slug=problem.slug, number=number, terms=clean))
    version = AgreementVersion.objects.create(
        problem=problem,
        number=number,
        terms_sha256=digest,
        created_by=actor,
        change_note=(change_note or "").strip()[:MAX_TEXT],
        **clean,
    )
    audit_record(
        actor=actor,
        action="agreement.amended" if effective else "agreement.drafted",
        target=version,
        subject_institution=problem.proposer,
        payload={
            "problem": problem.slug,
            "version": number,
            "terms_sha256": digest,
            "supersedes": effective.number if effective else None,
        },
    )
    notify(
        institution_ids=contributor_ids(problem),
        roles=[Role.DATA_STEWARD],
        template="agreement_to_approve",
        context={"problem": problem, "version": version, "path": version.get_absolute_url()},
    )
    return version


def _decidable(version: AgreementVersion, institution_id: int) -> None:
    # Who may decide first, then the version's state: a refusal must not reveal the state.
    if institution_id not in contributor_ids(version.problem):
        raise PermissionDenied(_("Only contributing institutions decide on the agreement."))
    if version.status in (AgreementVersion.Status.SUPERSEDED, AgreementVersion.Status.WITHDRAWN):
        raise Conflict(
            _("Version %(n)s is %(status)s; there is nothing to decide on it.")
            % {"n": version.number, "status": version.get_status_display().lower()}
        )


@transaction.atomic
def agreement_approve(
    *, actor: AbstractBaseUser, version: AgreementVersion, terms_sha256: str
) -> AgreementApproval:
    """A contributor's steward approves this exact version (identified by its terms' hash).

    Becoming effective is decided here: when the last contributor approves, the version
    supersedes the previous one in the same transaction. A contributor that joined after a
    version took effect approves the effective version to have its data covered.
    """
    version = (
        AgreementVersion.objects.select_for_update().select_related("problem").get(pk=version.pk)
    )
    membership = require_problem_perm(actor, "projects.approve_agreement", version.problem)
    _decidable(version, membership.institution_id)
    if (terms_sha256 or "").strip().lower() != version.terms_sha256:
        raise ApplicationError(
            _("These terms changed since you read them; reload version %(n)s and review it again.")
            % {"n": version.number}
        )
    approval = AgreementApproval.objects.filter(
        version=version, institution=membership.institution
    ).first()
    if approval is not None and approval.is_standing_approval:
        raise Conflict(
            _("%(institution)s has already approved version %(n)s.")
            % {"institution": membership.institution.name, "n": version.number}
        )
    if approval is None:
        approval = AgreementApproval(version=version, institution=membership.institution)
    approval.decision = AgreementApproval.Decision.APPROVED
    approval.decided_by = actor
    approval.decided_at = timezone.now()
    approval.terms_sha256 = version.terms_sha256
    approval.reason = ""
    approval.revoked_at = None
    approval.revoked_by = None
    approval.revoke_reason = ""
    approval.save()
    audit_record(
        actor=actor,
        action="agreement.approved",
        target=version,
        subject_institution=membership.institution,
        payload={
            "problem": version.problem.slug,
            "version": version.number,
            "terms_sha256": version.terms_sha256,
        },
    )
    agreement_check_effective(actor=actor, problem=version.problem)
    if version.status == AgreementVersion.Status.EFFECTIVE:
        # A late contributor's approval of the version in force can make the data ready.
        from projects.services.problems import problem_refresh_stage

        problem_refresh_stage(actor=actor, problem=version.problem)
    return approval


@transaction.atomic
def agreement_decline(
    *, actor: AbstractBaseUser, version: AgreementVersion, reason: str
) -> AgreementApproval:
    """A contributor's steward declines a pending version, saying why."""
    version = (
        AgreementVersion.objects.select_for_update().select_related("problem").get(pk=version.pk)
    )
    membership = require_problem_perm(actor, "projects.approve_agreement", version.problem)
    _decidable(version, membership.institution_id)
    if version.status != AgreementVersion.Status.PENDING:
        raise Conflict(
            _("Version %(n)s is already in effect; revoke your approval instead.")
            % {"n": version.number}
        )
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": [_("Say why, so that the terms can be amended.")]})
    approval, _created = AgreementApproval.objects.update_or_create(
        version=version,
        institution=membership.institution,
        defaults={
            "decision": AgreementApproval.Decision.DECLINED,
            "decided_by": actor,
            "decided_at": timezone.now(),
            "terms_sha256": version.terms_sha256,
            "reason": reason[:MAX_TEXT],
            "revoked_at": None,
            "revoked_by": None,
            "revoke_reason": "",
        },
    )
    audit_record(
        actor=actor,
        action="agreement.declined",
        target=version,
        subject_institution=membership.institution,
        payload={"problem": version.problem.slug, "version": version.number, "reason": reason},
    )
    notify(
        institution_ids=[version.problem.proposer_id],
        roles=[Role.ADMIN, Role.RESEARCHER],
        template="agreement_declined",
        context={
            "problem": version.problem,
            "version": version,
            "institution": membership.institution,
            "reason": reason,
            "path": version.get_absolute_url(),
        },
    )
    return approval


@transaction.atomic
def agreement_revoke(
    *, actor: AbstractBaseUser, version: AgreementVersion, reason: str
) -> AgreementApproval:
    """A steward withdraws the institution's approval: its data is out of every new round.

    The version stays in force for the others; everyone concerned is told.
    """
    version = (
        AgreementVersion.objects.select_for_update().select_related("problem").get(pk=version.pk)
    )
    membership = require_problem_perm(actor, "projects.approve_agreement", version.problem)
    approval = AgreementApproval.objects.filter(
        version=version, institution=membership.institution
    ).first()
    if approval is None or not approval.is_standing_approval:
        raise Conflict(
            _("%(institution)s has no standing approval of version %(n)s to revoke.")
            % {"institution": membership.institution.name, "n": version.number}
        )
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": [_("Say why the approval is revoked.")]})
    approval.revoked_at = timezone.now()
    approval.revoked_by = actor
    approval.revoke_reason = reason[:MAX_TEXT]
    approval.save(update_fields=["revoked_at", "revoked_by", "revoke_reason"])
    problem = version.problem
    audit_record(
        actor=actor,
        action="agreement.revoked",
        target=version,
        subject_institution=membership.institution,
        payload={"problem": problem.slug, "version": version.number, "reason": reason},
    )
    from projects.services.problems import problem_refresh_stage

    problem_refresh_stage(actor=actor, problem=problem)
    notify(
        institution_ids=problem.participations.filter(
            status__in=[Participation.Status.ACTIVE]
        ).values_list("institution_id", flat=True),
        roles=[Role.ADMIN, Role.DATA_STEWARD, Role.RESEARCHER],
        template="agreement_revoked",
        context={
            "problem": problem,
            "version": version,
            "institution": membership.institution,
            "reason": reason,
            "path": version.get_absolute_url(),
        },
    )
    return approval


def agreement_check_effective(*, actor: AbstractBaseUser | None, problem: Problem) -> None:
    """Make the pending version effective once every active contributor approves it.

    The previous effective version is superseded in the same transaction, so there is never a
    moment with two effective versions or none.
    """
    pending = (
        problem.agreements.select_for_update()
        .filter(status=AgreementVersion.Status.PENDING)
        .first()
    )
    if pending is None or not contributor_ids(problem) or awaiting_approval(pending):
        return
    now = timezone.now()
    previous = problem.agreements.filter(status=AgreementVersion.Status.EFFECTIVE).first()
    if previous is not None:
        previous.status = AgreementVersion.Status.SUPERSEDED
        previous.ended_at = now
        previous.save(update_fields=["status", "ended_at"])
    pending.status = AgreementVersion.Status.EFFECTIVE
    pending.effective_at = now
    pending.save(update_fields=["status", "effective_at"])
    audit_record(
        actor=actor,
        action="agreement.effective",
        target=pending,
        subject_institution=problem.proposer,
        payload={
            "problem": problem.slug,
            "version": pending.number,
            "terms_sha256": pending.terms_sha256,
            "supersedes": previous.number if previous else None,
        },
    )
    from projects.services.problems import problem_refresh_stage

    problem_refresh_stage(actor=actor, problem=problem)
    notify(
        institution_ids=problem.participations.filter(
            status=Participation.Status.ACTIVE
        ).values_list("institution_id", flat=True),
        roles=[Role.ADMIN, Role.DATA_STEWARD, Role.RESEARCHER],
        template="agreement_effective",
        context={"problem": problem, "version": pending, "path": pending.get_absolute_url()},
    )
