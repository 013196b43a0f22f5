"""Pages of a model version: its figures and verdict, its card, its release and its bundle.

Like the other pages they fetch through ``access_problem`` and ``problem_run``, call one
service and render. The card is served as a page, as Markdown and as JSON; the bundle (the
model, its card and the run's stretch of the audit chain) follows the agreement's download
scope, as the model file does.
"""

import csv
import json
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from portal.common.pages import REFUSALS, attempt, form_errors_from
from projects.models import (
    Certification,
    Contribution,
    ContributionStudy,
    Evaluation,
    ModelVersion,
    Release,
    TrainingRun,
)
from projects.permissions import access_problem, download_refusal, may_download
from projects.selectors import problem_run
from projects.services.bundle import bundle_bytes
from projects.services.model_card import model_card, model_card_markdown
from projects.services.release import may_release, model_release
from projects.services.verification import may_request_validation, validation_request


@dataclass(frozen=True)
class Verdict:
    """What a researcher reads first about a model version."""

    model: ModelVersion
    metric: str
    figures: list[tuple[str, float]]  # the model's own, the ratified metric first
    validations: list[Evaluation]
    certification: Certification | None
    release: Release | None
    scoring: bool  # validators still scoring it

    @property
    def headline(self) -> str:
        c = self.certification
        if c is None:
            if self.scoring:
                return _("The validators are scoring this model.")
            return _("No validator has scored this model yet.")
        if c.certified:
            parts = [
                _(
                    "%(metric)s %(value).4f %(op)s %(threshold)s on %(rows)s held-out rows "
                    "at %(name)s"
                )
                % {
                    "metric": c.metric.replace("_", " ").upper()
                    if c.metric == "roc_auc"
                    else c.metric,
                    "value": f["value"],
                    "op": "≤" if c.lower_is_better else "≥",
                    "threshold": c.threshold,
                    "rows": f["rows"],
                    "name": f["name"],
                }
                for f in c.figures.values()
            ]
            return _("Certified: %(figures)s.") % {"figures": "; ".join(parts)}
        return _("Not certified: %(reasons)s") % {"reasons": " ".join(c.reasons)}


def verdict_for(model: ModelVersion) -> Verdict:
    run = model.run
    metric = (run.spec or {}).get("metric", "")
    figures = sorted(
        ((k, v) for k, v in model.metrics.items() if isinstance(v, int | float)),
        key=lambda kv: (kv[0] != metric, kv[0]),
    )
    validations = list(
        model.evaluations.filter(kind=Evaluation.Kind.VALIDATE)
        .select_related("institution")
        .order_by("institution__name")
    )
    return Verdict(
        model=model,
        metric=metric,
        figures=figures,
        validations=validations,
        certification=Certification.objects.filter(model=model).first(),
        release=Release.objects.filter(model=model).select_related("released_by").first(),
        scoring=any(e.status == Evaluation.Status.DISPATCHED for e in validations),
    )


def final_verdict(run: TrainingRun) -> Verdict | None:
    """The verdict on a succeeded run's final model."""
    if run.status != TrainingRun.Status.SUCCEEDED:
        return None
    model = run.models.filter(round_number=run.rounds).first()
    if model is None:
        return None
    model.run = run
    return verdict_for(model)


def _model(request: HttpRequest, slug: str, number: int, round_number: int) -> ModelVersion:
    problem = access_problem(request.user, slug)
    run = problem_run(problem, number)
    model = run.models.filter(round_number=round_number).first()
    if model is None:
        raise Http404(
            _("Run %(n)s has no model after round %(r)s.") % {"n": number, "r": round_number}
        )
    model.run = run
    return model


def model_url(model: ModelVersion, name: str = "model-detail") -> str:
    run = model.run
    return reverse(name, args=[run.problem.slug, run.number, model.round_number])


@login_required
def model_detail(request: HttpRequest, slug: str, number: int, round_number: int) -> HttpResponse:
    model = _model(request, slug, number, round_number)
    run = model.run
    return render(
        request,
        "projects/model_detail.html",
        {
            "problem": run.problem,
            "run": run,
            "model": model,
            "verdict": verdict_for(model),
            "evaluations": list(
                model.evaluations.exclude(kind=Evaluation.Kind.SCORE)
                .select_related("institution")
                .order_by("kind", "institution__name")
            ),
            "study": ContributionStudy.objects.filter(model=model).first(),
            "contributions": list(
                Contribution.objects.filter(study__model=model)
                .select_related("institution")
                .order_by("-shapley")
            ),
            "may_request": may_request_validation(request.user, run),
            "may_release": may_release(request.user, model),
            "may_download": may_download(request.user, run),
        },
    )


@login_required
@require_POST
def model_validate(request: HttpRequest, slug: str, number: int, round_number: int) -> HttpResponse:
    model = _model(request, slug, number, round_number)
    attempt(
        request,
        lambda: validation_request(actor=request.user, model=model),
        _("The validators are asked to score this model on their held-out data."),
    )
    return redirect(model_url(model))


class ReleaseForm(forms.Form):
    note = forms.CharField(
        label=gettext_lazy("Release note"),
        required=False,
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=gettext_lazy("Optional: what this release is for, what changed."),
    )


@login_required
def model_release_page(
    request: HttpRequest, slug: str, number: int, round_number: int
) -> HttpResponse:
    model = _model(request, slug, number, round_number)
    if not may_release(request.user, model):
        raise PermissionDenied(_("Only the proposing institution's admins release a model."))
    form = ReleaseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            model_release(actor=request.user, model=model, note=form.cleaned_data["note"])
        except REFUSALS as exc:
            form_errors_from(form, exc)
        else:
            return redirect(model_url(model))
    agreement = model.run.agreement
    return render(
        request,
        "projects/model_release.html",
        {
            "problem": model.run.problem,
            "run": model.run,
            "model": model,
            "agreement": agreement,
            "verdict": verdict_for(model),
            "form": form,
        },
        status=400 if form.errors else 200,
    )


@login_required
def model_card_page(
    request: HttpRequest, slug: str, number: int, round_number: int, fmt: str = "html"
) -> HttpResponse:
    if fmt not in ("html", "md", "json"):
        raise Http404(_("A model card is served as a page, as Markdown (.md) or as JSON (.json)."))
    model = _model(request, slug, number, round_number)
    card = model_card(model)
    if fmt == "json":
        return JsonResponse(card, json_dumps_params={"indent": 2, "ensure_ascii": False})
    if fmt == "md":
        response = HttpResponse(
            model_card_markdown(card), content_type="text/markdown; charset=utf-8"
        )
        response["Content-Disposition"] = content_disposition_header(
            False, f"{model.download_name.removesuffix('.npy')}-card.md"
        )
        return response
    return render(
        request,
        "projects/model_card.html",
        {
            "problem": model.run.problem,
            "run": model.run,
            "model": model,
            "card": card,
            "card_json": json.dumps(card, indent=2, ensure_ascii=False),
        },
    )


@login_required
def model_contributions_csv(
    request: HttpRequest, slug: str, number: int, round_number: int
) -> HttpResponse:
    """Each contributor's share, with the agreement's revenue-sharing terms beside it."""
    model = _model(request, slug, number, round_number)
    study = ContributionStudy.objects.filter(model=model).first()
    if study is None or study.status != ContributionStudy.Status.MEASURED:
        raise Http404(_("No share has been measured for this model."))
    agreement = model.run.agreement
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = content_disposition_header(
        True, f"{model.download_name.removesuffix('.npy')}-contributions.csv"
    )
    writer = csv.writer(response)
    writer.writerow(
        ["institution", "shapley", "leave_one_out", "share", "rounds", "method", "metric"]
    )
    for c in study.contributions.select_related("institution").order_by("-shapley"):
        writer.writerow(
            [
                c.institution.slug,
                f"{c.shapley:.6f}",
                "" if c.leave_one_out is None else f"{c.leave_one_out:.6f}",
                "" if c.share is None else f"{c.share:.6f}",
                c.rounds,
                study.method,
                study.metric,
            ]
        )
    writer.writerow([])
    writer.writerow(["agreement_version", agreement.number])
    writer.writerow(["terms_sha256", agreement.terms_sha256])
    writer.writerow(["revenue_sharing", agreement.revenue_sharing or "none agreed"])
    return response


def model_bundle(request: HttpRequest, slug: str, number: int, round_number: int) -> HttpResponse:
    model = _model(request, slug, number, round_number)
    if not may_download(request.user, model.run):
        raise PermissionDenied(download_refusal(model.run))
    response = HttpResponse(bundle_bytes(model), content_type="application/zip")
    response["Content-Disposition"] = content_disposition_header(
        True, f"{model.download_name.removesuffix('.npy')}-bundle.zip"
    )
    return response


def verdict_context(run: TrainingRun) -> dict[str, Any]:
    return {"verdict": final_verdict(run)}
