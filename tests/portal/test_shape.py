"""What every page shares: times with their zone, hashes short with a copy button, the icon,
and one rule for times in the API (UTC, as the audit export writes them)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.template import Context, Template
from django.urls import reverse
from django.utils import timezone as django_timezone

from portal.common.templatetags.portal_ui import when, zone_label

MOMENT = datetime(2026, 3, 1, 6, 5, 9, 123456, tzinfo=UTC)


def test_a_time_on_a_page_says_its_zone():
    shown = when(MOMENT)
    assert shown == ('<time datetime="2026-03-01T06:05:09.123456Z">2026-03-01 14:05 UTC+8</time>')
    assert ">2026-03-01 14:05:09 UTC+8<" in when(MOMENT, "seconds")
    assert ">14:05:09 UTC+8<" in when(MOMENT, "time")
    with django_timezone.override("UTC"):
        assert ">2026-03-01 06:05 UTC<" in when(MOMENT)
    assert when(None) == "" and when("not a time") == ""


@pytest.mark.parametrize(
    ("offset", "label"),
    [(timedelta(0), "UTC"), (timedelta(hours=8), "UTC+8"), (timedelta(hours=-3.5), "UTC-3:30")],
)
def test_zone_labels(offset, label):
    assert zone_label(offset) == label


def test_a_hash_is_short_with_the_whole_on_demand_and_a_copy_button():
    digest = "ab" * 32
    html = Template("{% load portal_ui %}{% hash_value h %}").render(Context({"h": digest}))
    assert '<code class="hash short" title="' + digest + '">abababababab</code>' in html
    assert '<code class="hash full">' + digest + "</code>" in html  # inside <details>
    assert "<details" in html
    assert 'data-copy="' + digest + '"' in html and " hidden>" in html  # shown by portal.js
    full = Template("{% load portal_ui %}{% hash_value h full=True %}").render(
        Context({"h": digest})
    )
    assert "<details" not in full and digest in full
    empty = Template("{% load portal_ui %}{% hash_value h %}").render(Context({"h": ""}))
    assert empty.strip() == "—"


@pytest.mark.django_db
def test_the_site_icon_answers_at_the_root(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    assert b"".join(response.streaming_content)[:4] == b"\x00\x00\x01\x00"
    page = client.get(reverse("home")).content.decode()
    assert "portal/favicon.svg" in page and "portal/favicon.ico" in page


@pytest.mark.django_db
def test_the_api_writes_times_in_utc_like_the_audit_export(api_as, staff, institution):
    institution.admitted_at = MOMENT
    institution.save()
    body = api_as(staff).get(reverse("api:institution-detail", args=[institution.slug])).json()
    assert body["admitted_at"] == "2026-03-01T06:05:09.123456Z"


@pytest.mark.django_db
def test_pages_load_the_shared_script_and_keep_no_inline_script(client):
    page = client.get(reverse("home")).content.decode()
    assert "js/portal.js" in page
    assert "onchange=" not in page and "onclick=" not in page
    assert 'id="nav-toggle"' in page and 'aria-controls="main-nav"' in page
