"""Pages for notifications: a person's email choices, and an institution's webhooks."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from alliance.forms import NotificationPreferenceForm, WebhookForm
from alliance.models import Institution, Webhook
from alliance.services import notices, webhooks
from portal.common.errors import ApplicationError
from portal.common.pages import attempt, form_errors_from


@login_required
def notification_settings(request: HttpRequest) -> HttpResponse:
    """The emails the person gets (the inbox always lists everything)."""
    current = notices.preference_of(request.user)
    initial = {name: getattr(current, name) for name in notices.EMAIL_CHOICES}
    form = NotificationPreferenceForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        notices.preference_update(actor=request.user, **form.cleaned_data)
        messages.success(request, _("Your email choices are saved."))
        return redirect("notification-settings")
    return render(request, "alliance/notification_settings.html", {"form": form})


@login_required
@require_POST
def notifications_read(request: HttpRequest) -> HttpResponse:
    notices.notifications_mark_read(actor=request.user)
    return redirect(reverse("inbox") + "#notifications")


def _own_institution(request: HttpRequest) -> Institution:
    """The institution whose webhooks the person manages: their own, as one of its admins."""
    return webhooks.webhook_manager_institution(request.user)


def _own_webhook(request: HttpRequest, pk: int) -> Webhook:
    institution = _own_institution(request)
    webhook = Webhook.objects.select_related("institution").filter(pk=pk).first()
    if webhook is None or webhook.institution_id != institution.pk:
        raise Http404(_("Your institution has no such webhook."))
    return webhook


@login_required
def webhook_list(request: HttpRequest) -> HttpResponse:
    institution = _own_institution(request)
    form = WebhookForm(request.POST or None, initial={"is_active": True})
    if request.method == "POST" and form.is_valid():
        try:
            webhook = webhooks.webhook_create(
                actor=request.user, institution=institution, **form.cleaned_data
            )
        except (ApplicationError, ValidationError, PermissionDenied) as exc:
            form_errors_from(form, exc)
        else:
            # The secret is shown once here; admins can reveal it again on the webhook's page.
            return render(
                request,
                "alliance/webhook_created.html",
                {"webhook": webhook, "secret": webhook.secret},
            )
    hooks = list(Webhook.objects.filter(institution=institution).order_by("pk"))
    return render(
        request,
        "alliance/webhook_list.html",
        {"institution": institution, "webhooks": hooks, "form": form},
    )


@login_required
def webhook_detail(request: HttpRequest, pk: int) -> HttpResponse:
    webhook = _own_webhook(request, pk)
    initial = {"url": webhook.url, "events": webhook.events, "is_active": webhook.is_active}
    form = WebhookForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            webhooks.webhook_update(actor=request.user, webhook=webhook, **form.cleaned_data)
        except (ApplicationError, ValidationError, PermissionDenied) as exc:
            form_errors_from(form, exc)
        else:
            messages.success(request, _("The webhook is saved."))
            return redirect("webhook-detail", pk=webhook.pk)
    deliveries = Paginator(webhook.deliveries.order_by("-created_at", "-pk"), 50).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "alliance/webhook_detail.html",
        {"webhook": webhook, "form": form, "deliveries": deliveries},
    )


@login_required
@require_POST
def webhook_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    webhook = _own_webhook(request, pk)
    if action == "reveal":
        secret = webhooks.webhook_reveal_secret(actor=request.user, webhook=webhook)
        return render(
            request,
            "alliance/webhook_created.html",
            {"webhook": webhook, "secret": secret, "revealed": True},
        )
    if action == "rotate":
        try:
            webhook = webhooks.webhook_rotate_secret(actor=request.user, webhook=webhook)
        except (ApplicationError, PermissionDenied) as exc:
            messages.error(request, str(exc))
            return redirect("webhook-detail", pk=pk)
        return render(
            request,
            "alliance/webhook_created.html",
            {"webhook": webhook, "secret": webhook.secret, "rotated": True},
        )
    if action == "delete":
        if attempt(
            request,
            lambda: webhooks.webhook_delete(actor=request.user, webhook=webhook),
            _("The webhook is removed."),
        ):
            return redirect("webhook-list")
        return redirect("webhook-detail", pk=pk)
    raise Http404(_("No such action."))
