"""Verify: a model version scored where the data lives, and certified against the ratified bar.

An evaluation is a signed task like a round's (``SiteMessage`` of kind ``validate`` for a
validator's held-out file, ``evaluate`` for a contributor's validation rows) and its answer a
signed ``SiteReply``, checked exactly as a training answer is before it touches a row. When
every validator asked about a version has answered (or was dropped at the deadline), the
ratified revision's metric and threshold decide the certification, audited with the figures.

A run that succeeds sends its final model to every contributor (the final model's own figures)
and every validator (certification) in the transaction that closes it; anyone taking part in
the problem may ask the validators about any stored version later.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F, OuterRef, Subquery
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.models import Role
from alliance.permissions import acting_membership
from alliance.services.audit import audit_record
from portal.common.errors import ApplicationError
from projects.federation.protocol import DatasetRef, Envelope, SiteMessage, SiteReply
from projects.models import (
    Certification,
    Dataset,
    Evaluation,
    Metric,
    ModelVersion,
    Participation,
    ProblemRevision,
    SiteKey,
    TrainingRun,
)
from projects.services.runs.dispatch import launched_text, new_nonce, publish_safely, round_task
from projects.services.runs.store import model_bytes


def scores_record(evaluation: Evaluation, scores: list[dict[str, float]]) -> dict[str, Any]:
    from projects.services.contributions import scores_record as record

    return record(evaluation, scores)


logger = logging.getLogger(__name__)

REQUEST_ROLES = (Role.ADMIN, Role.RESEARCHER, Role.DATA_STEWARD)


# --- Asking ---------------------------------------------------------------------------------


def _participants(run: TrainingRun, role: str) -> list[tuple[Any, Dataset]]:
    """Active participants in ``role`` with an active key and a dataset fit for the purpose."""
    holdout = role == Participation.Role.VALIDATOR
    purpose = Dataset.Purpose.HOLDOUT if holdout else Dataset.Purpose.TRAINING
    found = []
    for p in (
        run.problem.participations.filter(role=role, status=Participation.Status.ACTIVE)
        .select_related("institution")
        .order_by("institution__slug")
    ):
        dataset = (
            Dataset.objects.filter(
                problem=run.problem,
                institution=p.institution,
                status=Dataset.Status.ACTIVE,
                purpose=purpose,
            )
            .order_by("-created_at")
            .first()
        )
        keyed = SiteKey.objects.filter(
            institution=p.institution, status=SiteKey.Status.ACTIVE
        ).exists()
        if dataset is not None and keyed:
            found.append((p.institution, dataset))
    return found


def _message(
    evaluation: Evaluation,
    model: ModelVersion,
    *,
    params_sha256: str | None = None,
    candidates: tuple[int, ...] = (),
) -> SiteMessage:
    """An evaluation's task: the model it scores (or, for contributions, the candidates'
    sizes and the SHA-256 of their concatenation, ``params_sha256``)."""
    run = model.run
    slug = evaluation.institution.slug
    return SiteMessage(
        kind=evaluation.kind,
        run=run.pk,
        launched=launched_text(run),
        round=model.round_number,
        site=slug,
        ticket=evaluation.pk,
        nonce=evaluation.nonce,
        deadline=int(evaluation.deadline_at.timestamp()) + 1,
        dataset=DatasetRef(
            site_key=evaluation.dataset.site_key,
            sha256=evaluation.dataset.sha256,
            rows=evaluation.dataset.row_count,
        ),
        task=round_task(run, model.round_number, slug),
        params_sha256=params_sha256 or model.sha256,
        max_update_bytes=run.max_update_bytes,
        candidates=candidates,
    )


def evaluation_envelope(evaluation: Evaluation, model: ModelVersion) -> Envelope[SiteMessage]:
    """The signed task of one evaluation: the model to score, or every candidate model."""
    from portal.common.keys import portal_key
    from projects.services.contributions import score_envelope

    if evaluation.kind == Evaluation.Kind.SCORE:
        return score_envelope(evaluation)
    return Envelope.seal(_message(evaluation, model), portal_key(), model_bytes(model))


def send_evaluations(evaluations: list[Evaluation], model: ModelVersion) -> bool:
    """Sign and publish the evaluations' tasks (after commit); the reconciler resends."""
    if not evaluations:
        return True
    return publish_safely([evaluation_envelope(e, model) for e in evaluations])


def _ask(
    model: ModelVersion, pairs: list[tuple[Any, Dataset]], kind: str, actor: Any
) -> list[Evaluation]:
    """Create (or ask again) one evaluation per site; published once committed."""
    now = timezone.now()
    deadline = now + timedelta(seconds=model.run.round_deadline)
    asked = []
    for institution, dataset in pairs:
        evaluation, _created = Evaluation.objects.update_or_create(
            model=model,
            institution=institution,
            kind=kind,
            defaults={
                "dataset": dataset,
                "status": Evaluation.Status.DISPATCHED,
                "metrics": {},
                "rows": None,
                "reason_code": "",
                "reason": "",
                "nonce": new_nonce(),
                "requested_by": actor,
                "requested_at": now,
                "deadline_at": deadline,
                "answered_at": None,
                "resent_at": None,
                "resends": 0,
            },
        )
        evaluation.institution = institution
        evaluation.dataset = dataset
        asked.append(evaluation)
    transaction.on_commit(lambda: send_evaluations(asked, model))
    return asked


def final_evaluations(run: TrainingRun, model: ModelVersion) -> None:
    """The run just succeeded (caller's transaction): score its final model everywhere.

    Contributors score it on their validation rows (the model's own figures), unless the run
    kept none (validation share 0); validators on their held-out files (its certification).
    """
    contributors = (
        _participants(run, Participation.Role.CONTRIBUTOR) if run.validation_share > 0 else []
    )
    validators = _participants(run, Participation.Role.VALIDATOR)
    _ask(model, contributors, Evaluation.Kind.EVALUATE, None)
    _ask(model, validators, Evaluation.Kind.VALIDATE, None)
    audit_record(
        actor=None,
        action="model.evaluation_requested",
        target=run,
        subject_institution=run.institution,
        payload={
            "run": run.number,
            "round": model.round_number,
            "model_sha256": model.sha256,
            "contributors": [i.slug for i, _d in contributors],
            "validators": [i.slug for i, _d in validators],
        },
    )


def may_request_validation(actor: AbstractBaseUser | None, run: TrainingRun) -> bool:
    if actor is None or not actor.is_authenticated:
        return False
    if actor.is_staff:
        return True
    try:
        membership = acting_membership(actor, roles=REQUEST_ROLES)
    except PermissionDenied:
        return False
    return run.problem.participations.filter(
        institution=membership.institution, status=Participation.Status.ACTIVE
    ).exists() or (run.problem.proposer_id == membership.institution_id)


@transaction.atomic
def validation_request(*, actor: AbstractBaseUser, model: ModelVersion) -> list[Evaluation]:
    """Ask every validator to score ``model`` on its held-out data (anyone taking part)."""
    run = model.run
    if not may_request_validation(actor, run):
        raise PermissionDenied(
            _("Only people of the institutions taking part in this problem ask for validation.")
        )
    validators = _participants(run, Participation.Role.VALIDATOR)
    if not validators:
        raise ApplicationError(
            _(
                "No validator can score this model: a validator needs a registered held-out "
                "dataset and an active site key."
            )
        )
    busy = model.evaluations.filter(
        kind=Evaluation.Kind.VALIDATE, status=Evaluation.Status.DISPATCHED
    ).exists()
    if busy:
        raise ApplicationError(_("The validators are scoring this model already."))
    asked = _ask(model, validators, Evaluation.Kind.VALIDATE, actor)
    audit_record(
        actor=actor,
        action="model.validation_requested",
        target=run,
        subject_institution=run.institution,
        payload={
            "run": run.number,
            "round": model.round_number,
            "model_sha256": model.sha256,
            "validators": [e.institution.slug for e in asked],
        },
    )
    return asked


# --- Answers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationDispatch:
    """What checking an evaluation's answer needs: one query's worth, like a round's."""

    pk: int
    status: str
    kind: str
    nonce: str
    run_id: int
    round_number: int
    slug: str
    rows: int
    created_at: datetime
    max_update_bytes: int
    max_update_norm: float
    public_key: str | None

    @property
    def launched(self) -> str:
        return self.created_at.isoformat()


def evaluation_dispatch(ticket: int) -> EvaluationDispatch | None:
    active_key = SiteKey.objects.filter(
        institution=OuterRef("institution"), status=SiteKey.Status.ACTIVE
    ).values("public_key")[:1]
    row = (
        Evaluation.objects.filter(pk=ticket)
        .order_by()
        .values(
            "pk",
            "status",
            "kind",
            "nonce",
            run_id=F("model__run_id"),
            round_number=F("model__round_number"),
            slug=F("institution__slug"),
            registered_rows=F("dataset__row_count"),
            created_at=F("model__run__created_at"),
            max_update_bytes=F("model__run__max_update_bytes"),
            max_update_norm=F("model__run__max_update_norm"),
            public_key=Subquery(active_key),
        )
        .first()
    )
    if row is None:
        return None
    row["rows"] = row.pop("registered_rows")
    return EvaluationDispatch(**row)


def evaluation_record(dispatch: EvaluationDispatch, reply: SiteReply) -> None:
    """Record a site's signed scores (or refusal); decide what follows once all have answered."""
    from projects.services.runs.answers import rejection_text
    from projects.services.runs.watch import run_changed

    fields: dict[str, Any] = {"answered_at": timezone.now()}
    if reply.error is not None:
        fields.update(
            status=Evaluation.Status.REFUSED,
            reason_code=reply.error.code[:32],
            reason=rejection_text(reply.error.code, dict(reply.error.detail))[:2000],
        )
    elif reply.kind == Evaluation.Kind.SCORE:
        evaluation = Evaluation.objects.select_related("model").get(pk=dispatch.pk)
        try:
            scores = scores_record(evaluation, [dict(s) for s in reply.scores])
        except (ValueError, KeyError):
            fields.update(
                status=Evaluation.Status.REFUSED,
                reason_code="malformed",
                reason=_("The site's answer did not score every candidate model."),
            )
        else:
            fields.update(status=Evaluation.Status.DONE, metrics=scores, rows=reply.sample_count)
    elif not 1 <= reply.sample_count <= dispatch.rows:
        fields.update(
            status=Evaluation.Status.REFUSED,
            reason_code="sample_count",
            reason=rejection_text(
                "sample_count", {"claimed": reply.sample_count, "registered": dispatch.rows}
            ),
        )
    else:
        fields.update(
            status=Evaluation.Status.DONE, metrics=dict(reply.metrics), rows=reply.sample_count
        )
    with transaction.atomic():
        if not Evaluation.objects.filter(
            pk=dispatch.pk, status=Evaluation.Status.DISPATCHED
        ).update(**fields):
            return  # late or repeated: the row keeps what it had
        evaluation = Evaluation.objects.select_related("model__run__problem").get(pk=dispatch.pk)
        _settle(evaluation.model, evaluation.kind)
        # The run's page shows the final model's figure once it is scored.
        run_changed(evaluation.model.run_id)


def evaluations_drop_overdue(now: datetime) -> int:
    """Evaluations past their deadline are dropped, and what waited on them is decided."""
    overdue = list(
        Evaluation.objects.filter(status=Evaluation.Status.DISPATCHED, deadline_at__lte=now)
        .select_related("model__run__problem")
        .order_by("pk")
    )
    for evaluation in overdue:
        with transaction.atomic():
            if Evaluation.objects.filter(
                pk=evaluation.pk, status=Evaluation.Status.DISPATCHED
            ).update(
                status=Evaluation.Status.DROPPED,
                reason=_("No answer before the deadline."),
                answered_at=now,
            ):
                _settle(evaluation.model, evaluation.kind)
    return len(overdue)


def _settle(model: ModelVersion, kind: str) -> None:
    """Once every evaluation of ``kind`` is final: the model's figures, or its certification."""
    rows = list(model.evaluations.filter(kind=kind).select_related("institution"))
    if any(e.status == Evaluation.Status.DISPATCHED for e in rows):
        return
    if kind == Evaluation.Kind.EVALUATE:
        metrics, count = weighted([(e.metrics, e.rows or 0) for e in rows if e.metrics])
        ModelVersion.objects.filter(pk=model.pk).update(metrics=metrics, evaluated_rows=count)
        return
    if kind == Evaluation.Kind.SCORE:
        from projects.services.contributions import contributions_decide

        contributions_decide(model)
        return
    certification_decide(model, rows)


def weighted(scores: list[tuple[dict[str, float], int]]) -> tuple[dict[str, float], int]:
    """Each metric averaged over sites, weighted by the rows each scored; and the rows."""
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    for metrics, rows in scores:
        for key, value in metrics.items():
            if key in ("validation_rows", "rows"):
                continue
            totals[key] = totals.get(key, 0.0) + rows * value
            weights[key] = weights.get(key, 0.0) + rows
    merged = {k: totals[k] / weights[k] for k in sorted(totals) if weights[k] > 0}
    return merged, sum(rows for _m, rows in scores)


# --- Certification ----------------------------------------------------------------------------


def certification_decide(model: ModelVersion, rows: list[Evaluation]) -> Certification:
    """Decide and record the version's certification from its validators' figures, audited."""
    run = model.run
    revision = ProblemRevision.objects.get(problem_id=run.problem_id, number=run.revision)
    metric, threshold = revision.metric, revision.threshold
    lower = Metric.lower_is_better(metric)
    figures: dict[str, dict[str, Any]] = {}
    reasons: list[str] = []
    for e in sorted(rows, key=lambda e: e.institution.slug):
        value = e.metrics.get(metric) if e.status == Evaluation.Status.DONE else None
        meets = value is not None and (value <= threshold if lower else value >= threshold)
        figures[e.institution.slug] = {
            "name": e.institution.name,
            "status": e.status,
            "value": value,
            "rows": e.rows,
            "gap": None if value is None else round(value - threshold, 6),
            "meets": meets,
        }
        if value is None:
            reasons.append(
                _("%(name)s gave no %(metric)s: %(why)s")
                % {
                    "name": e.institution.name,
                    "metric": metric,
                    "why": e.reason or e.get_status_display(),
                }
            )
        elif not meets:
            reasons.append(
                _("%(name)s measured %(metric)s %(value).4f, short of %(threshold)s.")
                % {
                    "name": e.institution.name,
                    "metric": metric,
                    "value": value,
                    "threshold": threshold,
                }
            )
    if not figures:
        reasons.append(_("No validator scored the model."))
    certified = not reasons
    certification, _created = Certification.objects.update_or_create(
        model=model,
        defaults={
            "certified": certified,
            "revision": revision.number,
            "metric": metric,
            "threshold": threshold,
            "lower_is_better": lower,
            "figures": figures,
            "reasons": reasons,
            "decided_at": timezone.now(),
        },
    )
    audit_record(
        actor=None,
        action="model.certified" if certified else "model.not_certified",
        target=run,
        subject_institution=run.institution,
        payload={
            "run": run.number,
            "round": model.round_number,
            "model_sha256": model.sha256,
            "revision": revision.number,
            "metric": metric,
            "threshold": threshold,
            "rule": "every validator meets the threshold",
            "figures": figures,
            "reasons": reasons,
        },
    )
    if certified:
        from projects.services.contributions import contribution_study_start
        from projects.services.stages import problem_advance_stage

        problem_advance_stage(problem=run.problem, to="certified")
        contribution_study_start(model, rows)
    return certification
