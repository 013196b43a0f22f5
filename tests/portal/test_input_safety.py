"""NUL characters and over-deep JSON answer 400 everywhere, before any view or query sees them."""

import json

import pytest
from django.urls import reverse

from portal.common.inputs import UnsafeInput, check_data, loads
from tests.projects.scenario import build_scenario

pytestmark = pytest.mark.django_db


@pytest.fixture
def comments(api_as):
    """The comments endpoint of a freshly proposed problem, and its proposer's client."""
    scenario = build_scenario()
    problem = scenario.propose()
    url = reverse("api:problem-revision-comments", args=[problem.slug, 1])
    return url, api_as(scenario.a.researcher)


NUL_REQUESTS = [
    ("get", "/api/v1/institutions/%00/"),
    ("get", "/api/v1/audit-events/?action=%00"),
    ("get", "/api/v1/audit-events/?%00=x"),
    ("get", "/api/v1/problems/?stage=%00"),
    ("get", "/institutions/%00/"),
    ("get", "/audit/?action=%00"),
    ("get", "/accounts/login/?next=%00"),
]


@pytest.mark.parametrize(("method", "url"), NUL_REQUESTS)
@pytest.mark.parametrize("who", ["anonymous", "member", "staff"])
def test_a_nul_in_the_path_or_query_answers_400(client, researcher, staff, method, url, who):
    if who != "anonymous":
        client.force_login(researcher if who == "member" else staff)
    response = getattr(client, method)(url)
    assert response.status_code == 400, response.content[:200]
    assert "NUL" in response.content.decode()


def test_api_answers_json_and_pages_text(client):
    api = client.get("/api/v1/institutions/%00/")
    assert api.json() == {"detail": api.json()["detail"]}
    assert "NUL" in api.json()["detail"]
    page = client.get("/audit/?action=%00")
    assert page["Content-Type"].startswith("text/plain")


def test_a_nul_in_a_form_field_a_cookie_or_a_header_answers_400(client, researcher):
    assert client.post(reverse("login"), {"username": "a\x00b", "password": "x"}).status_code == 400
    assert client.post(reverse("apply"), {"name": "Evil\x00Corp"}).status_code == 400
    client.cookies["sessionid"] = "abc\x00def"
    assert client.get(reverse("home")).status_code == 400
    del client.cookies["sessionid"]
    response = client.get("/api/v1/problems/", HTTP_AUTHORIZATION="Token abc\x00def")
    assert response.status_code == 400


def test_a_nul_in_a_json_body_answers_400(comments):
    url, client = comments
    for body in ('{"body": "a\\u0000b"}', '{"bo\\u0000dy": "x"}', '[["\\u0000"]]'):
        response = client.post(url, body, content_type="application/json")
        assert response.status_code == 400, body
        assert "NUL" in response.json()["detail"]
    form = client.post(url, {"body": "a\x00b"})  # form-encoded, through DRF's form parser
    assert form.status_code == 400


@pytest.mark.parametrize("depth", [33, 200, 5000, 100_000])
def test_deeply_nested_json_to_the_comments_endpoint_answers_400(comments, api, depth):
    url, client = comments
    body = '{"body": ' + "[" * depth + "]" * depth + "}"
    response = client.post(url, body, content_type="application/json")
    assert response.status_code == 400
    assert "nested" in response.json()["detail"]
    anonymous = api.__class__().post(url, body, content_type="application/json")
    assert 400 <= anonymous.status_code < 500


def test_json_at_the_depth_limit_is_parsed(comments):
    url, client = comments
    body = json.dumps({"body": "Ranges look right.", "x": json.loads("[" * 31 + "]" * 31)})
    assert client.post(url, body, content_type="application/json").status_code == 201


def test_the_token_endpoint_uses_the_safe_parsers(api):
    body = '{"username": "a\\u0000", "password": "x"}'
    response = api.post(reverse("api:token"), body, content_type="application/json")
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]


def test_a_dataset_description_pasted_into_the_page_is_checked_too():
    with pytest.raises(UnsafeInput):
        loads('{"name": "\\u0000"}')
    with pytest.raises(UnsafeInput):
        loads("[" * 100_000 + "]" * 100_000)


def test_depth_counts_containers():
    check_data({"a": [1, {"b": "c"}]}, limit=3)
    with pytest.raises(UnsafeInput):
        check_data({"a": [1, {"b": ["c"]}]}, limit=3)
    check_data("x\x01", limit=0)
    with pytest.raises(UnsafeInput):
        check_data([], limit=0)
