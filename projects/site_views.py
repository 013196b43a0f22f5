"""The site keys page: an institution's site worker, its keys and its last heartbeat.

Every member of the institution reads it; its admins register a new key (which retires the
active one) and revoke one that may have leaked.
"""

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from alliance.permissions import membership_of
from portal.common.pages import REFUSALS, form_errors_from
from projects.models import SiteKey
from projects.services import sites


class SiteKeyForm(forms.Form):
    public_key = forms.CharField(
        label=gettext_lazy("Public key"),
        max_length=100,
        help_text=gettext_lazy(
            "The base64 line “Public key: …” that site_keygen printed at your site."
        ),
    )
    label = forms.CharField(
        label=gettext_lazy("Label"),
        max_length=100,
        required=False,
        help_text=gettext_lazy("Optional: e.g. the machine the worker runs on."),
    )


class RevokeForm(forms.Form):
    fingerprint = forms.CharField(max_length=32, widget=forms.HiddenInput)
    reason = forms.CharField(
        label=gettext_lazy("Why"),
        max_length=2000,
        help_text=gettext_lazy("For example: the worker's machine was compromised."),
    )


@login_required
def site_keys(request: HttpRequest) -> HttpResponse:
    own = membership_of(request.user)
    if own is None:
        messages.info(request, _("Site keys belong to a member institution; you have none."))
        return redirect("dashboard")
    institution = own.institution
    may_manage = sites.may_manage_keys(request.user, institution)
    form = SiteKeyForm()
    revoke = RevokeForm()
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "register":
            form = SiteKeyForm(request.POST)
            if form.is_valid():
                try:
                    key = sites.site_key_register(actor=request.user, **form.cleaned_data)
                except REFUSALS as exc:
                    form_errors_from(form, exc)
                else:
                    messages.success(
                        request,
                        _(
                            "Key %(fingerprint)s is registered and active; restart the site "
                            "worker with it (answers signed with the old key no longer count)."
                        )
                        % {"fingerprint": key.fingerprint},
                    )
                    return redirect("my-site")
        elif action == "revoke":
            revoke = RevokeForm(request.POST)
            key = SiteKey.objects.filter(
                institution=institution, fingerprint=request.POST.get("fingerprint", "")
            ).first()
            if key is not None and revoke.is_valid():
                try:
                    sites.site_key_revoke(
                        actor=request.user, key=key, reason=revoke.cleaned_data["reason"]
                    )
                except REFUSALS as exc:
                    form_errors_from(revoke, exc)
                else:
                    messages.success(
                        request,
                        _("Key %(fingerprint)s is revoked: nothing it signs counts any more.")
                        % {"fingerprint": key.fingerprint},
                    )
                    return redirect("my-site")
            elif key is None:
                messages.error(request, _("There is no such key of your institution."))
    context: dict[str, Any] = {
        "institution": institution,
        "health": sites.site_health([institution])[institution.pk],
        "keys": list(
            SiteKey.objects.filter(institution=institution)
            .select_related("registered_by", "revoked_by")
            .order_by("-registered_at")
        ),
        "may_manage": may_manage,
        "form": form,
        "revoke": revoke,
    }
    return render(request, "projects/site_keys.html", context, status=400 if form.errors else 200)
