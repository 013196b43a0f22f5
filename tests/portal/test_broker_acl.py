"""A site's Redis user, confined by ``manage.py broker_acl``, still does a site's whole job.

Against the real Redis of the test run: the rules are applied to a user of its own, a site
worker (``run_site_worker``) runs as that user, trains on a portal-signed task and answers on the
coordinator's queue, survives its restore sweeps, and can do nothing else.
"""

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.management import call_command

from portal.common.broker_acl import acl_file_line, site_rules, site_user
from portal.common.keys import portal_public_text
from projects.federation import signing
from projects.federation.protocol import SiteReply, open_wire
from projects.site.identity import write_key_pair
from tests.conftest import needs, wait_for
from tests.projects.test_site_handler import ROWS, message

pytestmark = [pytest.mark.worker]


@pytest.fixture
def redis_db():
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        needs("Redis (set CELERY_BROKER_URL=redis://...)")
    import redis

    url = urlsplit(settings.CELERY_BROKER_URL)
    db = int((url.path or "/0").strip("/") or 0)
    client = redis.Redis(host=url.hostname, port=url.port or 6379, db=db)
    client.ping()
    return client, url.hostname, url.port or 6379, db


def test_the_acl_file_line_names_only_the_sites_keys():
    line = acl_file_line("north-hospital", "s3cret")
    assert line.startswith("user site-north-hospital on #")
    assert "s3cret" not in line
    assert "~site.north-hospital " in line and "%W~coordinator" in line
    assert "~*" not in line and "+@all" not in line and "&" not in line


def test_broker_acl_prints_a_line_and_the_sites_url(capsys):
    call_command("broker_acl", "--institution", "north-hospital", "--password", "pw")
    out, err = capsys.readouterr()
    assert out.strip() == acl_file_line("north-hospital", "pw")
    assert "CELERY_BROKER_URL=redis://site-north-hospital:pw@" in err


def test_a_confined_site_worker_trains_answers_and_can_do_nothing_else(redis_db, tmp_path):
    client, host, port, db = redis_db
    slug = f"acl-{os.getpid()}"
    user, password = site_user(slug), "acl-test-password"
    folder = tmp_path / slug
    folder.mkdir()
    key_path, public, _fingerprint = write_key_pair(folder / ".site", slug)
    client.delete("coordinator", f"site.{slug}")
    client.execute_command("ACL", "SETUSER", user, *site_rules(slug, password))
    env = {
        **os.environ,
        "CELERY_BROKER_URL": f"redis://{user}:{password}@{host}:{port}/{db}",
        "DATABASE_URL": "postgres://nobody@127.0.0.1:9/no-database-here",
        "PORTAL_PUBLIC_KEY": portal_public_text(),
        "PORTAL_VAR_DIR": str(tmp_path / "var"),
        "CELERY_VISIBILITY_TIMEOUT": "3",
    }
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "run_site_worker", "--institution", slug, "--data-dir",
         str(folder), "--loglevel", "INFO"],
        cwd=Path(settings.BASE_DIR), env=env, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    try:
        task = message(folder, ROWS, slug=slug)
        from projects.site_tasks import site_train_task

        site_train_task.apply_async(args=[task.to_wire()], queue=f"site.{slug}")
        received: dict[str, list] = {}

        def answered() -> bool:
            while raw := client.rpop("coordinator"):
                message = json.loads(raw)
                args = json.loads(base64.b64decode(message["body"]))[0]
                received.setdefault(message["headers"]["task"], []).append(args[0])
            return "projects.update_receive_task" in received

        wait_for(answered, timeout=60, what="the site's answer")
        time.sleep(6)  # two restore sweeps (every 5 s) run as the confined user
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
    finally:
        worker.terminate()
        worker.wait(20)
        log.close()
        confined = __import__("redis").Redis(
            host=host, port=port, db=db, username=user, password=password
        )
        refused = _refusals(confined, slug)
        client.execute_command("ACL", "DELUSER", user)
        client.delete(*[k for k in client.keys(f"*site.{slug}*")])
    (wire,) = received["projects.update_receive_task"]
    reply = open_wire(wire, SiteReply)
    assert reply.signed_by(signing.public_from_text(public))
    assert reply.body.site == slug and reply.body.error is None
    assert key_path.exists()
    assert received["projects.heartbeat_receive_task"]  # its heartbeats got through too
    assert refused == {
        "read the coordinator queue": True,
        "take from the coordinator queue": True,
        "take from another site's queue": True,
        "push onto another site's queue": True,
        "read the global unacked table": True,
        "rebind the coordinator's exchange": True,
        "publish": True,
        "list keys": True,
        "push onto the coordinator queue": False,
    }


def _refusals(confined, slug: str) -> dict[str, bool]:
    import redis

    attempts = {
        "read the coordinator queue": lambda: confined.lrange("coordinator", 0, -1),
        "take from the coordinator queue": lambda: confined.rpop("coordinator"),
        "take from another site's queue": lambda: confined.rpop("site.other-hospital"),
        "push onto another site's queue": lambda: confined.lpush("site.other-hospital", "x"),
        "read the global unacked table": lambda: confined.hgetall("unacked"),
        "rebind the coordinator's exchange": lambda: confined.sadd(
            "_kombu.binding.coordinator", f"x\x06\x16\x06\x16site.{slug}"
        ),
        "publish": lambda: confined.publish("/0.celery.pidbox", "x"),
        "list keys": lambda: confined.keys("*"),
        "push onto the coordinator queue": lambda: confined.lpush("coordinator", "probe"),
    }
    refused = {}
    for name, attempt in attempts.items():
        try:
            attempt()
        except redis.exceptions.NoPermissionError:
            refused[name] = True
        else:
            refused[name] = False
    return refused
