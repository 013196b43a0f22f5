"""Contribution accounting for benefit sharing: each contributor's share in a certified model.

When a version is certified, the coordinator rebuilds, round by round, the model each coalition
of that round's contributors would have produced from their stored updates
(``projects.federation.contribution``), and sends every such model, signed, to each validator
(a ``score`` task). The validators' scores of the ratified metric, weighted by their rows, are
the coalitions' utilities; each site's Shapley value is summed over the rounds, with
leave-one-out beside it. Where the agreement requires secure aggregation the updates were never
seen one by one: the study says so and measures nothing.
"""

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.models import Institution
from alliance.services.audit import audit_record
from portal.common.keys import portal_key
from projects.federation import contribution, encoding
from projects.federation.protocol import Envelope, SiteMessage, sha256_hex
from projects.models import (
    Contribution,
    ContributionStudy,
    Evaluation,
    Metric,
    ModelVersion,
    Round,
    SiteRound,
)
from projects.services.runs.dispatch import new_nonce, publish_safely
from projects.services.runs.store import blob_read, blob_store, model_bytes
from projects.services.verification import _message as evaluation_message

logger = logging.getLogger(__name__)

EXACT = "exact multi-round Shapley"
SAMPLED = "guided permutation sampling (GTG-Shapley)"
SAMPLES_PER_SITE = 6


def _plan(model: ModelVersion) -> dict[str, Any]:
    """Every round's coalitions and the model each would have produced, kept by SHA-256."""
    run = model.run
    rounds_plan = []
    candidates: dict[str, None] = {}
    for round_ in Round.objects.filter(
        run=run, number__lte=model.round_number, status=Round.Status.SUCCEEDED
    ).order_by("number"):
        sites = list(
            round_.sites.filter(status=SiteRound.Status.CONTRIBUTED)
            .select_related("institution")
            .order_by("institution__slug")
        )
        start = run.models.get(round_number=round_.number - 1).sha256
        candidates[start] = None
        updates = {
            s.institution.slug: (
                encoding.decode_params(blob_read(s.update_sha256)),
                float(s.sample_count or 0),
            )
            for s in sites
        }
        slugs = sorted(updates)
        if len(slugs) <= contribution.EXACT_LIMIT:
            coalitions = contribution.coalitions(slugs)
            perms: list[tuple[str, ...]] = []
        else:
            perms = contribution.guided_permutations(
                slugs, SAMPLES_PER_SITE * len(slugs), seed=run.seed + round_.number
            )
            coalitions = contribution.sampled_coalitions(perms)
        planned = []
        for coalition in coalitions:
            blob = encoding.encode_params(contribution.coalition_model(updates, coalition))
            sha = blob_store(blob, "coalitions")
            candidates[sha] = None
            planned.append([sorted(coalition), sha])
        rounds_plan.append(
            {
                "round": round_.number,
                "start": start,
                "sites": slugs,
                "coalitions": planned,
                "permutations": [list(p) for p in perms],
            }
        )
    return {"rounds": rounds_plan, "candidates": list(candidates)}


def _candidate_bytes(sha: str, model: ModelVersion) -> bytes:
    version = model.run.models.filter(sha256=sha).first()
    return model_bytes(version) if version is not None else blob_read(sha, "coalitions")


def score_envelope(evaluation: Evaluation) -> Envelope[SiteMessage]:
    """The signed ``score`` task of one validator: every candidate model, one after the other."""
    model = evaluation.model
    study = ContributionStudy.objects.get(model=model)
    blobs = [_candidate_bytes(sha, model) for sha in study.plan["candidates"]]
    attachment = b"".join(blobs)
    message = evaluation_message(
        evaluation,
        model,
        params_sha256=sha256_hex(attachment),
        candidates=tuple(len(b) for b in blobs),
    )
    return Envelope.seal(message, portal_key(), attachment)


def contribution_study_start(
    model: ModelVersion, validators: list[Evaluation]
) -> ContributionStudy:
    """A certified version (caller's transaction): plan its study and ask the validators."""
    run = model.run
    metric = (run.spec or {}).get("metric", "")
    if run.agreement.secure_aggregation:
        study, _created = ContributionStudy.objects.update_or_create(
            model=model,
            defaults={
                "method": "",
                "metric": metric,
                "plan": {},
                "status": ContributionStudy.Status.NOT_MEASURED,
                "reason": _(
                    "Agreement version %(n)s requires secure aggregation: no site's update was "
                    "ever seen alone, so no share can be measured from them."
                )
                % {"n": run.agreement.number},
                "decided_at": timezone.now(),
            },
        )
        return study
    plan = _plan(model)
    sizes = [len(r["sites"]) for r in plan["rounds"]]
    method = EXACT if max(sizes, default=0) <= contribution.EXACT_LIMIT else SAMPLED
    study, _created = ContributionStudy.objects.update_or_create(
        model=model,
        defaults={
            "method": method,
            "metric": metric,
            "plan": plan,
            "status": ContributionStudy.Status.SCORING,
            "reason": "",
            "decided_at": None,
        },
    )
    now = timezone.now()
    asked = []
    for done in validators:
        if done.status != Evaluation.Status.DONE:
            continue
        evaluation, _created = Evaluation.objects.update_or_create(
            model=model,
            institution=done.institution,
            kind=Evaluation.Kind.SCORE,
            defaults={
                "dataset": done.dataset,
                "status": Evaluation.Status.DISPATCHED,
                "metrics": {},
                "rows": None,
                "reason_code": "",
                "reason": "",
                "nonce": new_nonce(),
                "requested_by": None,
                "requested_at": now,
                "deadline_at": now + timedelta(seconds=max(run.round_deadline, 300)),
                "answered_at": None,
                "resent_at": None,
                "resends": 0,
            },
        )
        asked.append(evaluation)
    transaction.on_commit(lambda: send_scores(asked))
    return study


def send_scores(evaluations: list[Evaluation]) -> bool:
    if not evaluations:
        return True
    return publish_safely([score_envelope(e) for e in evaluations])


def scores_record(evaluation: Evaluation, scores: list[dict[str, float]]) -> dict[str, Any]:
    """The validator's scores, by candidate SHA-256, as an evaluation keeps them."""
    study = ContributionStudy.objects.get(model=evaluation.model)
    candidates = study.plan["candidates"]
    if len(scores) != len(candidates):
        raise ValueError("one score per candidate")
    return {sha: dict(s) for sha, s in zip(candidates, scores, strict=True)}


def contributions_decide(model: ModelVersion) -> ContributionStudy:
    """Every validator has answered (caller's transaction): measure and record the shares."""
    study = ContributionStudy.objects.select_for_update().get(model=model)
    scored = list(
        Evaluation.objects.filter(
            model=model, kind=Evaluation.Kind.SCORE, status=Evaluation.Status.DONE
        ).select_related("institution")
    )
    if not scored:
        study.status = ContributionStudy.Status.NOT_MEASURED
        study.reason = _("No validator scored the coalitions' models.")
        study.decided_at = timezone.now()
        study.save()
        return study
    sign = -1.0 if Metric.lower_is_better(study.metric) else 1.0

    def utility(sha: str) -> float:
        total = rows = 0.0
        for e in scored:
            figures = e.metrics[sha]
            weight = figures.get("rows", 1.0)
            total += weight * figures[study.metric]
            rows += weight
        return sign * total / rows

    shapley: dict[str, float] = {}
    loo: dict[str, float] = {}
    rounds: dict[str, int] = {}
    for r in study.plan["rounds"]:
        values = {frozenset(): utility(r["start"])}
        values.update({frozenset(sites): utility(sha) for sites, sha in r["coalitions"]})
        if r["permutations"]:
            round_values = contribution.shapley_sampled(r["sites"], r["permutations"], values)
        else:
            round_values = contribution.shapley_exact(r["sites"], values)
            for site, value in contribution.leave_one_out(r["sites"], values).items():
                loo[site] = loo.get(site, 0.0) + value
        for site, value in round_values.items():
            shapley[site] = shapley.get(site, 0.0) + value
            rounds[site] = rounds.get(site, 0) + 1
    positive = sum(v for v in shapley.values() if v > 0)
    institutions = {i.slug: i for i in Institution.objects.filter(slug__in=list(shapley))}
    study.contributions.all().delete()
    Contribution.objects.bulk_create(
        Contribution(
            study=study,
            institution=institutions[slug],
            shapley=value,
            leave_one_out=loo.get(slug),
            share=(value / positive) if positive > 0 and value > 0 else 0.0,
            rounds=rounds[slug],
        )
        for slug, value in sorted(shapley.items())
    )
    study.status = ContributionStudy.Status.MEASURED
    study.decided_at = timezone.now()
    study.save(update_fields=["status", "decided_at"])
    run = model.run
    audit_record(
        actor=None,
        action="model.contributions_measured",
        target=run,
        subject_institution=run.institution,
        payload={
            "run": run.number,
            "round": model.round_number,
            "model_sha256": model.sha256,
            "method": study.method,
            "metric": study.metric,
            "validators": sorted(e.institution.slug for e in scored),
            "candidates": len(study.plan["candidates"]),
            "shapley": {k: round(v, 6) for k, v in sorted(shapley.items())},
            "leave_one_out": {k: round(v, 6) for k, v in sorted(loo.items())},
        },
    )
    return study
