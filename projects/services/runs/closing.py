"""Closing a round: drop the silent sites, aggregate what counted, store and audit the model.

Runs inside the caller's transaction with the round locked. At the deadline, sites that have not
answered are dropped. With fewer contributions than the run's minimum the round and the run
fail; otherwise the contributions are aggregated in a fixed order (by institution), the new
global model is stored and the round audited, with the answers dropped as forged reported once.
"""

import time
from typing import Any

from django.db import connection
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.services.audit import audit_record
from projects.federation import encoding, secagg, strategies
from projects.models import ModelVersion, Round, SiteRound, TrainingRun
from projects.services.privacy import privacy_spend_round
from projects.services.runs.notices import run_finished_notify
from projects.services.runs.store import blob_store, model_store, round_start_bytes
from projects.services.runs.watch import run_changed
from projects.services.verification import final_evaluations, weighted


def update_sites(sites: list[SiteRound], fields: list[str]) -> None:
    """``SiteRound.objects.bulk_update(sites, fields)``: on PostgreSQL one ``UPDATE ... FROM
    (VALUES ...)`` written here, because the ORM's ``CASE WHEN`` statement took milliseconds of
    CPU to build for a round's few rows (each value is still prepared by its field)."""
    if not sites:
        return
    if connection.vendor != "postgresql":
        SiteRound.objects.bulk_update(sites, fields)
        return
    meta = SiteRound._meta
    quote = connection.ops.quote_name
    columns = [meta.get_field(name) for name in fields]
    row = ", ".join(
        [f"%s::{meta.pk.rel_db_type(connection)}"]
        + [f"%s::{c.db_type(connection)}" for c in columns]
    )
    names = ", ".join(quote(c.column) for c in columns)
    assignments = ", ".join(f"{quote(c.column)} = v.{quote(c.column)}" for c in columns)
    values = ", ".join([f"({row})"] * len(sites))
    params: list[Any] = []
    for s in sites:
        params.append(s.pk)
        params.extend(c.get_db_prep_save(getattr(s, c.attname), connection) for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} AS t SET {assignments}"
            f" FROM (VALUES {values}) AS v(id, {names}) WHERE t.id = v.id",
            params,
        )


def fail_run(run: TrainingRun, reasons: list[str], *, action: str = "run.failed") -> None:
    run.status = TrainingRun.Status.FAILED
    run.reasons = [str(r) for r in reasons]
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "reasons", "finished_at"])
    run_changed(run.pk)
    audit_record(
        actor=None,
        action=action,
        target=run,
        subject_institution=run.institution,
        payload={"problem": run.problem.slug, "run": run.number, "reasons": run.reasons},
    )
    run_finished_notify(run)


def weighted_metrics(sites: list[SiteRound]) -> dict[str, float]:
    """The sites' validation metrics, each weighted by the site's validation rows."""
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    for s in sites:
        w = float(s.metrics.get("validation_rows") or s.sample_count or 1)
        for key, value in s.metrics.items():
            if key == "validation_rows":
                continue
            totals[key] = totals.get(key, 0.0) + w * value
            weights[key] = weights.get(key, 0.0) + w
    return {k: totals[k] / weights[k] for k in sorted(totals) if weights[k] > 0}


def _report_forged(round_: Round) -> None:
    """One audit event for every answer the round dropped as not provably a site's own."""
    if not round_.forged:
        return
    audit_record(
        actor=None,
        action="round.forged_answers_dropped",
        target=round_.run,
        subject_institution=round_.run.institution,
        payload={
            "run": round_.run.number,
            "round": round_.number,
            "count": sum(round_.forged.values()),
            "by_reason": dict(sorted(round_.forged.items())),
        },
    )


def _timings(round_: Round, sites: list[SiteRound], contributed: list[SiteRound]) -> dict:
    timings = dict(round_.timings or {})
    started = round_.started_at.timestamp()
    for s in sites:
        sent = s.timings.pop("sent_at", None)
        if sent is not None:
            s.timings["dispatch"] = max(sent - started, 0.0)

    def slowest(key: str) -> float:
        return max((s.timings.get(key, 0.0) for s in contributed), default=0.0)

    timings.update(
        {
            "dispatch": slowest("dispatch"),
            "site_compute": slowest("compute"),
            "queue_wait": slowest("queue_wait"),
            "collection": slowest("return"),
        }
    )
    return timings


def _fail(round_: Round, summary: dict, reason: str, timings: dict) -> None:
    """The round failed (caller's transaction): so is the run, with the reason."""
    run = round_.run
    round_.status = Round.Status.FAILED
    round_.reason = reason
    round_.timings = timings
    round_.closed_at = timezone.now()
    round_.save()
    audit_record(
        actor=None,
        action="round.failed",
        target=round_.run,
        subject_institution=run.institution,
        payload={**summary, "reason": round_.reason},
    )
    fail_run(
        run,
        [_("Round %(n)s failed: %(reason)s") % {"n": round_.number, "reason": round_.reason}],
    )


def fail_round(round_: Round, sites: list[SiteRound], reason: str, *, secure: dict) -> None:
    """A secure round that cannot go on (caller's transaction): every site still in is
    dropped, the masked vectors are cleared, and the round and the run fail with ``reason``.

    The masked inputs that reached the coordinator left their sites with their DP-SGD noise in
    them: their datasets' budgets are charged all the same, although nothing was unmasked.
    """
    for s in sites:
        if s.status == SiteRound.Status.DISPATCHED:
            s.status = SiteRound.Status.DROPPED
            s.reason = reason
        s.update = ""
        s.secagg = {k: v for k, v in s.secagg.items() if k in ("advertise", "masked")}
    SiteRound.objects.bulk_update(sites, ["status", "reason", "update", "secagg"])
    privacy_spend_round(round_=round_, sites=sites)
    round_.secagg = {
        "stage": "failed",
        "seen": {k: secure[k] for k in ("advertised", "u2", "u3") if k in secure},
    }
    summary = {
        "problem": round_.run.problem.slug,
        "run": round_.run.number,
        "round": round_.number,
        "secure_aggregation": {"stage": secure.get("stage"), **round_.secagg["seen"]},
    }
    _fail(round_, summary, reason, dict(round_.timings or {}))


def close_round(
    round_: Round, *, at_deadline: bool = False, sites: list[SiteRound] | None = None
) -> bool:
    """Close the round (inside the caller's transaction, round locked); True if the run goes on.

    ``sites``: the round's site rows when the caller has just read them (under the lock).
    """
    t0 = time.time()
    run = round_.run
    now = timezone.now()
    if sites is None:
        sites = list(round_.sites.select_related("institution").order_by("institution__slug"))
    dropped = [s for s in sites if s.status == SiteRound.Status.DISPATCHED]
    for s in dropped:
        s.status = SiteRound.Status.DROPPED
        s.reason = _("No answer before the round's deadline.")
    if dropped:
        SiteRound.objects.bulk_update(dropped, ["status", "reason"])
    contributed = [s for s in sites if s.status == SiteRound.Status.CONTRIBUTED]
    summary = {
        "problem": run.problem.slug,
        "run": run.number,
        "round": round_.number,
        "contributed": [s.institution.slug for s in contributed],
        "dropped": [s.institution.slug for s in dropped],
        "rejected": {
            s.institution.slug: s.reason_code
            for s in sites
            if s.status == SiteRound.Status.REJECTED
        },
        "updates": {s.institution.slug: s.update_sha256 for s in contributed},
    }
    round_.contributors = len(contributed)
    # Every noisy update that left its site spent its dataset's budget, used or not (in a
    # secure round: every masked input that arrived, each with its site's noise inside).
    privacy_spend_round(round_=round_, sites=sites)
    timings = _timings(round_, sites, contributed)
    _report_forged(round_)
    if len(contributed) < run.min_contributors:
        reason = _(
            "Only %(count)s of the %(needed)s contributions the run needs arrived "
            "(%(dropped)s dropped at the deadline, %(rejected)s rejected)."
        ) % {
            "count": len(contributed),
            "needed": run.min_contributors,
            "dropped": len(dropped),
            "rejected": len(summary["rejected"]),
        }
        _fail(round_, summary, reason, timings)
        return False

    if run.secure_aggregation:
        from projects.services.runs.secure import unmasked_params

        try:
            mean, total, seen = unmasked_params(round_, contributed, sites)
        except secagg.SecAggFailure as exc:
            from projects.services.runs.secure import stage_text

            _fail(round_, summary, stage_text(exc.code, exc.detail), timings)
            return False
        round_.secagg = {"stage": "closed", "seen": seen}
        summary.pop("updates")
        summary["secure_aggregation"] = seen
        for s in sites:  # the shares served their purpose; the public keys stay on record
            s.secagg = {k: v for k, v in s.secagg.items() if k in ("advertise", "masked")}
    global_params = encoding.decode_params(round_start_bytes(run, round_.number))
    if run.secure_aggregation:
        # One result: the survivors' weighted mean and their total rows, which FedAvg, FedProx
        # and FedAdam treat as they would the sites' own parameters.
        results = [(mean, float(total))]
    else:
        results = [
            (encoding.decode_params(encoding.from_text(s.update)), float(s.sample_count))
            for s in contributed
        ]
    state = (
        encoding.decode_params(encoding.from_text(run.strategy_state))
        if run.strategy_state
        else None
    )
    params, state = strategies.aggregate(
        run.strategy, global_params, results, state, run.strategy_options
    )
    blob = encoding.encode_params(params)
    t1 = time.time()
    metrics = weighted_metrics(contributed)
    # The model this round started from, scored by every contributor before it trained: that
    # model's own figures, which its version keeps.
    global_metrics, scored_rows = weighted(
        [(s.global_metrics, int(s.global_metrics.get("validation_rows", 0))) for s in contributed]
    )
    round_.global_metrics = global_metrics
    if global_metrics:
        ModelVersion.objects.filter(run=run, round_number=round_.number - 1).update(
            metrics=global_metrics, evaluated_rows=scored_rows
        )
    model = model_store(run=run, round_number=round_.number, blob=blob, metrics={})
    if state is not None:
        run.strategy_state = encoding.to_text(encoding.encode_params(state))
    keep = not (run.agreement.secure_aggregation or run.secure_aggregation)
    for s in contributed:
        if keep:  # kept by its hash for contribution measurement, out of the round's row
            blob_store(encoding.from_text(s.update))
        s.update = ""
    # A plain round's rows have no secure-aggregation answers to trim.
    update_sites(
        sites, ["update", "timings", "secagg"] if run.secure_aggregation else ["update", "timings"]
    )
    round_.status = Round.Status.SUCCEEDED
    round_.metrics = metrics
    round_.model = model
    timings["aggregation"] = t1 - t0
    timings["persistence"] = time.time() - t1
    round_.timings = {k: round(v, 6) for k, v in timings.items()}
    # Closed once aggregated and stored: the round's wall time includes both.
    round_.closed_at = timezone.now()
    round_.save()
    run_changed(run.pk)
    audit_record(
        actor=None,
        action="round.closed",
        target=round_.run,
        subject_institution=run.institution,
        payload={
            **summary,
            "model_sha256": model.sha256,
            "local_update_metrics": metrics,
            "started_from_metrics": global_metrics,
            "at_deadline": at_deadline,
        },
    )
    fields = ["strategy_state"] if state is not None else []
    if round_.number >= run.rounds:
        run.status = TrainingRun.Status.SUCCEEDED
        run.finished_at = now
        fields += ["status", "finished_at"]
    if fields:
        run.save(update_fields=fields)
    if run.status == TrainingRun.Status.SUCCEEDED:
        audit_record(
            actor=None,
            action="run.succeeded",
            target=run,
            subject_institution=run.institution,
            payload={
                "problem": run.problem.slug,
                "run": run.number,
                "rounds": round_.number,
                "model_sha256": model.sha256,
                "local_update_metrics": metrics,
            },
        )
        final_evaluations(run, model)
        run_finished_notify(run)
        return False
    return True
