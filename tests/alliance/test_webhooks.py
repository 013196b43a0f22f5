"""Webhooks: registered by an institution's admins, delivered signed by a real Celery worker to
a real HTTP receiver, tried again with growing waits, and every delivery recorded."""

import datetime
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from alliance.models import AuditEvent, Role, Webhook, WebhookDelivery
from alliance.services import webhooks
from tests.conftest import wait_for
from tests.factories import member
from tests.notify_helpers import run_tasks

EVENTS = ["run.succeeded", "run.failed", "run.cancelled"]


class Receiver:
    """A local HTTP endpoint that records each POST and answers the next planned status."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append((dict(self.headers.items()), body))
                code = (
                    receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                )
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/portal"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(request) -> Iterator[Receiver]:
    with Receiver(getattr(request, "param", [200])) as running:
        yield running


def register(admin, url: str, events=EVENTS) -> Webhook:
    return webhooks.webhook_create(
        actor=admin, institution=admin.membership.institution, url=url, events=events
    )


def emit(institution_id: int, event: str = "run.failed") -> None:
    with transaction.atomic():
        webhooks.webhooks_emit(
            institution_ids=[institution_id],
            event=event,
            data={"problem": {"slug": "sepsis", "title": "Sepsis 腫瘤"}, "run": 7},
        )


def settled(hook: Webhook) -> WebhookDelivery | None:
    delivery = WebhookDelivery.objects.filter(webhook=hook).first()
    return delivery if delivery and delivery.status != WebhookDelivery.Status.PENDING else None


# --- Delivery through the real worker ---------------------------------------------------------


@pytest.mark.worker
def test_a_signed_event_reaches_the_receiver_and_verifies(celery_worker, admin_user, receiver):
    hook = register(admin_user, receiver.url)
    emit(admin_user.membership.institution_id)
    delivery = wait_for(lambda: settled(hook), what="the delivery")
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("succeeded", 1, 200)
    ((headers, body),) = receiver.received
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Portal-Event"] == "run.failed"
    assert headers["X-Portal-Delivery"] == str(delivery.event_id)
    # What a receiver does: the HMAC-SHA256 of "<timestamp>." + the exact body, under the secret.
    timestamp = headers["X-Portal-Timestamp"]
    expected = hmac.new(hook.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(headers["X-Portal-Signature"], "sha256=" + expected.hexdigest())
    event = json.loads(body)
    assert event["event"] == "run.failed" and event["id"] == str(delivery.event_id)
    assert event["data"]["problem"]["title"] == "Sepsis 腫瘤"
    assert body == delivery.body.encode()


@pytest.mark.worker
@pytest.mark.parametrize("receiver", [[500]], indirect=True)
def test_a_failing_receiver_is_retried_then_recorded_failed(
    celery_worker, admin_user, receiver, settings
):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0
    hook = register(admin_user, receiver.url)
    emit(admin_user.membership.institution_id)
    delivery = wait_for(lambda: settled(hook), what="the delivery to fail")
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 3, 500)
    assert "500" in delivery.error
    assert len(receiver.received) == 3
    # Every attempt carries the same event, body and delivery id.
    assert len({body for _h, body in receiver.received}) == 1
    assert len({h["X-Portal-Delivery"] for h, _b in receiver.received}) == 1


@pytest.mark.worker
@pytest.mark.parametrize("receiver", [[503, 200]], indirect=True)
def test_a_receiver_that_recovers_gets_the_event(celery_worker, admin_user, receiver, settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0
    hook = register(admin_user, receiver.url)
    emit(admin_user.membership.institution_id)
    delivery = wait_for(lambda: settled(hook), what="the delivery")
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("succeeded", 2, 200)


@pytest.mark.django_db
def test_the_wait_doubles_and_is_capped(settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 30
    settings.WEBHOOK_RETRY_MAX_SECONDS = 200
    assert [webhooks.retry_delay(n) for n in (1, 2, 3, 4, 5)] == [30, 60, 120, 200, 200]


@pytest.mark.django_db
def test_only_subscribed_active_webhooks_of_the_institutions_get_a_delivery(
    admin_user, other_admin, django_capture_on_commit_callbacks
):
    wanted = register(admin_user, "https://a.example.org/h", ["run.failed"])
    register(admin_user, "https://b.example.org/h", ["run.succeeded"])
    off = register(admin_user, "https://c.example.org/h", ["run.failed"])
    webhooks.webhook_update(actor=admin_user, webhook=off, is_active=False)
    register(other_admin, "https://d.example.org/h", ["run.failed"])
    with django_capture_on_commit_callbacks() as callbacks:
        emit(admin_user.membership.institution_id, "run.failed")
    assert list(WebhookDelivery.objects.values_list("webhook", flat=True)) == [wanted.pk]
    assert len(callbacks) == 1


@pytest.mark.django_db
def test_a_rolled_back_event_delivers_nothing(admin_user, django_capture_on_commit_callbacks):
    register(admin_user, "https://a.example.org/h")
    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        webhooks.webhooks_emit(
            institution_ids=[admin_user.membership.institution_id], event="run.failed", data={}
        )
        raise RuntimeError("rolled back")
    assert callbacks == [] and not WebhookDelivery.objects.exists()


# --- Registration: checks, permissions, audit -------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "ftp://files.example.org/in",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "//example.org/no-scheme",
        "not a url",
        "",
        "https://user:secret@example.org/h",
        "https://example.org/" + "a" * 500,
    ],
)
def test_only_http_and_https_urls_are_accepted(admin_user, url):
    with pytest.raises(ValidationError):
        register(admin_user, url)
    assert not Webhook.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("events", [[], ["run.exploded"], "run.failed", [1], None])
def test_events_must_be_known(admin_user, events):
    with pytest.raises(ValidationError):
        register(admin_user, "https://a.example.org/h", events)


@pytest.mark.django_db
def test_every_change_is_audited_and_no_secret_is_in_the_trail(admin_user):
    hook = register(admin_user, "https://a.example.org/h", ["run.failed"])
    webhooks.webhook_update(actor=admin_user, webhook=hook, events=["run.succeeded"])
    old = hook.secret
    hook = webhooks.webhook_rotate_secret(actor=admin_user, webhook=hook)
    assert hook.secret != old and len(hook.secret) == 64
    assert webhooks.webhook_reveal_secret(actor=admin_user, webhook=hook) == hook.secret
    webhooks.webhook_delete(actor=admin_user, webhook=hook)
    events = list(AuditEvent.objects.filter(action__startswith="webhook.").order_by("seq"))
    assert [e.action for e in events] == [
        "webhook.registered",
        "webhook.updated",
        "webhook.secret_rotated",
        "webhook.secret_revealed",
        "webhook.deleted",
    ]
    assert events[1].payload["changes"] == {
        "events": {"from": ["run.failed"], "to": ["run.succeeded"]}
    }
    assert all(
        old not in json.dumps(e.payload) and hook.secret not in json.dumps(e.payload)
        for e in events
    )
    assert all(e.subject_institution_id == admin_user.membership.institution_id for e in events)


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.DATA_STEWARD, Role.VIEWER])
def test_only_the_institutions_admins_manage_its_webhooks(institution, admin_user, role):
    person = member(role, institution)
    with pytest.raises(PermissionDenied):
        webhooks.webhook_create(
            actor=person, institution=institution, url="https://a.example.org/h", events=EVENTS
        )
    hook = register(admin_user, "https://a.example.org/h")
    with pytest.raises(PermissionDenied):
        webhooks.webhook_update(actor=person, webhook=hook, is_active=False)


@pytest.mark.django_db
def test_an_admin_of_another_institution_cannot_touch_ours(admin_user, other_admin):
    hook = register(admin_user, "https://a.example.org/h")
    for act in (
        lambda: webhooks.webhook_update(actor=other_admin, webhook=hook, is_active=False),
        lambda: webhooks.webhook_reveal_secret(actor=other_admin, webhook=hook),
        lambda: webhooks.webhook_delete(actor=other_admin, webhook=hook),
    ):
        with pytest.raises(PermissionDenied):
            act()


# --- Pages and API ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_pages_permission_matrix(client, institution, admin_user, other_admin):
    hook = register(admin_user, "https://a.example.org/h")
    pages = [reverse("webhook-list"), reverse("webhook-detail", args=[hook.pk])]
    for page in pages:
        assert client.get(page).status_code == 302  # anonymous: log in first
    client.force_login(member(Role.RESEARCHER, institution))
    for page in pages:
        assert client.get(page).status_code == 403
    client.force_login(other_admin)
    assert client.get(pages[0]).status_code == 200
    assert "a.example.org" not in client.get(pages[0]).content.decode()
    assert client.get(pages[1]).status_code == 404
    assert client.post(reverse("webhook-action", args=[hook.pk, "reveal"])).status_code == 404
    client.force_login(admin_user)
    assert "a.example.org" in client.get(pages[0]).content.decode()
    assert client.get(pages[1]).status_code == 200


@pytest.mark.django_db
def test_registering_on_the_page_shows_the_secret_once_and_lists_deliveries(client, admin_user):
    client.force_login(admin_user)
    page = client.post(
        reverse("webhook-list"),
        {"url": "https://ops.example.org/in", "events": ["run.failed"], "is_active": "on"},
    )
    hook = Webhook.objects.get()
    assert page.status_code == 200 and hook.secret in page.content.decode()
    assert hook.secret not in client.get(reverse("webhook-detail", args=[hook.pk])).content.decode()
    WebhookDelivery.objects.create(
        webhook=hook,
        event="run.failed",
        event_id="6f1c2b1e-5b8a-4c0e-9a57-2f7d1f0c9a11",
        body="{}",
        status="failed",
        attempts=6,
        response_code=502,
        error="The receiver answered 502.",
    )
    detail = client.get(reverse("webhook-detail", args=[hook.pk])).content.decode()
    assert "The receiver answered 502." in detail and "delivery-failed" in detail
    revealed = client.post(reverse("webhook-action", args=[hook.pk, "reveal"]))
    assert hook.secret in revealed.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "form",
    [
        {"url": "ftp://x.example.org/", "events": ["run.failed"]},
        {"url": "https://x.example.org/", "events": ["nope"]},
        {"url": "", "events": []},
        {"url": "https://x.example.org/" + "a" * 600, "events": ["run.failed"]},
    ],
)
def test_bad_input_on_the_page_is_a_form_error_not_a_500(client, admin_user, form):
    client.force_login(admin_user)
    response = client.post(reverse("webhook-list"), form)
    assert response.status_code == 200
    assert 'class="field-error"' in response.content.decode()
    assert not Webhook.objects.exists()


@pytest.mark.django_db
def test_the_api_registers_lists_changes_and_shows_deliveries(api_as, admin_user, other_admin):
    api = api_as(admin_user)
    created = api.post(
        reverse("api:webhook-list"),
        {"url": "https://ops.example.org/in", "events": ["run.succeeded"]},
        format="json",
    )
    assert created.status_code == 201
    body = created.json()
    assert len(body["secret"]) == 64 and body["is_active"] is True
    detail = reverse("api:webhook-detail", args=[body["id"]])
    assert "secret" not in api.get(detail).json()
    assert api.patch(detail, {"is_active": False}, format="json").json()["is_active"] is False
    deliveries = reverse("api:webhook-deliveries", args=[body["id"]])
    assert api.get(deliveries).json()["results"] == []
    other = api_as(other_admin)
    assert other.get(detail).status_code == 404
    assert other.get(reverse("api:webhook-list")).json()["results"] == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"url": "gopher://x.example.org/", "events": ["run.failed"]},
        {"url": "https://x.example.org/", "events": "run.failed"},
        {"url": "https://x.example.org/", "events": []},
        {"url": ["https://x.example.org/"], "events": ["run.failed"]},
        {"url": "https://x.example.org/", "events": ["run.failed"], "is_active": "maybe"},
        ["not", "an", "object"],
    ],
)
def test_bad_input_in_the_api_is_a_400(api_as, admin_user, body):
    response = api_as(admin_user).post(reverse("api:webhook-list"), body, format="json")
    assert response.status_code == 400
    assert not Webhook.objects.exists()


@pytest.mark.django_db
def test_the_api_refuses_who_is_not_an_admin(api_as, institution, admin_user):
    hook = register(admin_user, "https://a.example.org/h")
    assert api_as(None).get(reverse("api:webhook-list")).status_code in (401, 403)
    researcher = api_as(member(Role.RESEARCHER, institution))
    assert researcher.get(reverse("api:webhook-list")).status_code == 403
    assert (
        researcher.post(
            reverse("api:webhook-list"), {"url": "ftp://bad", "events": []}, format="json"
        ).status_code
        == 403
    )
    assert researcher.post(reverse("api:webhook-reveal-secret", args=[hook.pk])).status_code == 403
    assert researcher.get(reverse("api:webhook-detail", args=["abc"])).status_code == 403


# --- The database says what is due; the broker only carries the work ------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("receiver", [[500]], indirect=True)
def test_a_duplicate_attempt_before_the_next_is_due_does_nothing(admin_user, receiver):
    hook = register(admin_user, receiver.url)
    emit(admin_user.membership.institution_id)
    delivery = WebhookDelivery.objects.get(webhook=hook)
    assert webhooks.webhook_attempt(delivery.pk) == webhooks.retry_delay(1)
    # The same task again (a redelivered message): the next attempt is not due yet.
    assert webhooks.webhook_attempt(delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and len(receiver.received) == 1
    assert delivery.next_attempt_at is not None


@pytest.mark.django_db
def test_a_delivery_whose_task_was_lost_is_sent_again(
    admin_user, receiver, django_capture_on_commit_callbacks
):
    hook = register(admin_user, receiver.url)
    with django_capture_on_commit_callbacks():  # the task is lost: its callback never runs
        emit(admin_user.membership.institution_id)
    delivery = WebhookDelivery.objects.get(webhook=hook)
    assert webhooks.webhooks_resume(timezone.now()) == 0  # not overdue yet
    later = timezone.now() + webhooks.OVERDUE + datetime.timedelta(seconds=1)
    with django_capture_on_commit_callbacks() as callbacks:
        assert webhooks.webhooks_resume(later) == 1
    run_tasks(callbacks)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("succeeded", 1)
    assert len(receiver.received) == 1


def test_celery_beat_looks_for_lost_deliveries_every_minute(settings):
    from alliance.tasks import webhooks_resume_task

    entry = settings.CELERY_BEAT_SCHEDULE["webhook-deliveries-resume"]
    assert (entry["task"], entry["schedule"]) == (webhooks_resume_task.name, 60.0)


@pytest.mark.django_db
def test_ids_out_of_any_range_are_a_404_not_a_500(client, api_as, admin_user):
    huge = "9" * 30
    client.force_login(admin_user)
    assert client.get(f"/my/institution/webhooks/{huge}/").status_code == 404
    assert client.post(f"/my/institution/webhooks/{huge}/reveal/").status_code == 404
    api = api_as(admin_user)
    assert api.get(f"/api/v1/webhooks/{huge}/").status_code == 404
    assert api.get(f"/api/v1/webhooks/{huge}/deliveries/").status_code == 404
    assert api.get(reverse("api:notification-list") + "?page=zz").status_code == 404
