"""The privacy budget ledger as pages: an institution's datasets and what each has spent."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from projects.services.privacy import ledger_institution, privacy_ledger, privacy_ledger_dataset


@login_required
def privacy_ledger_page(request: HttpRequest) -> HttpResponse:
    institution = ledger_institution(request.user, request.GET.get("institution"))
    return render(
        request,
        "projects/privacy_ledger.html",
        {"institution": institution, "rows": privacy_ledger(institution)},
    )


@login_required
def privacy_dataset_page(request: HttpRequest, dataset_id: int) -> HttpResponse:
    institution = ledger_institution(request.user, request.GET.get("institution"))
    row, spends = privacy_ledger_dataset(institution, dataset_id)
    return render(
        request,
        "projects/privacy_dataset.html",
        {"institution": institution, "row": row, "spends": spends},
    )
