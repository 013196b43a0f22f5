"""Site keys and heartbeats: who registers, rotates and revokes them, and what each changes."""

import datetime
import time

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import timezone

from alliance.models import AuditEvent
from portal.common.errors import ApplicationError, Conflict
from projects import services
from projects.federation import signing
from projects.federation.protocol import Envelope, Heartbeat
from projects.models import SiteHeartbeat, SiteKey
from projects.services import sites
from projects.services.policy import RunConfig
from tests.factories import StaffFactory

RUN = RunConfig(model_family="logistic_regression", min_contributors=2)


def public() -> tuple[object, str]:
    key = signing.generate()
    return key, signing.public_to_text(key)


# --- Registering, rotating, revoking --------------------------------------------------------


def test_an_admin_registers_a_key_and_a_new_one_retires_it(scenario):
    a = scenario.a
    _key, first = public()
    registered = sites.site_key_register(actor=a.admin, public_key=first, label="fl-01")
    assert registered.status == SiteKey.Status.ACTIVE
    assert registered.fingerprint == signing.fingerprint(first)
    event = AuditEvent.objects.get(action="site_key.registered")
    assert event.payload["fingerprint"] == registered.fingerprint
    assert event.subject_institution == a.institution

    _key, second = public()
    rotated = sites.site_key_register(actor=a.admin, public_key=second)
    registered.refresh_from_db()
    assert registered.status == SiteKey.Status.RETIRED and registered.retired_at
    assert rotated.status == SiteKey.Status.ACTIVE
    assert AuditEvent.objects.get(action="site_key.retired").payload == {
        "fingerprint": registered.fingerprint,
        "replaced_by": rotated.fingerprint,
    }
    assert SiteKey.objects.filter(institution=a.institution, status="active").count() == 1


@pytest.mark.parametrize("who", ["researcher", "steward", "viewer"])
def test_only_the_institutions_admins_register_its_keys(scenario, who):
    with pytest.raises(PermissionDenied):
        sites.site_key_register(actor=getattr(scenario.a, who), public_key=public()[1])
    with pytest.raises(PermissionDenied):
        sites.site_key_register(
            actor=scenario.b.admin, public_key=public()[1], institution=scenario.a.institution
        )
    assert not SiteKey.objects.exists()


@pytest.mark.parametrize("text", ["", "not a key", "A" * 43, "fingerprint"])
def test_a_key_that_is_not_one_is_refused_with_its_reason(scenario, text):
    if text == "fingerprint":  # a key's fingerprint, not the key (made here: ids stay stable)
        text = signing.fingerprint(public()[1])
    with pytest.raises(ApplicationError) as refused:
        sites.site_key_register(actor=scenario.a.admin, public_key=text)
    assert "public_key" in refused.value.extra["errors"]


def test_the_same_key_cannot_be_registered_twice(scenario):
    _key, text = public()
    sites.site_key_register(actor=scenario.a.admin, public_key=text)
    with pytest.raises(Conflict):
        sites.site_key_register(actor=scenario.b.admin, public_key=text)


def test_an_admin_or_staff_revokes_with_a_reason_and_nobody_else(scenario):
    key = sites.site_key_register(actor=scenario.a.admin, public_key=public()[1])
    for outsider in (scenario.a.researcher, scenario.b.admin):
        with pytest.raises(PermissionDenied):
            sites.site_key_revoke(actor=outsider, key=key, reason="x")
    with pytest.raises(ApplicationError):
        sites.site_key_revoke(actor=scenario.a.admin, key=key, reason="  ")
    staff = StaffFactory()
    sites.site_key_revoke(actor=staff, key=key, reason="Leaked in a backup.")
    key.refresh_from_db()
    assert key.status == SiteKey.Status.REVOKED and key.revoked_by == staff
    assert AuditEvent.objects.get(action="site_key.revoked").payload == {
        "fingerprint": key.fingerprint,
        "reason": "Leaked in a backup.",
    }
    with pytest.raises(Conflict):
        sites.site_key_revoke(actor=scenario.a.admin, key=key, reason="again")


def test_the_policy_check_names_a_contributor_without_an_active_key(ready):
    assert services.run_policy_check(problem=ready.problem, config=RUN).allowed
    key = SiteKey.objects.get(institution=ready.b.institution, status="active")
    sites.site_key_revoke(actor=ready.b.admin, key=key, reason="Machine retired.")
    decision = services.run_policy_check(problem=ready.problem, config=RUN)
    assert not decision.allowed
    assert [e.institution for e in decision.excluded] == [ready.b.institution]
    assert "Harbour Hospital has no active site key" in decision.excluded[0].reason
    chosen = services.run_policy_check(
        problem=ready.problem,
        config=RunConfig(
            model_family="logistic_regression",
            min_contributors=2,
            contributors=(ready.b.institution.slug,),
        ),
    )
    assert any("Harbour Hospital has no active site key" in r for r in chosen.reasons)


# --- Heartbeats -----------------------------------------------------------------------------


def beat(scenario, slug: str, key, sent_at: float | None = None) -> dict:
    heartbeat = Heartbeat(
        site=slug,
        kid=signing.fingerprint(signing.public_to_text(key)),
        sent_at=time.time() if sent_at is None else sent_at,
        version="1.1",
    )
    return Envelope.seal(heartbeat, key).to_wire()


def test_a_signed_heartbeat_is_recorded_and_a_forged_one_is_not(ready):
    slug = ready.a.institution.slug
    key = ready.extra["site_keys"][slug]
    assert sites.heartbeat_receive(beat(ready, slug, key))
    recorded = SiteHeartbeat.objects.get(institution=ready.a.institution)
    assert recorded.version == "1.1"
    for forged in (
        beat(ready, slug, signing.generate()),  # not its key
        beat(ready, slug, key, sent_at=time.time() + 3600),  # from the future
        beat(ready, slug, key, sent_at=time.time() - 60),  # older than the last one
        {"body": beat(ready, slug, key)["body"]},  # unsigned
        "junk",
    ):
        assert not sites.heartbeat_receive(forged)
    assert SiteHeartbeat.objects.get(institution=ready.a.institution).sent_at == recorded.sent_at


def test_launch_warns_naming_a_site_not_heard_from_lately(ready, settings):
    settings.SITE_STALE_SECONDS = 120
    a, b = ready.a.institution, ready.b.institution
    warnings = sites.launch_warnings(ready.problem)
    assert len(warnings) == 2 and all("never been heard from" in w for w in warnings)
    for site in (ready.a, ready.b):
        slug = site.institution.slug
        sites.heartbeat_receive(beat(ready, slug, ready.extra["site_keys"][slug]))
    assert sites.launch_warnings(ready.problem) == []
    SiteHeartbeat.objects.filter(institution=b).update(
        received_at=timezone.now() - datetime.timedelta(minutes=3)
    )
    (warning,) = sites.launch_warnings(ready.problem)
    assert "Harbour Hospital" in warning and "more than 2 minutes" in warning
    health = sites.site_health([a, b])
    assert not health[a.pk].stale and health[b.pk].stale


def test_the_launch_form_and_the_problem_page_show_the_sites(ready, client):
    slug = ready.a.institution.slug
    sites.heartbeat_receive(beat(ready, slug, ready.extra["site_keys"][slug]))
    client.force_login(ready.a.researcher)
    page = client.get(reverse("run-launch", args=[ready.problem.slug])).content.decode()
    assert "Harbour Hospital&#x27;s site worker has never been heard from" in page
    assert "North Hospital&#x27;s site worker" not in page
    problem = client.get(ready.problem.get_absolute_url()).content.decode()
    assert "heard 0" in problem and "worker 1.1" in problem
    assert "never heard from" in problem


# --- The page and the API -------------------------------------------------------------------


def test_the_site_keys_page_lets_admins_register_and_revoke(scenario, client):
    client.force_login(scenario.a.admin)
    _key, text = public()
    response = client.post(reverse("my-site"), {"action": "register", "public_key": text})
    assert response.status_code == 302
    page = client.get(reverse("my-site")).content.decode()
    assert signing.fingerprint(text) in page and "Register a key" in page
    bad = client.post(reverse("my-site"), {"action": "register", "public_key": "nope"})
    assert bad.status_code == 400 and "not an Ed25519 public key" in bad.content.decode()
    fingerprint = signing.fingerprint(text)
    client.post(reverse("my-site"), {"action": "revoke", "fingerprint": fingerprint, "reason": ""})
    assert SiteKey.objects.get().status == "active"
    client.post(
        reverse("my-site"), {"action": "revoke", "fingerprint": fingerprint, "reason": "Lost."}
    )
    assert SiteKey.objects.get().status == "revoked"


def test_the_site_keys_page_is_read_only_for_other_roles(scenario, client):
    sites.site_key_register(actor=scenario.a.admin, public_key=public()[1])
    client.force_login(scenario.a.viewer)
    page = client.get(reverse("my-site")).content.decode()
    assert "Register a key" not in page and "Revoke" not in page
    response = client.post(reverse("my-site"), {"action": "register", "public_key": public()[1]})
    assert response.status_code == 400
    assert SiteKey.objects.count() == 1


@pytest.mark.parametrize(
    ("who", "status"),
    [("nobody", 401), ("a.viewer", 403), ("a.researcher", 403), ("b.admin", 201), ("a.admin", 201)],
)
def test_the_api_registers_for_the_callers_own_institution(api_as, scenario, who, status):
    user = None if who == "nobody" else getattr(getattr(scenario, who[0]), who[2:])
    response = api_as(user).post(
        reverse("api:site-key-list"), {"public_key": public()[1]}, format="json"
    )
    assert response.status_code == status, response.content
    # Refused callers learn nothing about what they sent: 403 before 400.
    if status in (401, 403):
        bad = api_as(user).post(reverse("api:site-key-list"), {"public_key": ""}, format="json")
        assert bad.status_code == status


def test_the_api_lists_own_keys_staff_all_and_revokes(api_as, scenario):
    sites.site_key_register(actor=scenario.a.admin, public_key=public()[1])
    key_b = sites.site_key_register(actor=scenario.b.admin, public_key=public()[1])
    mine = api_as(scenario.a.viewer).get(reverse("api:site-key-list")).json()["results"]
    assert [k["institution"] for k in mine] == [scenario.a.institution.slug]
    everything = api_as(StaffFactory()).get(reverse("api:site-key-list")).json()["results"]
    assert len(everything) == 2
    url = reverse("api:site-key-revoke", args=[key_b.fingerprint])
    assert api_as(scenario.a.admin).post(url, {"reason": "x"}).status_code == 404
    assert api_as(scenario.b.viewer).post(url, {}).status_code == 403
    assert api_as(scenario.b.admin).post(url, {}).status_code == 400
    response = api_as(scenario.b.admin).post(url, {"reason": "Rebuilt."}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    health = api_as(scenario.a.viewer).get(reverse("api:site-health")).json()["results"]
    by_slug = {h["institution"]: h for h in health}
    assert by_slug[scenario.a.institution.slug]["heard_at"] is None
    assert by_slug[scenario.b.institution.slug]["fingerprint"] is None
