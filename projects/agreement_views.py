"""Pages of a problem's data-use agreement: its versions, a draft, a version as a document, two
versions compared, and the stewards' decisions (as ``views``: parse, fetch, call one service,
render; the services decide)."""

import datetime
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from portal.common.errors import error_text
from portal.common.pages import REFUSALS, attempt, form_errors_from
from projects import selectors, services
from projects.diff import TERMS, agreement_diff, word_changes
from projects.forms import (
    AgreementForm,
)
from projects.models import (
    AgreementVersion,
    DownloadScope,
    FeatureScaling,
    ModelFamily,
)
from projects.permissions import access_problem
from projects.schema import format_number
from projects.views import _actor


@login_required
def agreement_list(request: HttpRequest, slug: str) -> HttpResponse:
    problem = access_problem(request.user, slug)
    actor = _actor(request.user, problem)
    versions = selectors.agreement_versions(problem)
    contributors = selectors.active_contributors(selectors.problem_participations(problem))
    rows = [(v, selectors.standing_count(v, contributors)) for v in versions]
    return render(
        request,
        "projects/agreement_list.html",
        {
            "problem": problem,
            "rows": rows,
            "contributor_count": len(contributors),
            "can_draft": actor.may("projects.change_problem"),
        },
    )


def _draft_initial(latest: AgreementVersion | None) -> dict[str, Any]:
    if latest is not None:
        return latest.terms()
    return {
        "model_families": ["logistic_regression"],
        "min_contributors": 2,
        "download_scope": "participants",
        "expires_on": timezone.localdate() + datetime.timedelta(days=365),
    }


@login_required
def agreement_draft(request: HttpRequest, slug: str) -> HttpResponse:
    problem = access_problem(request.user, slug, perm="projects.change_problem")
    versions = selectors.agreement_versions(problem)
    latest = versions[0] if versions else None
    form = AgreementForm(request.POST or None, initial=_draft_initial(latest))
    if request.method == "POST" and form.is_valid():
        try:
            version = services.agreement_draft(
                actor=request.user,
                problem=problem,
                change_note=form.cleaned_data["change_note"],
                **form.terms(),
            )
        except REFUSALS as exc:
            form_errors_from(form, exc)
        else:
            messages.success(
                request,
                _(
                    "Version %(n)s is drafted. Each contributor's data stewards are asked to "
                    "read and approve it."
                )
                % {"n": version.number},
            )
            return redirect(version)
    return render(
        request,
        "projects/agreement_draft.html",
        {"problem": problem, "form": form, "latest": latest},
    )


def _agreement_context(request: HttpRequest, slug: str, number: int) -> dict[str, Any]:
    problem = access_problem(request.user, slug)
    version = selectors.agreement_get(problem, number)
    if version is None:
        raise Http404(_("No such agreement version."))
    participations = selectors.problem_participations(problem)
    return {
        "problem": problem,
        "version": version,
        "matrix": selectors.approval_rows(version, participations),
        "participations": participations,
        "families": [
            ModelFamily(value).label
            for value in version.model_families
            if value in ModelFamily.values
        ],
    }


@login_required
def agreement_detail(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    context = _agreement_context(request, slug, number)
    problem, version = context["problem"], context["version"]
    actor = _actor(request.user, problem)
    decides = actor.may("projects.approve_agreement") and actor.institution_id in (
        selectors.active_contributors(context["participations"])
    )
    own = next(
        (a for a in version.approvals.all() if a.institution_id == actor.institution_id), None
    )
    open_status = version.status in (
        AgreementVersion.Status.PENDING,
        AgreementVersion.Status.EFFECTIVE,
    )
    standing = own is not None and own.is_standing_approval
    effective = problem.agreements.filter(status=AgreementVersion.Status.EFFECTIVE).first()
    context.update(
        {
            # What an approval leads to: who else must still approve, which version it replaces.
            "others_awaiting": [
                row.institution.name
                for row in context["matrix"]
                if row.contributing
                and row.state != "approved"
                and row.institution.pk != actor.institution_id
            ],
            "effective_number": effective.number
            if effective is not None and effective.pk != version.pk
            else None,
            "can_approve": decides and open_status and not standing,
            "can_decline": decides
            and version.status == AgreementVersion.Status.PENDING
            and not (own is not None and own.decision == "declined" and own.revoked_at is None),
            "can_revoke": decides and standing,
            "my_institution": actor.membership.institution if actor.membership else None,
            "own": own,
            "can_draft": actor.may("projects.change_problem"),
        }
    )
    return render(request, "projects/agreement_detail.html", context)


@dataclass
class TermRow:
    """One term of two agreement versions side by side; text terms changed word by word."""

    label: str
    changed: bool
    old: str
    new: str
    words: list[tuple[str, str]] | None = None  # word_changes(old, new) for a changed text


# Terms that are prose, compared word by word; the others are values, compared whole.
PROSE_TERMS = ("purpose", "revenue_sharing", "clauses")


def _term_text(name: str, value: Any) -> str:
    """A term's value as the agreement's reader says it."""
    if name == "model_families":
        labels = dict(ModelFamily.choices)
        return ", ".join(str(labels.get(v, v)) for v in value or []) or "—"
    if name == "download_scope":
        return str(dict(DownloadScope.choices).get(value, value))
    if name == "feature_scalings":
        labels = dict(FeatureScaling.choices)
        return ", ".join(str(labels.get(v, v)) for v in value or []) or "—"
    if name in ("max_l2", "max_validation_share"):
        return format_number(float(value))
    if name == "dp_max_epsilon":
        return _("not required") if value is None else format_number(float(value))
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value) if value not in (None, "") else "—"


@login_required
def agreement_compare(request: HttpRequest, slug: str) -> HttpResponse:
    """Two versions of the agreement term by term (``?from=1&to=2``; by default the newest
    version and the one before it)."""
    problem = access_problem(request.user, slug)
    versions = {v.number: v for v in selectors.agreement_versions(problem)}
    context: dict[str, Any] = {"problem": problem, "numbers": sorted(versions)}
    if not versions:
        raise Http404(_("No agreement version yet."))
    try:
        to = int(request.GET.get("to") or max(versions))
        start = int(request.GET.get("from") or max(to - 1, 1))
    except ValueError:
        context["error"] = _("Versions are given by their numbers, for example ?from=1&to=2.")
        return render(request, "projects/agreement_compare.html", context, status=400)
    if start not in versions or to not in versions:
        raise Http404(_("No such agreement version."))
    old, new = versions[start], versions[to]
    diff = agreement_diff(old, new)
    changed = {f["field"] for f in diff["fields"]}
    old_terms, new_terms = old.terms(), new.terms()
    rows = []
    for name, label in TERMS.items():
        before, after = _term_text(name, old_terms[name]), _term_text(name, new_terms[name])
        rows.append(
            TermRow(
                label=str(label),
                changed=name in changed,
                old=before,
                new=after,
                words=word_changes(before, after)
                if name in changed and name in PROSE_TERMS
                else None,
            )
        )
    context.update({"old": old, "new": new, "rows": rows, "diff": diff})
    return render(request, "projects/agreement_compare.html", context)


@login_required
def agreement_print(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    return render(
        request, "projects/agreement_print.html", _agreement_context(request, slug, number)
    )


@login_required
@require_POST
def agreement_action(request: HttpRequest, slug: str, number: int, action: str) -> HttpResponse:
    problem = access_problem(request.user, slug)
    version = selectors.agreement_get(problem, number)
    if version is None:
        raise Http404(_("No such agreement version."))
    actor = request.user
    reason = request.POST.get("reason", "")
    if action == "approve":
        try:
            services.agreement_approve(
                actor=actor, version=version, terms_sha256=request.POST.get("terms_sha256", "")
            )
        except REFUSALS as exc:
            messages.error(request, error_text(exc))
        else:
            now = selectors.agreement_get(problem, number)
            if now is not None and now.status == AgreementVersion.Status.EFFECTIVE:
                messages.success(
                    request,
                    _("Your approval is recorded. Version %(n)s is in effect.") % {"n": number},
                )
            else:
                messages.success(
                    request,
                    _(
                        "Your approval is recorded. Version %(n)s takes effect once every "
                        "contributor has approved it."
                    )
                    % {"n": number},
                )
    elif action == "decline":
        attempt(
            request,
            lambda: services.agreement_decline(actor=actor, version=version, reason=reason),
            _("You declined version %(n)s; the proposer is told why.") % {"n": number},
        )
    elif action == "revoke":
        attempt(
            request,
            lambda: services.agreement_revoke(actor=actor, version=version, reason=reason),
            _(
                "Your approval of version %(n)s is revoked: your data is out of every new round, "
                "and everyone concerned is told."
            )
            % {"n": number},
        )
    else:
        raise Http404(_("Unknown action."))
    return redirect(version)
