"""The staff console's view of problems, datasets and data-use agreements: read-only.

Governance acts belong to the member institutions: proposing, revising and ratifying a problem,
deciding on participants, registering datasets and approving agreements go through the projects
services (from the portal's pages or the API), which check who may act and write the audit trail.
The console therefore shows every record to staff and changes none: no add, change or delete,
whoever asks, as for the audit trail in ``alliance.admin``. An action belongs here only if it
calls a service.
"""

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from alliance.admin import _ask_reason
from portal.common.errors import ApplicationError
from projects.models import (
    AgreementApproval,
    AgreementVersion,
    Dataset,
    ModelFamily,
    ModelVersion,
    Participation,
    Problem,
    ProblemComment,
    ProblemRevision,
    Ratification,
    Round,
    SiteKey,
    TrainingRun,
)
from projects.schema import format_number
from projects.services.runs import run_cancel
from projects.services.sites import site_key_revoke

READ_ONLY_NOTE = _(
    "Read-only: these records change only through the member portal and the API, where each "
    "act is checked and written to the audit trail."
)


def _is_staff(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_staff)


class ReadOnlyMixin:
    """No add, change or delete for anybody; every active staff member may look.

    Staff read every problem record (as on the portal), so viewing needs no model permission;
    with nothing to change, there is nothing to grant per model.
    """

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_staff(request)


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    show_full_result_count = False

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _is_staff(request)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(
            request, extra_context={"subtitle": READ_ONLY_NOTE, **(extra_context or {})}
        )


class ReadOnlyTabularInline(ReadOnlyMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True


def _bound(value: float | None) -> str:
    return "" if value is None else format_number(value)


def _range(column: dict[str, Any]) -> str:
    return f"{_bound(column.get('min'))} \N{EN DASH} {_bound(column.get('max'))}"


def _schema_table(features: list[dict[str, Any]], label_column: str) -> SafeString:
    """A feature schema as a table: one row per column, the label marked."""
    rows = format_html_join(
        "",
        "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                column["name"],
                _(" (label)") if column["name"] == label_column else "",
                column["type"],
                column.get("unit", ""),
                (
                    ", ".join(column.get("categories") or [])
                    if column["type"] == "categorical"
                    else _range(column)
                ),
                _("required") if column.get("required", True) else _("optional"),
            )
            for column in features
        ),
    )
    return format_html(
        "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        _("column"),
        _("type"),
        _("unit"),
        _("range or categories"),
        _("required"),
        rows,
    )


def _columns_table(columns: list[dict[str, Any]]) -> SafeString:
    """A dataset's column summary as the site described it."""
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                column["name"],
                column["type"],
                column.get("missing", 0),
                (", ".join(column["categories"]) if column.get("categories") else _range(column)),
            )
            for column in columns
        ),
    )
    return format_html(
        "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        _("column"),
        _("type"),
        _("missing"),
        _("range or categories"),
        rows,
    )


# --- Problems -----------------------------------------------------------------------------------


class RevisionInline(ReadOnlyTabularInline):
    model = ProblemRevision
    fields = [
        "number",
        "task_type",
        "label_column",
        "metric",
        "threshold",
        "change_note",
        "created_by",
        "created_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("problem", "created_by")


class ParticipationInline(ReadOnlyTabularInline):
    model = Participation
    fields = [
        "institution",
        "role",
        "status",
        "requested_by",
        "decided_by",
        "decided_at",
        "left_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .select_related("problem", "institution", "requested_by", "decided_by")
        )


class AgreementVersionInline(ReadOnlyTabularInline):
    model = AgreementVersion
    fields = ["number", "status", "expires_on", "terms_sha256", "effective_at", "ended_at"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("problem")


@admin.register(Problem)
class ProblemAdmin(ReadOnlyAdmin):
    list_display = [
        "title",
        "slug",
        "sector",
        "stage",
        "visibility",
        "proposer",
        "current_revision",
        "ratified_revision",
        "created_at",
    ]
    list_filter = ["stage", "sector", "visibility"]
    search_fields = ["title", "slug", "summary", "proposer__name"]
    list_select_related = ["proposer"]
    date_hierarchy = "created_at"
    fields = [
        "title",
        "slug",
        "sector",
        "visibility",
        "stage",
        "proposer",
        "proposed_by",
        "summary",
        "question",
        "current_revision",
        "ratified_revision",
        "created_at",
        "updated_at",
    ]
    inlines = [RevisionInline, ParticipationInline, AgreementVersionInline]


# --- Revisions, with their ratifications and comments -------------------------------------------


class RatificationInline(ReadOnlyTabularInline):
    model = Ratification
    fields = ["institution", "ratified_by", "created_at"]
    readonly_fields = fields
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .select_related("revision__problem", "institution", "ratified_by")
        )


class CommentInline(ReadOnlyTabularInline):
    model = ProblemComment
    fields = ["created_at", "institution", "author", "body"]
    readonly_fields = fields
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .select_related("revision__problem", "institution", "author")
        )


@admin.register(ProblemRevision)
class ProblemRevisionAdmin(ReadOnlyAdmin):
    list_display = [
        "problem",
        "number",
        "task_type",
        "label_column",
        "metric",
        "threshold",
        "ratification_count",
        "created_by",
        "created_at",
    ]
    list_filter = ["task_type", "metric"]
    search_fields = ["problem__title", "problem__slug", "label_column", "change_note"]
    list_select_related = ["problem", "created_by"]
    fields = [
        "problem",
        "number",
        "task_type",
        "label_column",
        "metric",
        "threshold",
        "schema",
        "change_note",
        "created_by",
        "created_at",
    ]
    readonly_fields = ["schema"]
    inlines = [RatificationInline, CommentInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(ratification_total=Count("ratifications"))

    @admin.display(description=_("ratifications"), ordering="ratification_total")
    def ratification_count(self, obj: ProblemRevision) -> int:
        return obj.ratification_total  # type: ignore[attr-defined]

    @admin.display(description=_("feature schema"))
    def schema(self, obj: ProblemRevision) -> SafeString:
        return _schema_table(obj.features, obj.label_column)


@admin.register(Participation)
class ParticipationAdmin(ReadOnlyAdmin):
    list_display = [
        "problem",
        "institution",
        "role",
        "status",
        "requested_by",
        "decided_by",
        "decided_at",
        "created_at",
    ]
    list_filter = ["role", "status"]
    search_fields = ["problem__title", "problem__slug", "institution__name", "message"]
    list_select_related = ["problem", "institution", "requested_by", "decided_by"]
    fields = [
        "problem",
        "institution",
        "role",
        "status",
        "message",
        "requested_by",
        "decided_by",
        "decided_at",
        "left_at",
        "created_at",
    ]


# --- Datasets -----------------------------------------------------------------------------------


@admin.register(Dataset)
class DatasetAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "problem",
        "institution",
        "row_count",
        "short_sha256",
        "revision",
        "status",
        "personal_data",
    ]
    list_filter = ["status", "personal_data", "institution__sector"]
    search_fields = ["name", "sha256", "site_key", "problem__title", "institution__name"]
    list_select_related = ["problem", "institution"]
    fields = [
        "name",
        "problem",
        "institution",
        "registered_by",
        "description",
        "site_key",
        "row_count",
        "sha256",
        "label_column",
        "column_summary",
        "collection_start",
        "collection_end",
        "personal_data",
        "legal_basis",
        "revision",
        "status",
        "withdrawn_at",
        "created_at",
    ]
    readonly_fields = ["column_summary"]

    @admin.display(description=_("SHA-256"), ordering="sha256")
    def short_sha256(self, obj: Dataset) -> str:
        return obj.sha256[:12]

    @admin.display(description=_("columns"))
    def column_summary(self, obj: Dataset) -> SafeString:
        return _columns_table(obj.columns)


# --- Agreements ---------------------------------------------------------------------------------


class ApprovalInline(ReadOnlyTabularInline):
    model = AgreementApproval
    fields = [
        "institution",
        "decision",
        "decided_by",
        "decided_at",
        "terms_sha256",
        "reason",
        "revoked_at",
        "revoke_reason",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .select_related("version__problem", "institution", "decided_by", "revoked_by")
        )


def _families(families: list[str]) -> str:
    labels = dict(ModelFamily.choices)
    return ", ".join(str(labels.get(family, family)) for family in families)


@admin.register(AgreementVersion)
class AgreementVersionAdmin(ReadOnlyAdmin):
    list_display = [
        "problem",
        "number",
        "status",
        "expires_on",
        "families",
        "min_contributors",
        "download_scope",
        "commercial_use",
        "effective_at",
    ]
    list_filter = ["status", "download_scope", "commercial_use", "secure_aggregation"]
    search_fields = ["problem__title", "problem__slug", "terms_sha256", "purpose"]
    list_select_related = ["problem"]
    fields = [
        "problem",
        "number",
        "status",
        "purpose",
        "families",
        "min_contributors",
        "secure_aggregation",
        "dp_max_epsilon",
        "download_scope",
        "commercial_use",
        "revenue_sharing",
        "expires_on",
        "clauses",
        "max_l2",
        "max_validation_share",
        "feature_scalings",
        "change_note",
        "terms_sha256",
        "created_by",
        "created_at",
        "effective_at",
        "ended_at",
    ]
    readonly_fields = ["families"]
    inlines = [ApprovalInline]

    @admin.display(description=_("permitted model families"))
    def families(self, obj: AgreementVersion) -> str:
        return _families(obj.model_families)


@admin.register(AgreementApproval)
class AgreementApprovalAdmin(ReadOnlyAdmin):
    list_display = [
        "version",
        "institution",
        "decision",
        "decided_by",
        "decided_at",
        "revoked_at",
    ]
    list_filter = ["decision", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = [
        "version__problem__title",
        "version__problem__slug",
        "institution__name",
        "terms_sha256",
    ]
    list_select_related = ["version__problem", "institution", "decided_by"]
    fields = [
        "version",
        "institution",
        "decision",
        "decided_by",
        "decided_at",
        "terms_sha256",
        "reason",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
    ]


class RoundInline(ReadOnlyTabularInline):
    model = Round
    fields = ["number", "status", "contributors", "metrics", "started_at", "closed_at", "reason"]
    show_change_link = False


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = [
        "problem",
        "number",
        "status",
        "model_family",
        "strategy",
        "rounds",
        "institution",
        "launched_by",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "strategy", "model_family"]
    search_fields = ["problem__title", "problem__slug", "institution__name"]
    list_select_related = ["problem", "institution", "launched_by"]
    exclude = ["strategy_state"]
    inlines = [RoundInline]
    actions = ["cancel_runs"]

    @admin.action(description=_("Cancel the selected runs"))
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[TrainingRun]) -> None:
        cancelled = refused = 0
        for run in queryset:
            try:
                run_cancel(actor=request.user, run=run)
                cancelled += 1
            except (ApplicationError, PermissionDenied):
                refused += 1
        self.message_user(
            request,
            _("Cancelled %(done)s runs; %(refused)s had already finished or may not be cancelled.")
            % {"done": cancelled, "refused": refused},
        )


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ["run", "round_number", "sha256", "size", "created_at"]
    search_fields = ["sha256", "run__problem__slug"]
    list_select_related = ["run__problem"]


@admin.register(SiteKey)
class SiteKeyAdmin(ReadOnlyAdmin):
    """Every member site's signing keys; staff revoke one that may have leaked."""

    list_display = [
        "institution",
        "fingerprint",
        "label",
        "status",
        "registered_at",
        "registered_by",
        "revoked_at",
        "last_heard",
    ]
    list_filter = ["status"]
    search_fields = ["institution__name", "institution__slug", "fingerprint"]
    list_select_related = ["institution", "registered_by", "institution__heartbeat"]
    actions = ["revoke_keys"]

    @admin.display(description=_("last heartbeat"))
    def last_heard(self, key: SiteKey) -> str:
        beat = getattr(key.institution, "heartbeat", None)
        if beat is None or beat.key_id != key.pk:
            return "—"
        return f"{timezone.localtime(beat.received_at):%Y-%m-%d %H:%M:%S %Z} ({beat.version})"

    @admin.action(description=_("Revoke the selected keys, with a reason"))
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[SiteKey]) -> HttpResponse | None:
        return _ask_reason(
            self,
            request,
            queryset,
            action_name="revoke_keys",
            title=_("Revoke site keys"),
            act=lambda key, reason: site_key_revoke(actor=request.user, key=key, reason=reason),
            done=_("%(count)d key(s) revoked: nothing they sign counts any more."),
        )
