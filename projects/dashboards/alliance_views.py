"""The home page (public) and the alliance dashboard (every signed-in person)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from alliance import selectors as alliance_selectors
from alliance.permissions import membership_of
from projects.dashboards import alliance


def home(request: HttpRequest) -> HttpResponse:
    """What the alliance is, who is in it and what it has trained: aggregate counts only."""
    return render(
        request,
        "dashboards/home.html",
        {
            "summary": alliance.alliance_summary(),
            "directory": alliance_selectors.institution_directory_by_sector(),
        },
    )


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """The alliance at a glance, with the person's own membership and inbox on top.

    Staff without a membership see the same figures, with their console at hand.
    """
    weeks = alliance.weekly_activity()
    return render(
        request,
        "dashboards/alliance.html",
        {
            "membership": membership_of(request.user),
            "summary": alliance.alliance_summary(),
            "weeks": weeks,
            "activity_chart": alliance.activity_chart(weeks),
            "has_activity": any(w.runs_launched or w.rounds_completed for w in weeks),
            "models": alliance.latest_models_for(request.user),
            "activity": alliance.recent_activity_for(request.user),
        },
    )
