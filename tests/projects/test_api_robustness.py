"""Malformed input to every state-changing endpoint answers a clear 4xx, never a 500."""

import pytest
from django.urls import reverse

from projects.models import Dataset

GARBAGE = [
    [],
    "text",
    123,
    None,
    {"unexpected": {"deeply": ["nested"]}},
    {
        "title": ["x"],
        "features": "not a list",
        "threshold": "NaN",
        "min_contributors": 10**400,
        "expires_on": "31/12/2030",
        "model_families": {"a": 1},
        "terms_sha256": 5,
        "role": None,
        "institution": ["x"],
        "dp_epsilon": "inf",
        "columns": [{"name": None}],
        "row_count": -1,
        "sha256": "zz",
    },
]


def _endpoints(ready) -> list[tuple[str, str]]:
    slug = ready.problem.slug
    dataset = Dataset.objects.filter(problem=ready.problem).first()
    n = ready.problem.current_revision
    v = ready.agreement.number
    b = ready.b.institution.slug
    return [
        ("post", reverse("api:problem-list")),
        ("patch", reverse("api:problem-detail", args=[slug])),
        ("post", reverse("api:problem-join", args=[slug])),
        ("post", reverse("api:problem-leave", args=[slug])),
        ("post", reverse("api:problem-policy-check", args=[slug])),
        ("post", reverse("api:problem-revision-list", args=[slug])),
        ("post", reverse("api:problem-revision-ratify", args=[slug, n])),
        ("post", reverse("api:problem-revision-comments", args=[slug, n])),
        ("post", reverse("api:problem-participant-list", args=[slug])),
        ("post", reverse("api:problem-participant-accept", args=[slug, b])),
        ("post", reverse("api:problem-participant-decline", args=[slug, b])),
        ("post", reverse("api:problem-dataset-list", args=[slug])),
        ("post", reverse("api:problem-dataset-withdraw", args=[slug, dataset.pk])),
        ("post", reverse("api:problem-agreement-list", args=[slug])),
        ("post", reverse("api:problem-agreement-approve", args=[slug, v])),
        ("post", reverse("api:problem-agreement-decline", args=[slug, v])),
        ("post", reverse("api:problem-agreement-revoke", args=[slug, v])),
    ]


@pytest.mark.parametrize("who", ["researcher", "steward", "admin"])
def test_malformed_bodies_get_4xx_never_5xx(ready, api_as, who):
    client = api_as(getattr(ready.a, who))
    for method, url in _endpoints(ready):
        for body in GARBAGE:
            if method == "patch" and body is None:
                continue  # an empty PATCH changes nothing and answers 200
            response = getattr(client, method)(url, body, format="json")
            assert 400 <= response.status_code < 500, (method, url, body, response.content[:300])


def test_diff_and_lists_refuse_bad_query_parameters_with_400(ready, api_as):
    client = api_as(ready.a.researcher)
    slug = ready.problem.slug
    for query in ("from=abc", "from=1&to=999999999999999999999", "to=-1"):
        response = client.get(reverse("api:problem-diff", args=[slug]) + "?" + query)
        assert 400 <= response.status_code < 500, (query, response.content[:300])
    response = client.get(reverse("api:problem-list") + "?stage=nonsense")
    assert response.status_code == 400
