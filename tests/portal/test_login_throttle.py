"""Login throttling: repeated failures lock a username or an address out of every way in."""

import pytest
from axes.models import AccessAttempt
from django.test import RequestFactory
from django.urls import reverse

from alliance import services
from alliance.models import AuditEvent
from portal.common.throttle import client_address
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

WRONG = "not-the-password"


def _form_login(client, username: str, password: str, url: str | None = None):
    return client.post(url or reverse("login"), {"username": username, "password": password})


def _token(api, username: str, password: str):
    return api.post(
        reverse("api:token"), {"username": username, "password": password}, format="json"
    )


def test_fifty_wrong_passwords_then_the_right_one_is_refused_on_the_login_form(
    client, researcher, settings
):
    statuses = [_form_login(client, researcher.username, WRONG).status_code for _ in range(50)]
    limit = settings.LOGIN_FAILURES_PER_USER
    assert statuses[: limit - 1] == [200] * (limit - 1)  # the form, saying the password is wrong
    assert set(statuses[limit - 1 :]) == {429}

    response = _form_login(client, researcher.username, PASSWORD)
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in client.session
    # Reaching each limit is audited once, however many failures follow: the username's at
    # the 10th failure, the address's at the 50th (all came from this one address).
    events = AuditEvent.objects.filter(action="login.locked_out").order_by("seq")
    assert [e.payload["limits"] for e in events] == [["username"], ["address"]]
    assert events[0].payload == {
        "limits": ["username"],
        "address": "127.0.0.1",
        "username": "researcher-a",
    }
    assert events[0].target_id == str(researcher.pk)
    assert events[0].subject_institution == researcher.membership.institution


def test_fifty_wrong_passwords_then_the_right_one_is_refused_on_the_token_endpoint(
    api, researcher, settings
):
    statuses = [_token(api, researcher.username, WRONG).status_code for _ in range(50)]
    limit = settings.LOGIN_FAILURES_PER_USER
    assert statuses[: limit - 1] == [400] * (limit - 1)
    assert set(statuses[limit - 1 :]) == {429}

    response = _token(api, researcher.username, PASSWORD)
    assert response.status_code == 429
    assert "Too many failed logins" in response.json()["detail"]
    assert "token" not in response.json()
    assert AuditEvent.objects.filter(action="login.locked_out").count() == 2  # user, address


def test_failures_on_the_form_and_the_token_endpoint_add_up(client, api, researcher, settings):
    half = settings.LOGIN_FAILURES_PER_USER // 2
    for _ in range(half):
        _form_login(client, researcher.username, WRONG)
    for _ in range(settings.LOGIN_FAILURES_PER_USER - half):
        _token(api, researcher.username, WRONG)
    assert _token(api, researcher.username, PASSWORD).status_code == 429
    assert _form_login(client, researcher.username, PASSWORD).status_code == 429


def test_the_staff_console_login_is_throttled_too(client, staff, settings):
    url = reverse("admin:login")
    for _ in range(settings.LOGIN_FAILURES_PER_USER):
        _form_login(client, staff.username, WRONG, url)
    response = _form_login(client, staff.username, PASSWORD, url)
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()


def test_an_address_spraying_guesses_over_many_usernames_is_locked_out(api, researcher, settings):
    per_address = settings.LOGIN_FAILURES_PER_ADDRESS
    for n in range(per_address - 1):
        assert _token(api, f"guess-{n}", WRONG).status_code == 400
    # One short of the address's limit, and the researcher never failed: still fine.
    assert _token(api, researcher.username, PASSWORD).status_code == 200
    assert _token(api, "guess-last", WRONG).status_code == 429
    assert _token(api, researcher.username, PASSWORD).status_code == 429
    event = AuditEvent.objects.get(action="login.locked_out")
    assert event.payload == {"limits": ["address"], "address": "127.0.0.1"}  # no typed names
    # Another address is not affected.
    other = _token(api, researcher.username, PASSWORD)
    assert other.status_code == 429
    api.defaults["REMOTE_ADDR"] = "192.0.2.7"
    assert _token(api, researcher.username, PASSWORD).status_code == 200


def test_limits_come_from_the_environment(api, researcher, settings):
    settings.LOGIN_FAILURES_PER_USER = 3
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(3):
        _token(api, researcher.username, WRONG)
    assert _token(api, researcher.username, PASSWORD).status_code == 429


def test_staff_unlock_in_the_console_and_it_is_audited(client, researcher, staff, settings):
    for _ in range(settings.LOGIN_FAILURES_PER_USER):
        _form_login(client, researcher.username, WRONG)
    assert _form_login(client, researcher.username, PASSWORD).status_code == 429
    changelist = reverse("admin:axes_accessattempt_changelist")

    console = client.__class__()
    console.force_login(staff)
    page = console.get(changelist).content.decode()
    assert researcher.username in page
    attempt = AccessAttempt.objects.get(username=researcher.username)
    response = console.post(
        changelist, {"action": "unlock", "_selected_action": [attempt.pk]}, follow=True
    )
    assert "Unlocked 1 username and address pair(s)" in response.content.decode()
    assert not AccessAttempt.objects.exists()
    event = AuditEvent.objects.get(action="login.unlocked")
    assert event.actor == staff
    assert event.payload == {
        "username": researcher.username,
        "address": "127.0.0.1",
        "failures": settings.LOGIN_FAILURES_PER_USER + 1,
    }
    assert _form_login(client, researcher.username, PASSWORD).status_code == 302  # logged in


def test_only_staff_unlock(researcher, admin_user, settings):
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        services.login_unlock(actor=admin_user, username=researcher.username)
    assert not AuditEvent.objects.filter(action="login.unlocked").exists()


def test_the_console_cannot_delete_attempts_by_hand(client, researcher, staff):
    _form_login(client, researcher.username, WRONG)
    attempt = AccessAttempt.objects.get()
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    url = reverse("admin:axes_accessattempt_delete", args=[attempt.pk])
    assert client.post(url, {"post": "yes"}).status_code == 403
    assert AccessAttempt.objects.exists()


def test_the_lockout_message_is_translated(client, researcher, settings):
    for _ in range(settings.LOGIN_FAILURES_PER_USER):
        _form_login(client, researcher.username, WRONG)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hant"
    response = _form_login(client, researcher.username, PASSWORD)
    assert response.status_code == 429
    assert "登入失敗次數過多" in response.content.decode()


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, "203.0.113.9", "10.0.0.1"),  # no proxy trusted: the header is the client's word
        (1, "203.0.113.9", "203.0.113.9"),
        (1, "198.51.100.1, 203.0.113.9", "203.0.113.9"),  # the left entry could be forged
        (2, "198.51.100.1, 203.0.113.9", "198.51.100.1"),
        (1, "not-an-address", "10.0.0.1"),
        (2, "203.0.113.9", "10.0.0.1"),  # fewer hops than proxies: not through them
    ],
)
def test_client_address_trusts_only_the_configured_proxies(settings, proxies, forwarded, expected):
    settings.PORTAL_PROXY_COUNT = proxies
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == expected
