"""Staff explore a run's audit trail, export it, and see the badge name an altered event."""

import json
import re
from pathlib import Path

import pytest
from django.db import connection, transaction

from alliance.models import AuditEvent
from alliance.services.audit import audit_record
from projects.models import TrainingRun
from projects.services import runs
from tests.e2e.conftest import ARTIFACTS
from tests.factories import PASSWORD, StaffFactory
from tests.projects.scenario import build_scenario

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _a_run_with_rounds(monkeypatch) -> TrainingRun:
    """A launched run and two closed rounds, as audit events: no worker needed to read them."""
    scenario = build_scenario().ready()
    # The run is only read here; nobody should start training it.
    monkeypatch.setattr(runs.launch, "send_advance", lambda run_id: None)
    run = runs.run_launch(
        actor=scenario.a.researcher, problem=scenario.refresh(), config=runs.LaunchConfig(rounds=2)
    )
    with transaction.atomic():
        for number in (1, 2):
            audit_record(
                actor=None,
                action="round.closed",
                target=run,
                subject_institution=run.institution,
                payload={"round": number, "contributed": 2},
            )
    return run


def test_staff_filter_a_run_export_it_and_see_tampering_named(page, monkeypatch):
    run = _a_run_with_rounds(monkeypatch)
    run_events = list(
        AuditEvent.objects.filter(target_type="projects.trainingrun", target_id=str(run.pk))
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    assert len(run_events) == 3
    total = AuditEvent.objects.count()
    staff = StaffFactory(username="auditor")

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(staff.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name=re.compile("Hello")).wait_for()

    page.get_by_role("link", name="Audit trail").first.click()
    page.get_by_role("heading", name="Audit trail").wait_for()
    assert page.locator("table.audit-events tbody tr.event").count() == min(total, 50)

    # Filter to the run, as the run page's link does: by target type and id.
    page.get_by_label("Target type").fill("projects.trainingrun")
    page.get_by_label("Target id").fill(str(run.pk))
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r"target_type=projects.trainingrun"))
    rows = page.locator("table.audit-events tbody tr.event")
    assert rows.count() == 3
    assert [int(r.locator("td").first.inner_text()) for r in rows.all()] == run_events[::-1]
    newest = AuditEvent.objects.get(seq=run_events[-1])
    previous = AuditEvent.objects.get(seq=run_events[-1] - 1)
    first_row = rows.first
    assert first_row.locator("code.hash.short").last.get_attribute("title") == newest.hash
    assert first_row.locator("code.hash.short").first.get_attribute("title") == previous.hash

    badge = page.locator("#chain-status")
    assert "chain ok" in badge.get_attribute("class")
    assert badge.inner_text().strip().endswith(f"Chain verified up to event {total}")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="JSON").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".json")
    exported = json.loads(Path(download.path()).read_text(encoding="utf-8"))
    assert [row["seq"] for row in exported] == run_events
    assert {row["target_type"] for row in exported} == {"projects.trainingrun"}
    assert exported[0]["action"] == "run.launched"
    assert [row["payload"].get("round") for row in exported[1:]] == [1, 2]
    assert exported[-1]["hash"] == newest.hash

    # Someone with database access rewrites what round 1 recorded.
    altered = run_events[1]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE alliance_auditevent SET payload = %s WHERE seq = %s",
            ['{"round": 1, "contributed": 3}', altered],
        )
    page.reload()
    badge = page.locator("#chain-status")
    assert "chain bad" in badge.get_attribute("class")
    assert (
        f"Chain broken at event {altered}: event {altered} was altered after it was written"
        in badge.inner_text()
    )
    page.screenshot(path=str(ARTIFACTS / "audit-chain-broken.png"), full_page=True)


@pytest.mark.worker
def test_staff_follow_a_trained_run_into_its_audit_trail(page, broker_ready, tmp_path):
    """The third journey on a run the workers really trained: every event of the run, from its
    launch to its end, is one filter away from its page."""
    from django.contrib.auth import get_user_model

    from tests.projects.federation_setup import SITES, seed_medical
    from tests.projects.test_federated_runs import finished, workers

    problem = seed_medical(tmp_path)
    researcher = get_user_model().objects.get(username="kaohsiung-harbour-hospital-researcher")
    with workers(["coordinator", *[f"site.{slug}" for slug in SITES]]):
        run = runs.run_launch(actor=researcher, problem=problem, config=runs.LaunchConfig(rounds=3))
        run = finished(run)
    assert run.status == TrainingRun.Status.SUCCEEDED
    expected = (
        ["run.launched"]
        + ["round.started", "round.closed"] * 3
        + ["run.succeeded", "model.evaluation_requested"]  # its final model, to be scored
    )

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill("alliance-demo")
    page.get_by_role("button", name="Log in").click()
    page.goto(run.get_absolute_url())
    page.get_by_role("link", name="Audit trail of this run").click()
    page.get_by_role("heading", name="Audit trail").wait_for()

    rows = page.locator("table.audit-events tbody tr.event")
    assert rows.count() == len(expected)
    shown = [r.locator("td.audit-action code").inner_text().strip() for r in rows.all()]
    assert shown == expected[::-1]
    badge = page.locator("#chain-status")
    assert "chain ok" in badge.get_attribute("class")
    total = AuditEvent.objects.count()
    assert f"Chain verified up to event {total}" in badge.inner_text()

    with page.expect_download() as download_info:
        page.get_by_role("link", name="JSON").click()
    exported = json.loads(Path(download_info.value.path()).read_text(encoding="utf-8"))
    assert [row["action"] for row in exported] == expected
    assert {row["payload"].get("run") for row in exported} == {run.number}

    closed = AuditEvent.objects.filter(
        target_type="projects.trainingrun", target_id=str(run.pk), action="round.closed"
    ).order_by("seq")[1]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE alliance_auditevent SET payload = %s WHERE seq = %s",
            ['{"round": 2, "contributors": 1}', closed.seq],
        )
    page.reload()
    badge = page.locator("#chain-status")
    assert "chain bad" in badge.get_attribute("class")
    assert f"Chain broken at event {closed.seq}" in badge.inner_text()
    page.screenshot(path=str(ARTIFACTS / "audit-trained-run-broken.png"), full_page=True)
