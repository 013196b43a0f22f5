"""The Content-Security-Policy: sent on every page, and no page needs inline script or style."""

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import django
import pytest
from django.conf import settings
from django.urls import reverse

from tests.projects.scenario import build_scenario

pytestmark = pytest.mark.django_db


def _policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


class _Inline(HTMLParser):
    """Collects what a strict policy would block: inline scripts, handlers, style attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        for name, _value in attrs:
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=…>")
            if name == "style":
                self.found.append(f"<{tag} style=…>")
            if name == "href" and (_value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} href=javascript:…>")
        if tag == "script" and "src" not in names and names.get("type") != "application/json":
            self._in, self._text = "script", ""
        if tag == "style":
            self._in, self._text = "style", ""

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if self._in == tag:
            self.found.append(f"<{tag}>{self._text.strip()[:60]}</{tag}>")
            self._in = None


def _inline(html: str) -> list[str]:
    parser = _Inline()
    parser.feed(html)
    return parser.found


@pytest.fixture
def site(client):
    scenario = build_scenario()
    scenario.ready()
    return scenario


def _pages(site) -> list[tuple[str, str]]:
    slug = site.problem.slug
    v = site.agreement.number
    return [
        ("anonymous", reverse("home")),
        ("anonymous", reverse("login")),
        ("anonymous", reverse("apply")),
        ("anonymous", reverse("password_reset")),
        ("anonymous", reverse("api:docs")),
        ("member", reverse("dashboard")),
        ("member", reverse("inbox")),
        ("member", reverse("my-institution")),
        ("member", reverse("problem-list")),
        ("member", reverse("problem-detail", args=[slug])),
        ("member", reverse("agreement-list", args=[slug])),
        ("member", reverse("agreement-detail", args=[slug, v])),
        ("member", reverse("agreement-print", args=[slug, v])),
        ("member", reverse("run-list", args=[slug])),
        ("member", reverse("run-launch", args=[slug])),
        ("member", reverse("audit-list")),
        ("member", reverse("institution-detail", args=[site.a.institution.slug])),
        ("staff", reverse("staff-overview")),
        ("staff", reverse("admin:index")),
        ("staff", reverse("admin:alliance_institution_changelist")),
        ("staff", reverse("admin:alliance_auditevent_changelist")),
        ("staff", reverse("admin:axes_accessattempt_changelist")),
    ]


def test_every_main_page_sends_the_policy_and_needs_no_inline_script_or_style(client, site, staff):
    staff.is_superuser = True  # every console page
    staff.save()
    for who, url in _pages(site):
        client.logout()
        if who == "member":
            client.force_login(site.a.researcher)
        elif who == "staff":
            client.force_login(staff)
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        policy = _policy(response)
        assert policy["script-src"] == ["'self'"], url
        assert policy["default-src"] == ["'self'"]
        assert policy["object-src"] == ["'none'"]
        assert policy["frame-ancestors"] == ["'none'"]
        assert "'unsafe-inline'" not in response["Content-Security-Policy"]
        found = _inline(response.content.decode())
        if url.startswith("/admin/") and "changelist" not in url:
            assert found == [], (url, found)
        else:
            allowed = "<style>#changelist table thead th:first-child {width: inherit}</style>"
            assert [f for f in found if f != allowed] == [], (url, found)


def test_the_api_answers_carry_the_policy_too(client):
    response = client.get(reverse("api:institution-list"))
    assert "default-src 'self'" in response["Content-Security-Policy"]


def test_the_api_docs_load_their_set_up_script_from_the_portal(client):
    page = client.get(reverse("api:docs")).content.decode()
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert any("script" in src for src in scripts), scripts
    setup = next(src for src in scripts if src.startswith(reverse("api:docs")))
    response = client.get(setup.replace("&amp;", "&"))
    assert response.status_code == 200
    assert "SwaggerUIBundle" in response.content.decode()


def test_the_admin_changelist_style_hash_matches_the_installed_django():
    """Django's own admin writes one style element; the policy allows exactly that text."""
    template = (
        Path(django.__file__).parent / "contrib/admin/templates/admin/change_list.html"
    ).read_text()
    text = re.search(r"<style>(.*?)</style>", template, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
    assert f"'sha256-{digest}'" == settings.ADMIN_CHANGELIST_STYLE_HASH
    assert (
        settings.ADMIN_CHANGELIST_STYLE_HASH
        in settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]["style-src"]
    )
