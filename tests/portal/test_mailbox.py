"""The demo mailbox: the embedded default keeps sent emails for staff; production never does."""

import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from portal.common.mailbox import (
    BACKEND,
    mailbox_dir,
    mailbox_messages,
    mailbox_not_in_production,
)
from tests.factories import StaffFactory
from tests.portal.test_settings import _manage

pytestmark = pytest.mark.django_db

URL = reverse("staff-mailbox")


@pytest.fixture
def mailbox(settings, tmp_path):
    """The embedded default's email: the demo mailbox under a fresh var/."""
    settings.VAR_DIR = tmp_path
    settings.DEMO_MAILBOX = True
    settings.PORTAL_HTTPS = False
    settings.EMAIL_BACKEND = BACKEND
    return tmp_path / "mailbox"


def _send(subject: str, body: str, to: str = "mei-ling@north.example.org") -> None:
    mail.send_mail(subject, body, None, [to])


def test_sent_emails_are_kept_and_listed_newest_first_with_their_links(client, mailbox):
    _send("Welcome", "Nothing to click.")
    _send(
        "You are invited to the alliance portal",
        "Set your password with this one-time link:\nhttp://127.0.0.1:8000/invitation/MQ/abc-123/\n",
    )
    assert len(list(mailbox.glob("*.json"))) == 2
    mails = mailbox_messages()
    assert [m.subject for m in mails] == ["You are invited to the alliance portal", "Welcome"]
    assert mails[0].links == ["http://127.0.0.1:8000/invitation/MQ/abc-123/"]

    client.force_login(StaffFactory())
    page = client.get(URL).content.decode()
    assert page.index("You are invited") < page.index("Welcome")
    assert '<a href="http://127.0.0.1:8000/invitation/MQ/abc-123/">' in page
    assert "To mei-ling@north.example.org" in page
    assert "UTC+8" in page
    assert client.get(reverse("staff-overview")).content.decode().count(URL) == 1


def test_only_staff_read_the_mailbox(client, mailbox, researcher):
    assert client.get(URL).status_code == 302  # to the login page
    client.force_login(researcher)
    assert client.get(URL).status_code == 403


def test_an_empty_mailbox_says_what_will_appear(client, mailbox):
    client.force_login(StaffFactory())
    assert "No email has been sent yet." in client.get(URL).content.decode()


@pytest.mark.parametrize(
    "change",
    [
        {"PORTAL_HTTPS": True},
        {"EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend"},
        {"DEMO_MAILBOX": False},
    ],
)
def test_the_mailbox_is_gone_outside_the_embedded_default(client, settings, mailbox, change):
    for name, value in change.items():
        setattr(settings, name, value)
    client.force_login(StaffFactory())
    assert client.get(URL).status_code == 404
    assert URL not in client.get(reverse("staff-overview")).content.decode()


def test_the_backend_refuses_to_keep_mail_behind_tls(settings, mailbox):
    settings.PORTAL_HTTPS = True
    with pytest.raises(ImproperlyConfigured):
        mail.get_connection(BACKEND).send_messages([mail.EmailMessage("s", "b", to=["x@y.z"])])
    assert not mailbox_dir().exists()


def test_the_system_check_rejects_the_mailbox_behind_tls(settings):
    settings.EMAIL_BACKEND = BACKEND
    settings.PORTAL_HTTPS = True
    assert [e.id for e in mailbox_not_in_production()] == ["portal.E001"]
    settings.PORTAL_HTTPS = False
    assert mailbox_not_in_production() == []


def test_production_defaults_to_real_email_and_no_mailbox(tmp_path):
    script = "from django.conf import settings as s; print(s.EMAIL_BACKEND, s.DEMO_MAILBOX)"
    env = {"PORTAL_VAR_DIR": str(tmp_path), "SECRET_KEY": "k" * 60, "EMAIL_BACKEND": ""}
    https = _manage("shell", "-v", "0", "-c", script, env={**env, "PORTAL_HTTPS": "1"})
    assert https.stdout.split() == ["django.core.mail.backends.console.EmailBackend", "False"]
    embedded = _manage("shell", "-v", "0", "-c", script, env=env)
    assert embedded.stdout.split() == [BACKEND, "True"]
