"""A site worker, started as a member starts it, obeys only the portal and only for itself.

``run_site_worker`` runs in its own process for one institution, with no access to the portal's
database, while the test plays the coordinator (an in-process worker on the coordinator queue)
and an attacker with access to the broker.
"""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from portal.common.keys import portal_key
from projects.federation import signing
from projects.federation.protocol import WORKER_VERSION, Envelope
from projects.federation.sitelog import verify_log
from projects.models import SiteHeartbeat, SiteRound, TrainingRun
from projects.services import runs
from projects.site.identity import LOG_NAME, PRIVATE_DIR
from projects.site_tasks import site_train_task
from tests.conftest import wait_for
from tests.projects.federation_setup import SITES, message_for, seed_medical
from tests.projects.test_federated_runs import _purge, _worker_env, launch, workers

pytestmark = [pytest.mark.worker]
A, B = SITES[0], SITES[1]


def _site_worker(slug: str) -> subprocess.Popen:
    folder = Path(settings.SITE_DATA_ROOT) / slug
    env = {
        **_worker_env(),
        "DATABASE_URL": "postgres://nobody@127.0.0.1:9/no-database-here",
        "SITE_HEARTBEAT_SECONDS": "0.3",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_site_worker",
            "--institution",
            slug,
            "--data-dir",
            str(folder),
            "--loglevel",
            "WARNING",
        ],
        cwd=Path(settings.BASE_DIR),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _log_lines(slug: str) -> list[dict]:
    path = Path(settings.SITE_DATA_ROOT) / slug / PRIVATE_DIR / LOG_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _publish(slug: str, wire: dict) -> None:
    site_train_task.apply_async(args=[wire], queue=f"site.{slug}")


def test_a_site_worker_refuses_what_is_not_the_portals_request_for_it(
    broker_ready, transactional_db, tmp_path
):
    medical = seed_medical(tmp_path)
    _purge(["coordinator", *[f"site.{s}" for s in SITES]])
    run = launch(medical, rounds=1, min_contributors=2)
    runs.run_advance(run.pk)  # round 1 open; its own messages are not published here
    _purge([f"site.{s}" for s in SITES])
    for_b = message_for(run, B).to_wire()
    for_a = message_for(run, A)
    # The portal's own signature on a task asking for another site's file.
    elsewhere = dataclasses.replace(for_a.body.dataset, site_key=f"../{B}/breast_cancer.csv")
    outside = Envelope.seal(
        dataclasses.replace(for_a.body, dataset=elsewhere), portal_key()
    ).to_wire()
    unsigned = {**for_a.to_wire(), "signature": ""}
    foreign = Envelope.seal(for_a.body, signing.generate()).to_wire()

    worker = _site_worker(A)
    try:
        with workers(["coordinator"]):
            for wire in (for_b, unsigned, foreign, outside):
                _publish(A, wire)
            lines = wait_for(lambda: len(_log_lines(A)) >= 4 and _log_lines(A), timeout=60)
            row = wait_for(
                lambda: SiteRound.objects.filter(
                    round__run=run, institution__slug=A, status="rejected"
                ).first(),
                timeout=30,
                what="the signed refusal to reach the coordinator",
            )
            beat = wait_for(
                lambda: SiteHeartbeat.objects.filter(institution__slug=A).first(),
                timeout=30,
                what="a heartbeat",
            )
    finally:
        worker.terminate()
        worker.wait(20)

    assert [(line["outcome"], line["reason"]) for line in lines[:4]] == [
        ("refused", "another_institution"),
        ("refused", "unsigned"),
        ("refused", "bad_signature"),
        ("refused", "outside_folder"),
    ]
    assert all(line["site"] in (A, B) and line["message_sha256"] for line in lines[:4])
    assert row.reason_code == "outside_folder"
    assert SiteRound.objects.get(round__run=run, institution__slug=B).status == "dispatched"
    assert beat.version == WORKER_VERSION
    assert run.status != TrainingRun.Status.FAILED

    log = Path(settings.SITE_DATA_ROOT) / A / PRIVATE_DIR / LOG_NAME
    assert verify_log(log).ok
    call_command("site_log_verify", str(log))
    text = log.read_text().splitlines()
    text[1] = text[1].replace('"unsigned"', '"accepted"')
    log.write_text("\n".join(text) + "\n")
    with pytest.raises(CommandError) as broken:
        call_command("site_log_verify", str(log))
    assert broken.value.returncode == 1
    assert "Line 3" in str(broken.value)
