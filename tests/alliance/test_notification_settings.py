"""Each person chooses which emails they get; the inbox lists every notification anyway."""

import re

import pytest
from django.urls import reverse

from alliance.models import Notification, NotificationPreference

pytestmark = pytest.mark.django_db

PAGE = reverse("notification-settings")
API = reverse("api:notification-preferences")


def checked(page: str) -> list[str]:
    return re.findall(r'<input type="checkbox" name="(\w+)"[^>]* checked>', page)


def test_the_page_shows_every_email_on_by_default_and_saves_a_choice(client, researcher):
    client.force_login(researcher)
    page = client.get(PAGE).content.decode()
    assert checked(page) == ["email_own_runs", "email_problem_runs", "email_reminders"]
    response = client.post(PAGE, {"email_own_runs": "on", "email_reminders": "on"})
    assert response.status_code == 302
    saved = NotificationPreference.objects.get(user=researcher)
    assert (saved.email_own_runs, saved.email_problem_runs, saved.email_reminders) == (
        True,
        False,
        True,
    )
    assert checked(client.get(PAGE).content.decode()) == ["email_own_runs", "email_reminders"]


def test_visitors_are_sent_to_log_in(client, api):
    assert client.get(PAGE).status_code == 302
    assert api.get(API).status_code in (401, 403)
    assert api.patch(API, {"email_reminders": False}, format="json").status_code in (401, 403)


def test_the_api_reads_and_changes_only_my_own_choices(api_as, researcher, steward):
    api = api_as(researcher)
    assert api.get(API).json() == {
        "email_own_runs": True,
        "email_problem_runs": True,
        "email_reminders": True,
    }
    answer = api.patch(API, {"email_reminders": False}, format="json")
    assert answer.status_code == 200
    assert answer.json()["email_reminders"] is False
    assert not NotificationPreference.objects.filter(user=steward).exists()


@pytest.mark.parametrize(
    "body", [{"email_reminders": "perhaps"}, {"email_reminders": [1]}, ["not", "an object"]]
)
def test_bad_choices_are_a_400(api_as, researcher, body):
    assert api_as(researcher).patch(API, body, format="json").status_code == 400


def test_notifications_are_listed_newest_first_and_marked_read(api_as, client, researcher, steward):
    first = Notification.objects.create(
        user=researcher, event="run.failed", params={"problem": "P", "run": 1}, path="/x/"
    )
    Notification.objects.create(
        user=researcher, event="run.succeeded", params={"problem": "P", "run": 2}, path="/y/"
    )
    Notification.objects.create(
        user=steward, event="run.failed", params={"problem": "Quokka study"}
    )
    api = api_as(researcher)
    listed = api.get(reverse("api:notification-list")).json()["results"]
    assert [n["text"] for n in listed] == ["Run 2 of P finished.", "Run 1 of P failed."]
    assert not any(n["is_read"] for n in listed)
    client.force_login(researcher)
    inbox = client.get(reverse("inbox")).content.decode()
    assert "Run 1 of P failed." in inbox and "Quokka" not in inbox
    assert client.post(reverse("notifications-read")).status_code == 302
    first.refresh_from_db()
    assert first.read_at is not None
    assert api.post(reverse("api:notification-read")).json() == {"marked": 0}
    assert Notification.objects.get(user=steward).read_at is None
