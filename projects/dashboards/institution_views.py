"""The institution dashboard: what waits for us, our problems, our datasets and the runs that
used them, and our people, whom admins invite and manage from the same page."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _

from alliance import services as alliance_services
from alliance.forms import InviteForm, RoleForm
from alliance.permissions import has_object_perm, membership_of
from portal.common.pages import REFUSALS, form_errors_from
from projects.context_processors import pending_items
from projects.dashboards import parse_cursor
from projects.dashboards.institution import (
    PROBLEMS_SHOWN,
    RUNS_PER_PAGE,
    access_own_dataset,
    dataset_runs,
    institution_dataset_page,
    institution_figures,
    institution_problems,
    people_page_for,
)


def _cursor(request: HttpRequest, name: str) -> int | None:
    """The cursor ``name`` of the query string; a bad one is dropped, with a note."""
    try:
        return parse_cursor(request.GET.get(name))
    except ValueError:
        messages.warning(request, _("That page link is not valid; here is the first page instead."))
        return None


@login_required
def institution_dashboard(request: HttpRequest) -> HttpResponse:
    own = membership_of(request.user)
    if own is None:
        if request.user.is_staff:
            messages.info(
                request,
                _(
                    "Staff accounts belong to no institution; institutions are followed from "
                    "the staff overview."
                ),
            )
            return redirect("staff-overview")
        return render(request, "dashboards/institution.html", {"no_membership": True}, status=403)

    invite_form = InviteForm(request.POST or None)
    if request.method == "POST" and invite_form.is_valid():
        try:
            invited = alliance_services.member_invite(
                actor=request.user, **invite_form.cleaned_data
            )
        except REFUSALS as exc:
            form_errors_from(invite_form, exc)
        else:
            messages.success(
                request, _("Invitation sent to %(email)s.") % {"email": invited.user.email}
            )
            # The form posted to #invite: without a fragment of its own, the browser would keep
            # that one and show the form again, far below the confirmation.
            return redirect(reverse("my-institution") + "#messages")

    datasets_before = _cursor(request, "datasets_before")
    people_after = (request.GET.get("people_after") or "")[:150] or None
    institution_id = own.institution_id
    datasets, older_datasets = institution_dataset_page(institution_id, before=datasets_before)
    people, more_people = people_page_for(request.user, after=people_after)
    return render(
        request,
        "dashboards/institution.html",
        {
            "institution": own.institution,
            "membership": own,
            "waiting": pending_items(request),
            "figures": institution_figures(institution_id),
            "stakes": institution_problems(institution_id),
            "problems_shown": PROBLEMS_SHOWN,
            "usages": dataset_runs(datasets),
            "datasets_before": datasets_before,
            "older_datasets": older_datasets,
            "people": people,
            "people_after": people_after,
            "more_people": more_people,
            "can_manage": has_object_perm(request.user, "alliance.manage_members", own.institution),
            "invite_form": invite_form,
            "role_form": RoleForm(),
        },
    )


@login_required
def institution_dataset_runs(request: HttpRequest, dataset_id: int) -> HttpResponse:
    """Every run that used one of our datasets, newest first, a page at a time."""
    dataset = access_own_dataset(request.user, dataset_id)
    before = _cursor(request, "before")
    (usage,) = dataset_runs([dataset], per_dataset=RUNS_PER_PAGE, before=before)
    return render(
        request,
        "dashboards/institution_dataset_runs.html",
        {"dataset": dataset, "usage": usage, "before": before},
    )
