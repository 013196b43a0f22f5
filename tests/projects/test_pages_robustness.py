"""Malformed form posts and query strings on every page answer a page or a 4xx, never a 500."""

import pytest
from django.urls import reverse

from projects.models import Dataset

POSTS = [
    {},
    {"participation": "abc", "role": "king", "institution": "x" * 300, "reason": ""},
    {"participation": "999999", "terms_sha256": "0" * 64, "form-TOTAL_FORMS": "abc"},
    {
        "form-TOTAL_FORMS": "100000",
        "form-INITIAL_FORMS": "0",
        "threshold": "NaN",
        "min_contributors": "1" * 400,
        "expires_on": "2030-02-31",
        "description_json": "[1, 2",
        "action": "add_rows",
    },
]


def _urls(ready) -> list[str]:
    slug = ready.problem.slug
    dataset = Dataset.objects.filter(problem=ready.problem).first()
    v = ready.agreement.number
    urls = [
        reverse("problem-propose"),
        reverse("problem-edit", args=[slug]),
        reverse("problem-revise", args=[slug]),
        reverse("problem-revision", args=[slug, 1]),
        reverse("problem-ratify", args=[slug, 1]),
        reverse("dataset-register", args=[slug]),
        reverse("dataset-withdraw", args=[slug, dataset.pk]),
        reverse("agreement-draft", args=[slug]),
        reverse("agreement-detail", args=[slug, v]),
    ]
    for action in ("invite", "request", "accept", "decline", "leave", "nonsense"):
        urls.append(reverse("participation-action", args=[slug, action]))
    for action in ("approve", "decline", "revoke", "nonsense"):
        urls.append(reverse("agreement-action", args=[slug, v, action]))
    return urls


@pytest.mark.parametrize("who", ["researcher", "steward", "admin", "viewer"])
def test_malformed_posts_never_fail_with_500(ready, client, who):
    client.force_login(getattr(ready.a, who))
    for url in _urls(ready):
        for data in POSTS:
            response = client.post(url, data)
            assert response.status_code < 500, (url, data, response.status_code)


def test_bad_query_strings_never_fail_with_500(ready, client):
    client.force_login(ready.a.researcher)
    slug = ready.problem.slug
    for query in ("from=abc&to=2", "from=1&to=99999999999999999999", "from=-1", "page=zz"):
        for name in ("problem-diff", "problem-list"):
            args = [slug] if name == "problem-diff" else []
            response = client.get(reverse(name, args=args) + "?" + query)
            assert response.status_code < 500, (name, query, response.status_code)
