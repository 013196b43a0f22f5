"""Pages of problems, their revisions and participants, datasets and the inbox (a problem's
agreement pages are in ``agreement_views``): parse, fetch, call one service, render.

Buttons appear only where the person may act, but the services decide: a page that shows a
form the person may not use (a stale page, a crafted request) gets the service's refusal as a
message or a form error, and nothing changes.
"""

from dataclasses import dataclass, field
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from alliance.models import Institution, Membership, Role
from alliance.permissions import membership_of
from alliance.selectors import institution_directory
from alliance.services import notices
from portal.common.pages import REFUSALS, attempt, form_error_text, form_errors_from
from projects import selectors, services
from projects.context_processors import pending_items
from projects.dashboards.problem import problem_dashboard
from projects.diff import definition_diff
from projects.forms import (
    ROWS_PER_CLICK,
    CommentForm,
    DatasetRegisterForm,
    DescriptiveForm,
    FeatureFormSet,
    ImportForm,
    InviteParticipantForm,
    JoinRequestForm,
    ProposeForm,
    ReviseForm,
    feature_initial,
    raw_rows,
    schema_from_description,
)
from projects.models import (
    AgreementVersion,
    Dataset,
    Metric,
    Participation,
    Problem,
    ProblemRevision,
    TaskType,
)
from projects.permissions import access_problem, problem_perms
from projects.run_views import launch_refusals
from projects.schema import format_number
from projects.services.sites import SiteHealth, site_health

SCHEMA_PREFIX = "features"


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


@dataclass
class Actor:
    """What the person may do on one problem, for showing buttons (services check again).

    Object permissions are read once, in one query (``problem_perms``), instead of one
    ``has_perm`` per button: the same answer as ``user.has_perm(perm, problem)``. Only active
    people of admitted institutions act at all; viewers act on no problem.
    """

    membership: Membership | None
    perms: set[str] = field(default_factory=set)

    @property
    def acting(self) -> bool:
        return self.membership is not None

    @property
    def institution_id(self) -> int | None:
        return self.membership.institution_id if self.membership else None

    @property
    def role(self) -> str | None:
        return self.membership.role if self.membership else None

    def may(self, perm: str) -> bool:
        return self.acting and perm.split(".")[-1] in self.perms


def _actor(user: Any, problem: Problem | None = None) -> Actor:
    membership = membership_of(user)
    if (
        membership is None
        or not user.is_active
        or membership.institution.status != Institution.Status.ADMITTED
    ):
        return Actor(membership=None)
    perms: set[str] = set()
    # Viewers are granted nothing to act on (projects.permissions._desired_grants): no query.
    if problem is not None and membership.role != Role.VIEWER:
        perms = problem_perms(user, problem)  # one query, remembered on the problem
    return Actor(membership=membership, perms=perms)


def _may_propose(user: Any) -> bool:
    actor = _actor(user)
    return actor.acting and actor.role in (Role.ADMIN, Role.RESEARCHER)


def schema_rows(revision: ProblemRevision) -> list[dict[str, Any]]:
    """The revision's columns with their allowed values written for people."""
    rows = []
    for column in revision.features:
        if column["type"] == "numeric":
            low, high = column.get("min"), column.get("max")
            if low is None and high is None:
                allowed = _("any number")
            elif high is None:
                allowed = _("at least %(min)s") % {"min": _bound(low)}
            elif low is None:
                allowed = _("at most %(max)s") % {"max": _bound(high)}
            else:
                allowed = _("from %(min)s to %(max)s") % {"min": _bound(low), "max": _bound(high)}
        else:
            allowed = ", ".join(column.get("categories") or [])
        rows.append(
            {
                "name": column["name"],
                "numeric": column["type"] == "numeric",
                "unit": column.get("unit") or "",
                "allowed": allowed,
                "required": column.get("required", True),
                "is_label": column["name"] == revision.label_column,
            }
        )
    return rows


def _current(revisions: list[ProblemRevision], problem: Problem) -> ProblemRevision:
    for revision in revisions:
        if revision.number == problem.current_revision:
            return revision
    raise Http404(_("No such revision."))


# --- Inbox and list -------------------------------------------------------------------------------


@login_required
def inbox(request: HttpRequest) -> HttpResponse:
    """What waits for the person: derived from the current state, so never stale."""
    return render(
        request,
        "projects/inbox.html",
        {
            "items": pending_items(request),
            "notifications": notices.notifications_of(request.user),
            "unread": notices.notifications_unread_count(request.user),
        },
    )


@login_required
def problem_list(request: HttpRequest) -> HttpResponse:
    problems = selectors.problem_list_for(request.user)
    page = Paginator(problems, 25).get_page(request.GET.get("page"))
    return render(
        request,
        "projects/problem_list.html",
        {"page": page, "can_propose": _may_propose(request.user)},
    )


# --- Proposing and revising: the definition form and its schema rows ------------------------------


def _schema_errors(form: Any, exc: Exception) -> list[str]:
    """Put a service's refusal on the form; return the schema's own messages separately."""
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        errors = dict(exc.error_dict)
        schema = [message for error in errors.pop("features", []) for message in error.messages]
        if errors:
            form_errors_from(form, ValidationError(errors))
        return schema
    form_errors_from(form, exc)
    return []


def _redisplay(request: HttpRequest, form_class: type) -> tuple[Any, Any, ImportForm]:
    """The page again after "Add rows" or "Import", with what was typed and nothing validated."""
    data = request.POST
    initial = {name: data.get(name, "") for name in form_class.base_fields}
    rows = raw_rows(data, SCHEMA_PREFIX)
    import_form = ImportForm(data)
    extra = ROWS_PER_CLICK
    if "import" in data:
        extra = 1
        try:
            rows, label = schema_from_description(data.get("description_json", ""))
        except ValidationError as exc:
            import_form.add_error("description_json", exc)
        else:
            if label:
                initial["label_column"] = label
            messages.info(
                request,
                _(
                    "%(n)d columns filled in from the description. Check the ranges and the "
                    "categories: they are what every contributor's data must fit."
                )
                % {"n": len(rows)},
            )
    formset = FeatureFormSet(prefix=SCHEMA_PREFIX, initial=rows, rows=len(rows) + extra)
    return form_class(initial=initial), formset, import_form


def _wants_redisplay(request: HttpRequest) -> bool:
    return "add_rows" in request.POST or "import" in request.POST


@login_required
def problem_propose(request: HttpRequest) -> HttpResponse:
    if not _may_propose(request.user):
        raise PermissionDenied(
            _("Only admins and researchers of admitted member institutions propose problems.")
        )
    schema_errors: list[str] = []
    if request.method != "POST":
        form = ProposeForm()
        formset = FeatureFormSet(prefix=SCHEMA_PREFIX)
        import_form = ImportForm()
    elif _wants_redisplay(request):
        form, formset, import_form = _redisplay(request, ProposeForm)
    else:
        form = ProposeForm(request.POST)
        formset = FeatureFormSet(request.POST, prefix=SCHEMA_PREFIX)
        import_form = ImportForm(request.POST)
        if form.is_valid() & formset.is_valid():  # both, so that every error shows at once
            try:
                problem = services.problem_propose(
                    actor=request.user, features=formset.features(), **form.cleaned_data
                )
            except REFUSALS as exc:
                schema_errors = _schema_errors(form, exc)
            else:
                messages.success(
                    request,
                    _(
                        "%(title)s is proposed. Invite the institutions you need, then ask them "
                        "to ratify revision 1."
                    )
                    % {"title": problem.title},
                )
                return redirect(problem)
    return render(
        request,
        "projects/problem_propose.html",
        {
            "form": form,
            "formset": formset,
            "import_form": import_form,
            "schema_errors": schema_errors,
        },
    )


@login_required
def problem_edit(request: HttpRequest, slug: str) -> HttpResponse:
    problem = access_problem(request.user, slug, perm="projects.change_problem")
    initial = {name: getattr(problem, name) for name in DescriptiveForm.base_fields}
    form = DescriptiveForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.problem_update(actor=request.user, problem=problem, **form.cleaned_data)
        except REFUSALS as exc:
            form_errors_from(form, exc)
        else:
            messages.success(request, _("The description is updated."))
            return redirect(problem)
    return render(request, "projects/problem_edit.html", {"problem": problem, "form": form})


@login_required
def problem_revise(request: HttpRequest, slug: str) -> HttpResponse:
    problem = access_problem(request.user, slug, perm="projects.change_problem")
    current = _current(selectors.problem_revisions(problem), problem)
    schema_errors: list[str] = []
    if request.method != "POST":
        form = ReviseForm(
            initial={
                "task_type": current.task_type,
                "label_column": current.label_column,
                "metric": current.metric,
                "threshold": format_number(current.threshold),
            }
        )
        rows = feature_initial(current.features)
        formset = FeatureFormSet(prefix=SCHEMA_PREFIX, initial=rows, rows=len(rows) + 2)
        import_form = ImportForm()
    elif _wants_redisplay(request):
        form, formset, import_form = _redisplay(request, ReviseForm)
    else:
        form = ReviseForm(request.POST)
        formset = FeatureFormSet(request.POST, prefix=SCHEMA_PREFIX)
        import_form = ImportForm(request.POST)
        if form.is_valid() & formset.is_valid():
            try:
                revision = services.problem_revise(
                    actor=request.user,
                    problem=problem,
                    features=formset.features(),
                    **form.cleaned_data,
                )
            except REFUSALS as exc:
                schema_errors = _schema_errors(form, exc)
            else:
                messages.success(
                    request,
                    _(
                        "Revision %(n)s is written. Every contributor and validator is asked to "
                        "ratify it."
                    )
                    % {"n": revision.number},
                )
                return redirect(revision)
    return render(
        request,
        "projects/problem_revise.html",
        {
            "problem": problem,
            "current": current,
            "form": form,
            "formset": formset,
            "import_form": import_form,
            "schema_errors": schema_errors,
        },
    )


# --- The problem page -----------------------------------------------------------------------------


@dataclass
class Step:
    value: str
    label: str
    state: str  # "done", "current" or "todo"


def _stepper(problem: Problem) -> list[Step]:
    index = problem.stage_index
    steps = []
    for position, (value, label) in enumerate(Problem.Stage.choices):
        state = "done" if position < index else "current" if position == index else "todo"
        steps.append(Step(value=value, label=str(label), state=state))
    return steps


@dataclass
class ParticipantRow:
    participation: Participation
    can_decide: bool
    can_withdraw: bool
    site: SiteHealth | None = None  # contributors' and validators' site workers


def _invitable(participations: list[Participation]) -> QuerySet[Institution]:
    """Admitted institutions that take no part yet and have no open request or invitation."""
    taken = [
        p.institution_id
        for p in participations
        if p.status
        in (
            Participation.Status.ACTIVE,
            Participation.Status.INVITED,
            Participation.Status.REQUESTED,
        )
    ]
    return institution_directory().exclude(pk__in=taken).order_by("name")


@login_required
def problem_detail(request: HttpRequest, slug: str) -> HttpResponse:
    problem = access_problem(request.user, slug)
    actor = _actor(request.user, problem)
    participations = selectors.problem_participations(problem)
    revisions = selectors.problem_revisions(problem)
    current = _current(revisions, problem)
    datasets = list(selectors.problem_datasets(problem))
    versions = selectors.agreement_versions(problem)

    own = next((p for p in participations if p.institution_id == actor.institution_id), None)
    is_admin = actor.acting and actor.role == Role.ADMIN
    can_manage = actor.may("projects.manage_participants")
    working = [
        p.institution
        for p in participations
        if p.status == Participation.Status.ACTIVE and p.role != Participation.Role.OBSERVER
    ]
    health = site_health(working) if actor.acting or request.user.is_staff else {}
    rows = [
        ParticipantRow(
            participation=p,
            can_decide=(p.status == Participation.Status.REQUESTED and can_manage)
            or (
                p.status == Participation.Status.INVITED
                and is_admin
                and p.institution_id == actor.institution_id
            ),
            can_withdraw=(p.status == Participation.Status.INVITED and can_manage)
            or (
                p.status == Participation.Status.REQUESTED
                and is_admin
                and p.institution_id == actor.institution_id
            ),
            site=health.get(p.institution_id),
        )
        for p in participations
    ]
    ratified = {r.institution_id: r for r in current.ratifications.all()}
    ratifiers = [
        (p.institution, ratified.get(p.institution_id)) for p in participations if p.must_ratify
    ]
    contributors = selectors.active_contributors(participations)
    effective = next((v for v in versions if v.status == AgreementVersion.Status.EFFECTIVE), None)
    pending = next((v for v in versions if v.status == AgreementVersion.Status.PENDING), None)
    withdrawable = {
        d.pk
        for d in datasets
        if actor.acting
        and actor.role == Role.DATA_STEWARD
        and d.institution_id == actor.institution_id
        and d.status == Dataset.Status.ACTIVE
    }
    context = {
        "problem": problem,
        "steps": _stepper(problem),
        "current": current,
        "schema": schema_rows(current),
        "revisions": revisions,
        "participant_rows": rows,
        "ratifiers": ratifiers,
        "datasets": datasets,
        "withdrawable": withdrawable,
        "effective": effective,
        "effective_count": selectors.standing_count(effective, contributors) if effective else 0,
        "pending": pending,
        "pending_count": selectors.standing_count(pending, contributors) if pending else 0,
        "contributor_count": len(contributors),
        "can_change": actor.may("projects.change_problem"),
        "can_launch": not launch_refusals(request.user, problem),
        "can_manage": can_manage,
        "can_ratify": actor.may("projects.ratify_problem") and actor.institution_id not in ratified,
        "can_register": actor.may("projects.register_dataset"),
        "can_request": is_admin
        and problem.visibility == Problem.Visibility.LISTED
        and (
            own is None or own.status in (Participation.Status.DECLINED, Participation.Status.LEFT)
        ),
        "can_leave": is_admin
        and own is not None
        and own.status == Participation.Status.ACTIVE
        and problem.proposer_id != actor.institution_id,
        "own": own,
        "dash": problem_dashboard(
            problem,
            participations=participations,
            revisions=revisions,
            versions=versions,
            datasets=datasets,
        ),
    }
    if can_manage:
        context["invite_form"] = InviteParticipantForm(institutions=_invitable(participations))
    if context["can_request"]:
        context["request_form"] = JoinRequestForm()
    return render(request, "projects/problem_detail.html", context)


@login_required
def problem_revision(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    """One revision: its definition, who ratified it, and its discussion."""
    problem = access_problem(request.user, slug)
    revisions = selectors.problem_revisions(problem)
    revision = next((r for r in revisions if r.number == number), None)
    if revision is None:
        raise Http404(_("No such revision."))
    actor = _actor(request.user, problem)
    form = CommentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.problem_comment(
                actor=request.user, problem=problem, revision=number, body=form.cleaned_data["body"]
            )
        except REFUSALS as exc:
            form_errors_from(form, exc)
        else:
            messages.success(request, _("Your comment is posted."))
            return redirect(revision.get_absolute_url() + "#comments")
    participations = selectors.problem_participations(problem)
    ratified = {r.institution_id: r for r in revision.ratifications.all()}
    is_current = number == problem.current_revision
    return render(
        request,
        "projects/problem_revision.html",
        {
            "problem": problem,
            "revision": revision,
            "schema": schema_rows(revision),
            "is_current": is_current,
            "ratifiers": [
                (p.institution, ratified.get(p.institution_id))
                for p in participations
                if p.must_ratify or p.institution_id in ratified
            ],
            "comments": selectors.revision_comments(revision),
            "form": form,
            "can_comment": actor.may("projects.comment_problem"),
            "can_ratify": is_current
            and actor.may("projects.ratify_problem")
            and actor.institution_id not in ratified,
            "previous": number - 1 if number > 1 else None,
        },
    )


@login_required
@require_POST
def problem_ratify(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    problem = access_problem(request.user, slug)
    attempt(
        request,
        lambda: services.problem_ratify(actor=request.user, problem=problem, revision=number),
        _("Your institution ratified revision %(n)s.") % {"n": number},
    )
    return redirect(_safe_next(request, problem.get_absolute_url()))


# --- Differences between revisions ----------------------------------------------------------------


@dataclass
class Part:
    label: str
    value: str
    changed: bool = False


@dataclass
class DiffRow:
    label: str
    status: str  # "same", "changed", "added", "removed"
    old: list[Part]
    new: list[Part]
    is_column: bool = False

    @property
    def changed_labels(self) -> list[str]:
        """What changed in a column, by name (the value on either side may be missing)."""
        labels = [part.label for part in self.old + self.new if part.changed and part.label]
        return list(dict.fromkeys(labels))


def _bound(value: Any) -> str:
    return format_number(float(value)) if value is not None else "—"


def _column_parts(column: dict[str, Any] | None, changed: set[str]) -> list[Part]:
    if column is None:
        return []
    values = {
        "type": (_("Type"), _("Numeric") if column["type"] == "numeric" else _("Categorical")),
        "unit": (_("Unit"), column.get("unit") or "—"),
        "min": (_("Minimum"), _bound(column.get("min"))),
        "max": (_("Maximum"), _bound(column.get("max"))),
        "categories": (_("Categories"), ", ".join(column.get("categories") or []) or "—"),
        "required": (_("Required"), _("yes") if column.get("required") else _("no")),
    }
    parts = []
    for key, (label, value) in values.items():
        shown = key in changed or not (
            (column["type"] == "numeric" and key == "categories")
            or (column["type"] == "categorical" and key in ("min", "max"))
        )
        if shown:
            parts.append(Part(label=str(label), value=str(value), changed=key in changed))
    return parts


def diff_rows(old: ProblemRevision, new: ProblemRevision) -> tuple[list[DiffRow], bool]:
    """Two revisions side by side, field by field and column by column, and whether the
    shared columns come in another order.

    What counts as a change is ``projects.diff.definition_diff``'s answer, the same as the
    API's; this only lays it out with every value, changed or not.
    """
    diff = definition_diff(old.definition(), new.definition())
    changed_fields = {item["field"] for item in diff["fields"]}
    rows: list[DiffRow] = []
    simple = (
        ("task_type", _("Task type"), TaskType(old.task_type).label, TaskType(new.task_type).label),
        ("label_column", _("Label column"), old.label_column, new.label_column),
        ("metric", _("Metric"), Metric(old.metric).label, Metric(new.metric).label),
        (
            "threshold",
            _("Acceptance threshold"),
            format_number(old.threshold),
            format_number(new.threshold),
        ),
    )
    for name, label, before, after in simple:
        changed = name in changed_fields
        rows.append(
            DiffRow(
                label=str(label),
                status="changed" if changed else "same",
                old=[Part("", str(before), changed)],
                new=[Part("", str(after), changed)],
            )
        )
    columns = diff["columns"]
    added = {c["name"] for c in columns["added"]}
    removed = {c["name"] for c in columns["removed"]}
    changed_keys = {c["name"]: {x["key"] for x in c["changes"]} for c in columns["changed"]}
    before_columns = {c["name"]: c for c in old.features}
    after_columns = {c["name"]: c for c in new.features}
    names = list(before_columns) + [n for n in after_columns if n not in before_columns]
    for name in names:
        keys = changed_keys.get(name, set())
        if name in added:
            status = "added"
        elif name in removed:
            status = "removed"
        else:
            status = "changed" if keys else "same"
        rows.append(
            DiffRow(
                label=name,
                status=status,
                old=_column_parts(before_columns.get(name), keys),
                new=_column_parts(after_columns.get(name), keys),
                is_column=True,
            )
        )
    return rows, columns["reordered"]


@login_required
def problem_diff(request: HttpRequest, slug: str) -> HttpResponse:
    problem = access_problem(request.user, slug)
    revisions = {r.number: r for r in selectors.problem_revisions(problem)}
    context: dict[str, Any] = {"problem": problem, "numbers": sorted(revisions)}
    try:
        to = int(request.GET.get("to") or problem.current_revision)
        start = int(request.GET.get("from") or max(to - 1, 1))
    except ValueError:
        context["error"] = _("Revisions are given by their numbers, for example ?from=1&to=2.")
        return render(request, "projects/problem_diff.html", context, status=400)
    if start not in revisions or to not in revisions:
        raise Http404(_("No such revision."))
    old, new = revisions[start], revisions[to]
    rows, reordered = diff_rows(old, new)
    context.update(
        {
            "old": old,
            "new": new,
            "rows": rows,
            "reordered": reordered,
        }
    )
    return render(request, "projects/problem_diff.html", context)


# --- Participation --------------------------------------------------------------------------------


@login_required
@require_POST
def participation_action(request: HttpRequest, slug: str, action: str) -> HttpResponse:
    problem = access_problem(request.user, slug)
    # To the confirmation (or refusal) at the top of the page, not to the form below it.
    back = redirect(problem.get_absolute_url() + "#messages")
    actor = request.user
    if action == "invite":
        participations = selectors.problem_participations(problem)
        form = InviteParticipantForm(request.POST, institutions=_invitable(participations))
        if not form.is_valid():
            messages.error(request, form_error_text(form))
            return back
        institution = form.cleaned_data["institution"]
        attempt(
            request,
            lambda: services.participation_invite(
                actor=actor,
                problem=problem,
                institution=institution,
                role=form.cleaned_data["role"],
                message=form.cleaned_data["message"],
            ),
            _("%(name)s is invited; its admins are told.") % {"name": institution.name},
        )
    elif action == "request":
        form = JoinRequestForm(request.POST)
        if not form.is_valid():
            messages.error(request, form_error_text(form))
            return back
        attempt(
            request,
            lambda: services.participation_request(
                actor=actor, problem=problem, **form.cleaned_data
            ),
            _("Your request is sent to the proposing institution's admins."),
        )
    elif action in ("accept", "decline"):
        participation = _participation(problem, request.POST.get("participation"))
        name = participation.institution.name
        if action == "accept":
            attempt(
                request,
                lambda: services.participation_accept(actor=actor, participation=participation),
                _("%(name)s now takes part.") % {"name": name},
            )
        else:
            attempt(
                request,
                lambda: services.participation_decline(
                    actor=actor,
                    participation=participation,
                    reason=request.POST.get("reason", ""),
                ),
                _("Declined: %(name)s does not take part.") % {"name": name},
            )
    elif action == "withdraw":
        participation = _participation(problem, request.POST.get("participation"))
        attempt(
            request,
            lambda: services.participation_withdraw(actor=actor, participation=participation),
            _("Withdrawn: %(name)s no longer has an open request or invitation.")
            % {"name": participation.institution.name},
        )
    elif action == "leave":
        attempt(
            request,
            lambda: services.participation_leave(
                actor=actor, problem=problem, reason=request.POST.get("reason", "")
            ),
            _("Your institution has left this problem; its data is out of later rounds."),
        )
    else:
        raise Http404(_("Unknown action."))
    return back


def _participation(problem: Problem, raw_id: str | None) -> Participation:
    try:
        wanted = int(raw_id or "")
    except ValueError:
        raise Http404(_("No such participation.")) from None
    for participation in selectors.problem_participations(problem):
        if participation.pk == wanted:
            return participation
    raise Http404(_("No such participation."))


# --- Datasets -------------------------------------------------------------------------------------


@login_required
def dataset_register(request: HttpRequest, slug: str) -> HttpResponse:
    problem = access_problem(request.user, slug, perm="projects.register_dataset")
    current = _current(selectors.problem_revisions(problem), problem)
    form = DatasetRegisterForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            dataset = services.dataset_register(
                actor=request.user, problem=problem, **form.cleaned_data["description"]
            )
        except REFUSALS as exc:
            form_errors_from(form, exc)
        else:
            messages.success(
                request,
                _("%(name)s is registered: it fits revision %(n)s.")
                % {"name": dataset.name, "n": dataset.revision},
            )
            return redirect(problem.get_absolute_url() + "#messages")
    return render(
        request,
        "projects/dataset_register.html",
        {"problem": problem, "current": current, "form": form},
    )


@login_required
@require_POST
def dataset_withdraw(request: HttpRequest, slug: str, dataset_id: int) -> HttpResponse:
    problem = access_problem(request.user, slug)
    dataset = selectors.problem_datasets(problem).filter(pk=dataset_id).first()
    if dataset is None:
        raise Http404(_("No such dataset."))
    attempt(
        request,
        lambda: services.dataset_withdraw(
            actor=request.user, dataset=dataset, reason=request.POST.get("reason", "")
        ),
        _("%(name)s is withdrawn; later rounds no longer use it.") % {"name": dataset.name},
    )
    return redirect(problem.get_absolute_url() + "#messages")
