"""The audit trail explorer: filter, page by cursor, check the chain, export what is shown."""

import csv
import json
from collections.abc import Iterator
from datetime import datetime, time, timedelta

from django import forms
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.validators import RegexValidator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from alliance import selectors, services
from alliance.audit_display import payload_slugs
from alliance.models import AuditEvent
from portal.common.inputs import BIGINT_MAX
from portal.common.pages import form_error_text
from portal.common.spreadsheet import safe_row

# Query parameters that choose events; the cursor ones only choose the page.
FILTER_FIELDS = (
    "institution",
    "actor",
    "action",
    "target_type",
    "target_id",
    "target",
    "date_from",
    "date_to",
)


class AuditFilterForm(forms.Form):
    """The explorer's GET parameters; anything malformed is reported, never guessed at."""

    institution = forms.ChoiceField(label=gettext_lazy("Institution"), required=False)
    actor = forms.CharField(label=gettext_lazy("Actor (username)"), max_length=150, required=False)
    action = forms.ChoiceField(label=gettext_lazy("Action"), required=False)
    target_type = forms.CharField(
        label=gettext_lazy("Target type"),
        max_length=64,
        required=False,
        validators=[
            RegexValidator(
                r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$",
                gettext_lazy("Give a type as app.model, e.g. projects.trainingrun."),
            )
        ],
    )
    target_id = forms.CharField(label=gettext_lazy("Target id"), max_length=64, required=False)
    target = forms.CharField(
        label=gettext_lazy("Target name contains"), max_length=100, required=False
    )
    date_from = forms.DateField(label=gettext_lazy("From"), required=False)
    date_to = forms.DateField(label=gettext_lazy("To"), required=False)
    before = forms.IntegerField(
        label=gettext_lazy("Older than event"), min_value=1, max_value=BIGINT_MAX, required=False
    )
    after = forms.IntegerField(
        label=gettext_lazy("Newer than event"), min_value=0, max_value=BIGINT_MAX, required=False
    )

    def __init__(self, *args: object, actor: AbstractBaseUser | AnonymousUser, **kwargs: object):
        super().__init__(*args, **kwargs)
        # Plain lists, read once: they validate the choice and the template prints them as
        # options directly (Django's select widget renders a template per option: too slow
        # for a page that must answer within 100 ms).
        self.institution_options = list(
            selectors.audit_institution_choices(actor).values_list("pk", "slug", "name")
        )
        self.action_options = selectors.audit_action_list()
        self.fields["institution"].choices = [("", "")] + [
            (slug, name) for _pk, slug, name in self.institution_options
        ]
        self.fields["action"].choices = [("", "")] + [(a, a) for a in self.action_options]

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError(_("The “from” date must not be after the “to” date."))
        if data.get("before") is not None and data.get("after") is not None:
            raise forms.ValidationError(_("Page either before or after an event, not both."))
        return data

    def audit_filter(self) -> selectors.AuditFilter:
        data = self.cleaned_data
        ids = {slug: pk for pk, slug, _name in self.institution_options}
        return selectors.AuditFilter(
            institution_id=ids.get(data.get("institution", "")),
            actor_username=data.get("actor", "").strip(),
            action=data.get("action", ""),
            target_type=data.get("target_type", ""),
            target_id=data.get("target_id", "").strip(),
            target_text=data.get("target", "").strip(),
            since=_day_start(data["date_from"]) if data.get("date_from") else None,
            until=_day_start(data["date_to"] + timedelta(days=1)) if data.get("date_to") else None,
        )

    def filter_query(self) -> str:
        """The filters as a query string without the cursor, for page and export links."""
        return urlencode({name: self.data[name] for name in FILTER_FIELDS if self.data.get(name)})


def _day_start(day: object) -> datetime:
    """Midnight of ``day`` in the portal's time zone: dates on the page are local dates."""
    return timezone.make_aware(datetime.combine(day, time.min))


def _filtered_events(request: HttpRequest, form: AuditFilterForm) -> QuerySet[AuditEvent]:
    events = selectors.audit_event_list_for(request.user)
    return selectors.audit_event_filter(events, form.audit_filter())


@login_required
def audit_list(request: HttpRequest) -> HttpResponse:
    """The audit events the person may read, filtered, newest first, a cursor page at a time.

    The chain badge covers the whole trail, not only what this person may read: whether the
    record is intact is everyone's business.
    """
    form = AuditFilterForm(request.GET, actor=request.user)
    context: dict[str, object] = {"form": form, "chain": services.audit_chain_status()}
    if not form.is_valid():
        return render(request, "alliance/audit_list.html", context, status=400)
    page = selectors.audit_event_page(
        _filtered_events(request, form),
        before=form.cleaned_data.get("before"),
        after=form.cleaned_data.get("after"),
    )
    filtered = any(form.cleaned_data.get(name) for name in FILTER_FIELDS)
    context.update(
        page=page,
        query=form.filter_query(),
        filtered=filtered,
        site_names=selectors.institution_names(payload_slugs(page.events)),
    )
    return render(request, "alliance/audit_list.html", context)


class _Echo:
    """A file-like sink for csv.writer that hands each row back instead of storing it."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(rows: Iterator[dict]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(selectors.AUDIT_EXPORT_FIELDS)
    for row in rows:
        row["payload"] = json.dumps(row["payload"], ensure_ascii=False, sort_keys=True)
        yield writer.writerow(safe_row(row[name] for name in selectors.AUDIT_EXPORT_FIELDS))


def _json_chunks(rows: Iterator[dict]) -> Iterator[str]:
    yield "["
    separator = "\n"
    for row in rows:
        yield separator + json.dumps(row, ensure_ascii=False)
        separator = ",\n"
    yield "\n]\n"


@login_required
def audit_export(request: HttpRequest, fmt: str) -> HttpResponse:
    """The filtered events (all pages, in chain order) as CSV or JSON, streamed.

    Rows are read in chunks and written as they come, so exporting the whole trail never holds
    it in memory.
    """
    if fmt not in ("csv", "json"):
        raise Http404
    form = AuditFilterForm(request.GET, actor=request.user)
    if not form.is_valid():
        return HttpResponse(
            _("Invalid filter: %(errors)s") % {"errors": form_error_text(form)},
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    rows = selectors.audit_event_export_rows(_filtered_events(request, form))
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    if fmt == "csv":
        response = StreamingHttpResponse(_csv_lines(rows), content_type="text/csv; charset=utf-8")
    else:
        response = StreamingHttpResponse(_json_chunks(rows), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    return response
