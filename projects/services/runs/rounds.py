"""A run's rounds: open the next one, close one at its deadline or when every site answered,
cancel a run.

The coordinator's state lives in the database. Celery carries the work (``projects.tasks`` on
the coordinator queue, ``projects.site_tasks`` on each site's queue) and every step here is
idempotent: a duplicate task finds the round already open or closed and does nothing, and the
reconciler (``reconcile``) picks up whatever a stopped coordinator or a lost message left.
"""

from dataclasses import replace
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.services.audit import audit_record
from portal.common.errors import Conflict
from projects.federation.protocol import DpSpec, sha256_hex
from projects.federation.secagg import SecAggFailure
from projects.models import Round, SiteRound, TrainingRun
from projects.permissions import can_cancel
from projects.services.policy import Exclusion, PolicyDecision, RunConfig, run_policy_check
from projects.services.privacy import budget_projections, budget_reason, privacy_spend_round
from projects.services.runs import secure
from projects.services.runs.closing import close_round, fail_run
from projects.services.runs.dispatch import new_nonce, publish_safely, round_messages, seal
from projects.services.runs.notices import run_finished_notify
from projects.services.runs.store import model_bytes, round_start_bytes
from projects.services.runs.watch import run_changed


def _within_budget(run: TrainingRun, decision: PolicyDecision) -> PolicyDecision:
    """The contributors whose dataset can afford one more round; the others left out, named.

    The launch checked the whole run against the ledger; other runs may have spent since.
    Too few left and the decision refuses, with each left-out dataset's figures.
    """
    raw = (run.spec or {}).get("dp")
    if not raw:
        return decision
    dp = DpSpec.from_json(raw)
    if dp.ceiling is None:
        return decision
    kept, excluded, reasons = [], list(decision.excluded), []
    for contributor in decision.contributors:
        projection = budget_projections(
            [contributor.dataset],
            dp=dp,
            batch_size=run.batch_size,
            epochs=run.local_epochs,
            rounds=1,
            validation_share=run.validation_share,
        )[0]
        if projection.allowed:
            kept.append(contributor)
        else:
            reason = budget_reason(projection)
            excluded.append(Exclusion(contributor.institution, reason))
            reasons.append(reason)
    if len(kept) < max(run.min_contributors, 2):
        return replace(decision, reasons=tuple(reasons) or decision.reasons)
    return replace(decision, contributors=tuple(kept), excluded=tuple(excluded))


def run_advance(run_id: int) -> Round | None:
    """Start the run's next round, after asking the agreement policy again; or do nothing.

    Nothing happens when the run has finished or a round is already open (a duplicate or late
    task). A refusal by the policy fails the run with every reason.
    """
    with transaction.atomic():
        return _open_next(run_id)


def _open_next(run_id: int, closed: Round | None = None) -> Round | None:
    """``run_advance`` inside the caller's transaction.

    ``closed``: the round the caller has just closed (successfully) with its run locked: the
    run, how many rounds succeeded and the model to start from are known without reading them
    again (the store's map of run models fills only on commit).
    """
    params = None
    if closed is not None:
        run = closed.run
        done = closed.number
        params = model_bytes(closed.model) if closed.model is not None else None
    else:
        run = (
            TrainingRun.objects.select_for_update(of=("self",))
            .select_related("problem", "agreement", "institution")
            .filter(pk=run_id)
            .order_by()  # the models' default orderings would join up to the problem
            .first()
        )
        if run is None or run.is_finished:
            return None
        statuses = list(
            Round.objects.filter(run_id=run.pk).order_by().values_list("status", flat=True)
        )
        if Round.Status.RUNNING in statuses:
            return None
        done = statuses.count(Round.Status.SUCCEEDED)
    if done >= run.rounds:
        return None
    if run.status == TrainingRun.Status.QUEUED:
        run.status = TrainingRun.Status.RUNNING
        run.started_at = timezone.now()
        run.save(update_fields=["status", "started_at"])
    decision = run_policy_check(
        problem=run.problem,
        config=RunConfig(
            model_family=run.model_family,
            min_contributors=run.min_contributors,
            secure_aggregation=run.secure_aggregation,
            strategy=run.strategy,
            agreement_version=run.agreement.number,
            dp_epsilon=(run.spec.get("dp") or {}).get("epsilon"),
            l2=run.l2,
            validation_share=run.validation_share,
            feature_scaling=run.feature_scaling,
        ),
    )
    if not decision.allowed:
        fail_run(run, list(decision.reasons), action="run.refused")
        return None
    decision = _within_budget(run, decision)
    if not decision.allowed:
        fail_run(run, list(decision.reasons), action="run.refused")
        return None
    number = done + 1
    now = timezone.now()
    round_ = Round.objects.create(
        run=run,
        number=number,
        started_at=now,
        deadline_at=now + timedelta(seconds=run.round_deadline),
        excluded=[
            {"institution": e.institution.slug, "name": e.institution.name, "reason": e.reason}
            for e in decision.excluded
        ],
    )
    if closed is None:  # else closing it has told the run's followers, in this transaction
        run_changed(run.pk)
    sites = SiteRound.objects.bulk_create(
        SiteRound(round=round_, institution=c.institution, dataset=c.dataset, nonce=new_nonce())
        for c in sorted(decision.contributors, key=lambda c: c.institution.slug)
    )
    audit_record(
        actor=None,
        action="round.started",
        target=run,  # a round's events name its run, so one filter finds the whole run
        subject_institution=run.institution,
        payload={
            "problem": run.problem.slug,
            "run": run.number,
            "round": number,
            "agreement_version": run.agreement.number,
            "sites": [s.institution.slug for s in sites],
            "datasets": {s.institution.slug: s.dataset.sha256 for s in sites},
            "excluded": round_.excluded,
        },
    )
    if run.secure_aggregation:
        for s in sites:  # the rows as the stages read them
            s.round = round_
        try:
            envelopes = secure.round_open(run, round_, sites)
        except SecAggFailure as exc:
            reason = secure.stage_text(exc.code, exc.detail)
            round_.status, round_.reason, round_.closed_at = Round.Status.FAILED, reason, now
            round_.save(update_fields=["status", "reason", "closed_at"])
            SiteRound.objects.filter(round=round_).update(status=SiteRound.Status.CANCELLED)
            fail_run(run, [reason])
            return round_
    else:
        if params is None:
            params = round_start_bytes(run, number)
        envelopes = seal(round_messages(run, round_, sites, sha256_hex(params)), params)
    # After commit: the round's rows are the record of what must be sent and by when; if
    # the broker is away, the reconciler sends it again and closes it at its deadline.
    transaction.on_commit(lambda: publish_safely(envelopes))
    return round_


def round_deadline(run_id: int, number: int) -> None:
    """The round's deadline passed: close it with what arrived, if it is still open."""
    with transaction.atomic():
        round_ = (
            Round.objects.select_for_update(of=("self", "run"))
            .select_related("run__problem", "run__institution", "run__agreement")
            .filter(run_id=run_id, number=number, status=Round.Status.RUNNING)
            .order_by()
            .first()
        )
        if round_ is None or round_.deadline_at > timezone.now():
            return  # closed already, or not due yet: the reconciler looks again
        if round_.run.secure_aggregation:
            rows = list(
                round_.sites.select_related("institution", "dataset").order_by("institution__slug")
            )
            goes_on = secure.stage_advance(round_, rows, at_deadline=True)
        else:
            goes_on = close_round(round_, at_deadline=True)
        if goes_on:  # closed with its run locked: the next round opens in the same transaction
            _open_next(run_id, round_)


def close_when_answered(run_id: int, number: int, round_id: int | None = None) -> bool:
    """Close the round if it is still open and every site answered, and open the next one in
    the same transaction; True if it closed.

    Checked again under the round's lock: a concurrent answer or the deadline may have closed
    it. One transaction for both steps: the next round's dispatch waits for one commit, not two,
    and a coordinator that stops between them leaves nothing half done (the reconciler advances
    a run whose next round was not opened all the same).
    """
    with transaction.atomic():
        # The round, then its run: the order every closing and cancelling takes them in.
        rounds = Round.objects.select_for_update(of=("self", "run")).select_related(
            "run__problem", "run__institution", "run__agreement"
        )
        if round_id is not None:
            rounds = rounds.filter(pk=round_id)
        else:
            rounds = rounds.filter(run_id=run_id, number=number)
        round_ = rounds.order_by().first()
        if round_ is None or round_.status != Round.Status.RUNNING:
            return False
        sites = list(round_.sites.select_related("institution").order_by("institution__slug"))
        if any(s.status == SiteRound.Status.DISPATCHED for s in sites):
            return False
        if close_round(round_, sites=sites):
            _open_next(run_id, round_)
        return True


def run_cancel(*, actor: AbstractBaseUser, run: TrainingRun) -> TrainingRun:
    """Stop a queued or running run; answers still on their way are ignored when they arrive."""
    if not can_cancel(actor, run):
        raise PermissionDenied(
            _("Only the launching institution's researchers and admins, or staff, cancel a run.")
        )
    with transaction.atomic():
        # The open round first, then the run: the order a closing round takes them in, so the
        # two never wait for each other. A round that closed meanwhile is no longer open here.
        open_rounds = list(
            Round.objects.select_for_update(of=("self",)).filter(
                run_id=run.pk, status=Round.Status.RUNNING
            )
        )
        run = (
            TrainingRun.objects.select_for_update(of=("self",))
            .select_related("problem")
            .get(pk=run.pk)
        )
        if run.is_finished:
            raise Conflict(
                _("This run has already finished (%(status)s).")
                % {"status": run.get_status_display().lower()}
            )
        now = timezone.now()
        for round_ in open_rounds:
            # What already left the sites spent its budget: the updates (or, in a secure
            # round, the masked inputs) that arrived before the cancellation.
            round_.run = run
            privacy_spend_round(
                round_=round_,
                sites=list(round_.sites.select_related("institution", "dataset")),
            )
            round_.status = Round.Status.CANCELLED
            round_.closed_at = now
            round_.reason = _("The run was cancelled.")
            round_.save(update_fields=["status", "closed_at", "reason"])
            round_.sites.filter(status=SiteRound.Status.DISPATCHED).update(
                status=SiteRound.Status.CANCELLED
            )
            round_.sites.exclude(update="").update(update="")  # a secure round's masked vectors
        run.status = TrainingRun.Status.CANCELLED
        run.cancelled_by = actor
        run.finished_at = now
        run.reasons = [_("Cancelled by %(who)s.") % {"who": actor.get_username()}]
        run.save(update_fields=["status", "cancelled_by", "finished_at", "reasons"])
        run_changed(run.pk)
        audit_record(
            actor=actor,
            action="run.cancelled",
            target=run,
            subject_institution=run.institution,
            payload={
                "problem": run.problem.slug,
                "run": run.number,
                "open_rounds": [r.number for r in open_rounds],
                "forged_answers": {r.number: r.forged for r in open_rounds if r.forged},
            },
        )
        run_finished_notify(run)
    return run
