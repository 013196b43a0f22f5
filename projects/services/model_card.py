"""A model card generated from records, never typed by hand (Mitchell et al., FAT* 2019).

The card of a model version is built from the run, the problem's ratified revision, each
contributor's registered dataset, the agreement, the rounds, the evaluations and certification,
the release and the audit trail. It is served as a page, as Markdown and as JSON; the JSON is
also what a provenance bundle carries and what ``verify_bundle`` checks against the events.
"""

from typing import Any

from django.utils.translation import gettext as _

from alliance.models import AuditEvent
from projects.models import (
    Certification,
    ContributionStudy,
    Dataset,
    Evaluation,
    ModelVersion,
    ProblemRevision,
    Release,
    Round,
    TrainingRun,
)

CARD_SCHEMA = "fl-portal/model-card/v1"
# The run's events a card names as its provenance.
PROVENANCE_ACTIONS = (
    "run.launched",
    "round.started",
    "round.closed",
    "round.failed",
    "run.succeeded",
    "model.evaluation_requested",
    "model.validation_requested",
    "model.certified",
    "model.not_certified",
    "model.released",
)


def run_events(model: ModelVersion) -> list[AuditEvent]:
    """The run's audit events a card's provenance cites, in chain order."""
    return list(
        AuditEvent.objects.filter(
            target_type="projects.trainingrun",
            target_id=str(model.run_id),
            action__in=PROVENANCE_ACTIONS,
        ).order_by("seq")
    )


def _class_balance(dataset: Dataset) -> dict[str, Any] | None:
    label = next((c for c in dataset.columns if c.get("name") == dataset.label_column), None)
    if label is None:
        return None
    return {"categories": label.get("categories"), "counts": label.get("counts")}


def model_card(model: ModelVersion) -> dict[str, Any]:
    """The card of ``model`` as plain JSON-ready values."""
    run = model.run
    problem = run.problem
    revision = ProblemRevision.objects.get(problem=problem, number=run.revision)
    agreement = run.agreement
    rounds = list(
        Round.objects.filter(run=run, number__lte=max(model.round_number, 0))
        .order_by("number")
        .prefetch_related("sites__institution", "sites__dataset")
    )
    datasets: dict[int, Dataset] = {}
    for round_ in rounds:
        for site in round_.sites.all():
            datasets.setdefault(site.dataset_id, site.dataset)
    versions = {m.round_number: m for m in run.models.all()}
    validations = list(
        Evaluation.objects.filter(model=model, kind=Evaluation.Kind.VALIDATE)
        .select_related("institution", "dataset")
        .order_by("institution__slug")
    )
    certification = Certification.objects.filter(model=model).first()
    study = ContributionStudy.objects.filter(model=model).first()
    release = Release.objects.filter(model=model).select_related("released_by").first()
    events = run_events(model)
    metric = revision.metric
    final = dict(model.metrics)
    ordered_final = {k: final[k] for k in sorted(final, key=lambda k: (k != metric, k))}
    caveats = [
        _(
            "Figures measured at the contributors are on each site's own validation rows "
            "(a fifth of its data), weighted by those rows; sites' populations differ and a "
            "weighted average of ROC AUC is not the ROC AUC of the pooled rows."
        ),
        _(
            "The held-out figures are those of the validators named here, on their files; they "
            "say nothing of populations none of them holds."
        ),
        _("No figure here was measured on data outside the alliance."),
    ]
    if any(r.status != Round.Status.SUCCEEDED for r in rounds):
        caveats.append(_("Some rounds did not succeed; see the evaluation per round."))
    dropped = sorted(
        {s.institution.slug for r in rounds for s in r.sites.all() if s.status == "dropped"}
    )
    if dropped:
        caveats.append(
            _("Sites that dropped out of at least one round: %(sites)s.")
            % {"sites": ", ".join(dropped)}
        )
    return {
        "schema": CARD_SCHEMA,
        "model_details": {
            "name": f"{problem.slug} run {run.number} model after round {model.round_number}",
            "problem": problem.slug,
            "run": run.number,
            "round": model.round_number,
            "sha256": model.sha256,
            "size_bytes": model.size,
            "created_at": model.created_at.isoformat(),
            "family": run.model_family,
            "family_options": run.family_options,
            "inputs": _inputs(run),
            "owners": sorted({d.institution.name for d in datasets.values()}),
        },
        "intended_use": {
            "question": problem.question,
            "summary": problem.summary,
            "sector": problem.sector,
            "purpose": agreement.purpose,
            "commercial_use": agreement.commercial_use,
            "download_scope": agreement.download_scope,
        },
        "data": [
            {
                "institution": d.institution.slug,
                "dataset": d.name,
                "rows": d.row_count,
                "sha256": d.sha256,
                "schema": [c.get("name") for c in d.columns],
                "label": d.label_column,
                "class_balance": _class_balance(d),
            }
            for d in sorted(datasets.values(), key=lambda d: d.institution.slug)
        ],
        "training": {
            "strategy": run.strategy,
            "strategy_options": run.strategy_options,
            "rounds": run.rounds,
            "local_epochs": run.local_epochs,
            "batch_size": run.batch_size,
            "learning_rate": run.learning_rate,
            "options": run.options,
            "seed": run.seed,
            "min_contributors": run.min_contributors,
            "agreement_version": agreement.number,
            "terms_sha256": agreement.terms_sha256,
            "revision": revision.number,
        },
        "evaluation": {
            "metric": metric,
            "threshold": revision.threshold,
            "final_model": ordered_final,
            "final_model_rows": model.evaluated_rows,
            "per_round": [
                {
                    "round": r.number,
                    "status": r.status,
                    "model_sha256": versions[r.number].sha256 if r.number in versions else None,
                    "started_from": r.global_metrics,
                    "local_updates": r.metrics,
                }
                for r in rounds
            ],
            "validators": [
                {
                    "institution": e.institution.slug,
                    "name": e.institution.name,
                    "status": e.status,
                    "metrics": e.metrics,
                    "rows": e.rows,
                    "dataset_sha256": e.dataset.sha256,
                }
                for e in validations
            ],
            "certified": certification.certified if certification else None,
            "certification": None
            if certification is None
            else {
                "rule": "every validator meets the threshold",
                "figures": certification.figures,
                "reasons": certification.reasons,
            },
        },
        "release": None
        if release is None
        else {
            "released_at": release.released_at.isoformat(),
            "released_by": release.released_by.get_username(),
            "agreement_version": release.agreement.number,
            "terms_sha256": release.terms_sha256,
            "download_scope": agreement.download_scope,
            "commercial_use": agreement.commercial_use,
            "revenue_sharing": agreement.revenue_sharing,
        },
        "contributions": None
        if study is None
        else {
            "status": study.status,
            "method": study.method,
            "metric": study.metric,
            "reason": study.reason,
            "shares": [
                {
                    "institution": c.institution.slug,
                    "shapley": c.shapley,
                    "leave_one_out": c.leave_one_out,
                    "share": c.share,
                }
                for c in study.contributions.select_related("institution").order_by("-shapley")
            ],
            "revenue_sharing": agreement.revenue_sharing,
        },
        "caveats": [str(c) for c in caveats],
        "provenance": {
            "model_sha256": model.sha256,
            "events": [{"seq": e.seq, "action": e.action, "hash": e.hash} for e in events],
        },
    }


def _inputs(run: TrainingRun) -> dict[str, Any]:
    """What the model reads, and how its inputs are scaled: what it needs to be applied."""
    spec = run.spec or {}
    scaling = spec.get("scaling", "ranges")
    inputs: dict[str, Any] = {"features": spec.get("features", []), "scaling": scaling}
    if scaling == "ranges":
        inputs["feature_ranges"] = spec.get("feature_ranges", [])
    elif scaling == "standardise":
        inputs["feature_stats"] = spec.get("feature_stats", [])
    return inputs


def _figures(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, int | float))


def _options_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(options.items())) or "-"


def model_card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown, section by section as Mitchell et al. lay it out."""
    d, u, t, e = card["model_details"], card["intended_use"], card["training"], card["evaluation"]
    lines = [
        f"# {_('Model card')}: {d['name']}",
        "",
        f"## {_('Model details')}",
        f"- {_('Family')}: {d['family']} {d['family_options']}",
        f"- SHA-256: `{d['sha256']}` ({d['size_bytes']} bytes)",
        f"- {_('Trained by')}: {', '.join(d['owners'])}",
        "",
        f"## {_('Intended use')}",
        f"- {_('Question')}: {u['question']}",
        f"- {_('Sector')}: {u['sector']}",
        f"- {_('Purpose under the agreement')}: {u['purpose']}",
        f"- {_('Commercial use')}: {_('allowed') if u['commercial_use'] else _('not allowed')}",
        "",
        f"## {_('Data')}",
    ]
    for item in card["data"]:
        lines.append(
            f"- {item['institution']}: {item['dataset']}, {item['rows']} {_('rows')}, "
            f"SHA-256 `{item['sha256']}`"
        )
    lines += [
        "",
        f"## {_('Training')}",
        f"- {t['strategy']} {t['strategy_options']}, {t['rounds']} {_('rounds')}, "
        f"{t['local_epochs']} {_('local epochs')}, {_('batch')} {t['batch_size']}, "
        f"{_('learning rate')} {t['learning_rate']}, {_('seed')} {t['seed']}",
        f"- {_('Options')}: {_options_text(t.get('options') or {})}",
        f"- {_('Agreement version')} {t['agreement_version']}, "
        f"{_('terms SHA-256')} `{t['terms_sha256']}`",
        "",
        f"## {_('Evaluation')}",
        f"- {_('Ratified metric')}: {e['metric']} {_('at least') if e['metric'] not in ('rmse', 'mae') else _('at most')} {e['threshold']}",  # noqa: E501
        f"- {_('This model on the contributors validation rows')}: "
        f"{_figures(e['final_model']) or '-'} ({e['final_model_rows'] or 0} {_('rows')})",
    ]
    for v in e["validators"]:
        lines.append(
            f"- {_('Held out at')} {v['name']}: {_figures(v['metrics']) or v['status']} "
            f"({v['rows'] or 0} {_('rows')})"
        )
    if e["certified"] is not None:
        verdict = _("certified") if e["certified"] else _("not certified")
        lines.append(
            f"- {_('Verdict')}: **{verdict}** ({_('every validator meets the threshold')})"
        )
    lines += ["", f"| {_('round')} | {_('global model it started from')} | {_('local updates')} |"]
    lines.append("|---|---|---|")
    for r in e["per_round"]:
        lines.append(
            f"| {r['round']} | {_figures(r['started_from']) or '-'} | "
            f"{_figures(r['local_updates']) or '-'} |"
        )
    if card["release"]:
        r = card["release"]
        lines += [
            "",
            f"## {_('Release')}",
            f"- {_('Released')} {r['released_at']} {_('by')} {r['released_by']}, "
            f"{_('under agreement version')} {r['agreement_version']}",
            f"- {_('Downloads')}: {r['download_scope']}; {_('revenue sharing')}: "
            f"{r['revenue_sharing'] or '-'}",
        ]
    contributions = card.get("contributions")
    if contributions:
        lines += ["", f"## {_('Contributions')}"]
        if contributions["status"] == "measured":
            lines.append(f"- {_('Method')}: {contributions['method']} ({contributions['metric']})")
            for share in contributions["shares"]:
                lines.append(
                    f"- {share['institution']}: Shapley {share['shapley']:.4f}, "
                    f"{_('leave-one-out')} {share['leave_one_out'] if share['leave_one_out'] is None else round(share['leave_one_out'], 4)}"  # noqa: E501
                )
        else:
            lines.append(f"- {contributions['reason'] or contributions['status']}")
    lines += ["", f"## {_('Caveats')}"] + [f"- {c}" for c in card["caveats"]]
    lines += [
        "",
        f"## {_('Provenance')}",
        f"- {_('Model')} SHA-256 `{card['provenance']['model_sha256']}`",
    ]
    for event in card["provenance"]["events"]:
        lines.append(f"- #{event['seq']} {event['action']} `{event['hash']}`")
    return "\n".join(lines) + "\n"
