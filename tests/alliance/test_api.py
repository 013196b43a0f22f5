import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from alliance.models import Institution, Membership, MembershipApplication, Role
from tests.factories import PASSWORD, ApplicationFactory, InstitutionFactory, member

pytestmark = pytest.mark.django_db

APPLICATION = {
    "name": "Metro Kaohsiung",
    "sector": "transportation",
    "country": "Taiwan",
    "contact_name": "Chia-Hao Lee",
    "contact_email": "lee@metro.example.org",
    "motivation": "Passenger flow forecasting.",
}


def test_token_auth(api, admin_user):
    response = api.post(
        reverse("api:token"), {"username": admin_user.username, "password": PASSWORD}
    )
    assert response.status_code == 200
    token = response.json()["token"]
    assert Token.objects.get(user=admin_user).key == token
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get(reverse("api:member-list")).status_code == 200


def test_token_auth_refuses_bad_password_with_json(api, admin_user):
    response = api.post(reverse("api:token"), {"username": admin_user.username, "password": "x"})
    assert response.status_code == 400
    assert "non_field_errors" in response.json()


def test_institutions_are_public_and_only_admitted(api, institution):
    InstitutionFactory(name="Pending Inc", slug="pending-inc", status="applied")
    body = api.get(reverse("api:institution-list")).json()
    assert [i["slug"] for i in body["results"]] == [institution.slug]
    assert api.get(reverse("api:institution-detail", args=["pending-inc"])).status_code == 404
    assert api.get(reverse("api:institution-detail", args=["nowhere"])).status_code == 404


@pytest.mark.parametrize(
    ("who", "expected"),
    [("anonymous", 401), ("outsider_admin", 403), ("own_researcher", 403), ("own_admin", 200)],
)
def test_institution_update_permission_matrix(api_as, institution, other_admin, who, expected):
    actors = {
        "anonymous": None,
        "outsider_admin": other_admin,
        "own_researcher": member(Role.RESEARCHER, institution),
        "own_admin": member(Role.ADMIN, institution),
    }
    response = api_as(actors[who]).patch(
        reverse("api:institution-detail", args=[institution.slug]),
        {"description": "Changed."},
        format="json",
    )
    assert response.status_code == expected, response.content
    assert "detail" in response.json() or expected == 200
    institution.refresh_from_db()
    assert (institution.description == "Changed.") == (expected == 200)


def test_institution_update_bad_input_is_a_clear_400(api_as, admin_user, institution):
    client = api_as(admin_user)
    url = reverse("api:institution-detail", args=[institution.slug])
    response = client.patch(url, {"website": "not a url", "sector": "moon"}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"website", "sector"}
    response = client.patch(url, "{broken", content_type="application/json")
    assert response.status_code == 400


def test_anyone_applies_and_gets_a_receipt_only(api):
    response = api.post(reverse("api:application-list"), APPLICATION, format="json")
    assert response.status_code == 201
    assert set(response.json()) == {"id", "institution", "status", "submitted_at"}
    assert Institution.objects.get(slug="metro-kaohsiung").status == "applied"


def test_application_with_missing_fields_names_them(api):
    response = api.post(reverse("api:application-list"), {"name": "X"}, format="json")
    assert response.status_code == 400
    assert {"sector", "country", "contact_name", "contact_email", "motivation"} <= set(
        response.json()
    )


def test_duplicate_application_is_a_409(api):
    api.post(reverse("api:application-list"), APPLICATION, format="json")
    again = api.post(
        reverse("api:application-list"), {**APPLICATION, "contact_email": "b@x.org"}, format="json"
    )
    assert again.status_code == 409
    assert "already applied" in again.json()["detail"]


@pytest.mark.parametrize(
    ("who", "expected"),
    [("anonymous", 401), ("member_admin", 403), ("staff", 200)],
)
def test_application_review_permission_matrix(api_as, staff, admin_user, who, expected):
    application = ApplicationFactory()
    actor = {"anonymous": None, "member_admin": admin_user, "staff": staff}[who]
    client = api_as(actor)
    assert client.get(reverse("api:application-list")).status_code == expected
    response = client.post(reverse("api:application-approve", args=[application.pk]))
    assert response.status_code == expected
    application.refresh_from_db()
    assert (application.status == "approved") == (expected == 200)


def test_staff_rejects_with_reason_and_decides_once(api_as, staff):
    application = ApplicationFactory()
    client = api_as(staff)
    url = reverse("api:application-reject", args=[application.pk])
    assert client.post(url, {}, format="json").status_code == 400
    response = client.post(url, {"reason": "Out of scope."}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    again = client.post(reverse("api:application-approve", args=[application.pk]))
    assert again.status_code == 409
    assert client.get(reverse("api:application-list") + "?status=pending").json()["count"] == 0


def test_members_list_is_my_institution_only(api_as, admin_user, researcher, other_admin):
    body = api_as(admin_user).get(reverse("api:member-list")).json()
    assert {m["username"] for m in body["results"]} == {admin_user.username, researcher.username}
    other_id = other_admin.membership.pk
    assert api_as(admin_user).get(reverse("api:member-detail", args=[other_id])).status_code == 404


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("anonymous", 401),
        ("own_steward", 403),
        ("staff", 403),
        ("own_admin", 201),
    ],
)
def test_invite_permission_matrix(api_as, institution, other_admin, staff, who, expected):
    actors = {
        "anonymous": None,
        "outsider_admin": other_admin,
        "own_steward": member(Role.DATA_STEWARD, institution),
        "staff": staff,
        "own_admin": member(Role.ADMIN, institution),
    }
    before = Membership.objects.filter(institution=institution).count()
    response = api_as(actors[who]).post(
        reverse("api:member-list"),
        {"email": "new@example.org", "role": "researcher"},
        format="json",
    )
    assert response.status_code == expected, response.content
    after = Membership.objects.filter(institution=institution).count()
    if expected == 201:
        assert after == before + 1
        assert response.json()["institution"] == institution.slug
    else:
        assert after == before


@pytest.mark.parametrize(
    ("who", "expected"),
    [("anonymous", 401), ("outsider_admin", 404), ("own_viewer", 403), ("own_admin", 200)],
)
def test_role_change_permission_matrix(api_as, institution, other_admin, who, expected):
    target = member(Role.RESEARCHER, institution).membership
    actors = {
        "anonymous": None,
        "outsider_admin": other_admin,
        "own_viewer": member(Role.VIEWER, institution),
        "own_admin": member(Role.ADMIN, institution),
    }
    response = api_as(actors[who]).patch(
        reverse("api:member-detail", args=[target.pk]), {"role": "data_steward"}, format="json"
    )
    assert response.status_code == expected, response.content
    target.refresh_from_db()
    assert (target.role == Role.DATA_STEWARD) == (expected == 200)


def test_last_admin_cannot_deactivate_self_via_api(api_as, admin_user):
    response = api_as(admin_user).post(
        reverse("api:member-deactivate", args=[admin_user.membership.pk])
    )
    assert response.status_code == 409
    assert "last admin" in response.json()["detail"]


def test_an_admin_invites_only_into_their_own_institution(api_as, institution, other_admin):
    response = api_as(other_admin).post(
        reverse("api:member-list"), {"email": "new@example.org", "role": "viewer"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["institution"] == other_admin.membership.institution.slug
    assert not Membership.objects.filter(institution=institution, user__email="new@example.org")


def test_unknown_role_is_a_400(api_as, admin_user):
    response = api_as(admin_user).post(
        reverse("api:member-list"), {"email": "n@example.org", "role": "king"}, format="json"
    )
    assert response.status_code == 400
    assert "role" in response.json()


@pytest.mark.parametrize(("action", "expected"), [("suspend", 200), ("reinstate", 409)])
def test_staff_suspend_and_reinstate(api_as, staff, admin_user, institution, action, expected):
    url = reverse(f"api:institution-{action}", args=[institution.slug])
    assert api_as(admin_user).post(url, {"reason": "x"}, format="json").status_code == 403
    response = api_as(staff).post(url, {"reason": "Unpaid dues."}, format="json")
    assert response.status_code == expected


def test_schema_and_docs_are_served(client):
    schema = client.get(reverse("api:schema"))
    assert schema.status_code == 200
    assert b"openapi: 3" in schema.content
    docs = client.get(reverse("api:docs"))
    assert docs.status_code == 200
    assert b"drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in docs.content
    assert b"cdn" not in docs.content.lower()


def test_not_found_is_json(api):
    response = api.get("/api/v1/institutions/nowhere/")
    assert response.status_code == 404
    assert response.json() == {"detail": "No such institution."}


def test_applications_not_visible_to_members(api_as, researcher):
    ApplicationFactory()
    assert api_as(researcher).get(reverse("api:application-list")).status_code == 403
    assert MembershipApplication.objects.count() == 1
