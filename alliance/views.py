"""Pages of the browser portal: parse the request, call one service, render the result."""

from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import SetPasswordForm
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from alliance import selectors, services
from alliance.forms import ApplicationForm, InstitutionProfileForm, RoleForm
from alliance.permissions import access_institution, access_member, membership_of, require_staff
from portal.common.errors import ApplicationError
from portal.common.mailbox import mailbox_enabled, mailbox_messages
from portal.common.pages import attempt, form_errors_from

User = get_user_model()


def apply(request: HttpRequest) -> HttpResponse:
    form = ApplicationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.application_submit(actor=request.user, **form.cleaned_data)
        except (ApplicationError, ValidationError) as exc:
            form_errors_from(form, exc)
        else:
            return redirect("apply-thanks")
    return render(request, "alliance/apply.html", {"form": form})


def apply_thanks(request: HttpRequest) -> HttpResponse:
    return render(request, "alliance/apply_thanks.html")


def invitation_accept(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    """The one-time link from an invitation email: set a password, then you are in."""
    try:
        user = User.objects.get(pk=force_str(urlsafe_base64_decode(uidb64)))
    except (ValueError, TypeError, OverflowError, User.DoesNotExist):
        user = None
    valid = (
        user is not None
        and user.is_active
        and membership_of(user) is not None
        and default_token_generator.check_token(user, token)
    )
    if not valid:
        return render(request, "alliance/invitation_invalid.html", status=400)
    form = SetPasswordForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.member_accept_invitation(user=user, password=form.cleaned_data["new_password1"])
        login(request, user, backend="portal.common.auth.PortalBackend")
        messages.success(request, _("Welcome to the alliance portal. Your password is set."))
        return redirect("dashboard")
    return render(request, "alliance/invitation_accept.html", {"form": form, "invited_user": user})


def institution_detail(request: HttpRequest, slug: str) -> HttpResponse:
    institution = access_institution(request.user, slug)
    own = membership_of(request.user)
    is_own = own is not None and own.institution_id == institution.pk
    shows_people = is_own or request.user.is_staff
    return render(
        request,
        "alliance/institution_detail.html",
        {
            "institution": institution,
            "is_own": is_own,
            "can_edit": is_own
            and request.user.has_perm("alliance.change_institution", institution),
            "shows_people": shows_people,
            "people_count": (
                institution.memberships.filter(user__is_active=True).count()
                if shows_people
                else None
            ),
        },
    )


@login_required
def institution_edit(request: HttpRequest, slug: str) -> HttpResponse:
    institution = access_institution(request.user, slug, perm="alliance.change_institution")
    form = InstitutionProfileForm(request.POST or None, instance=institution)
    if request.method == "POST" and form.is_valid():
        changes = {field: form.cleaned_data[field] for field in form.fields}
        institution.refresh_from_db()  # the form wrote its values onto the instance
        try:
            services.institution_update(actor=request.user, institution=institution, **changes)
        except (ApplicationError, ValidationError) as exc:
            form_errors_from(form, exc)
        else:
            messages.success(request, _("The profile is updated."))
            return redirect(institution)
    return render(
        request, "alliance/institution_edit.html", {"form": form, "institution": institution}
    )


@login_required
@require_POST
def member_action(request: HttpRequest, membership_id: int, action: str) -> HttpResponse:
    membership = access_member(request.user, membership_id)
    name = membership.user.get_full_name() or membership.user.username
    if action == "role":
        form = RoleForm(request.POST)
        if not form.is_valid():
            messages.error(request, _("Choose a valid role."))
        else:
            attempt(
                request,
                lambda: services.member_change_role(
                    actor=request.user, membership=membership, role=form.cleaned_data["role"]
                ),
                _("%(name)s's role is changed.") % {"name": name},
            )
    elif action == "deactivate":
        attempt(
            request,
            lambda: services.member_deactivate(actor=request.user, membership=membership),
            _("%(name)s can no longer log in.") % {"name": name},
        )
    elif action == "reactivate":
        attempt(
            request,
            lambda: services.member_reactivate(actor=request.user, membership=membership),
            _("%(name)s can log in again.") % {"name": name},
        )
    elif action == "resend":
        attempt(
            request,
            lambda: services.member_resend_invitation(actor=request.user, membership=membership),
            _("A new invitation is on its way to %(email)s.") % {"email": membership.user.email},
        )
    else:
        messages.error(request, _("Unknown action."))
    return redirect("my-institution")


@login_required
def staff_overview(request: HttpRequest) -> HttpResponse:
    require_staff(request.user)
    return render(
        request,
        "alliance/staff_overview.html",
        {
            "pending": selectors.application_list_pending(),
            "sector_counts": selectors.member_counts_by_sector(),
            "status_counts": selectors.institution_status_counts(),
            "status_rows": selectors.institution_status_rows(),
            "mailbox": mailbox_enabled(),
        },
    )


@login_required
def staff_mailbox(request: HttpRequest) -> HttpResponse:
    """The demo's sent emails, newest first (the embedded default only; see mailbox.py)."""
    require_staff(request.user)
    if not mailbox_enabled():
        raise Http404(_("The demo mailbox exists on the embedded default only."))
    return render(request, "alliance/mailbox.html", {"mails": mailbox_messages()})
