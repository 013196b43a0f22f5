"""A model version's file as an HTTP answer, the same for the portal's pages and the API."""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _

from projects.models import TrainingRun
from projects.permissions import download_refusal, may_download
from projects.services.runs import model_bytes


def model_file_response(user: Any, run: TrainingRun, round_number: int) -> HttpResponse:
    """A model version's ``.npy`` file as an attachment with its SHA-256, for the page and the
    API alike; PermissionDenied with the agreement's reason when the person may not have it."""
    if not may_download(user, run):
        raise PermissionDenied(download_refusal(run))
    model = run.models.filter(round_number=round_number).first()
    if model is None:
        raise Http404(
            _("Run %(n)s has no model after round %(r)s.") % {"n": run.number, "r": round_number}
        )
    model.run = run
    response = HttpResponse(model_bytes(model), content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(True, model.download_name)
    response["X-Content-SHA256"] = model.sha256
    return response
