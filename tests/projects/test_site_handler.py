"""The site's handling of one task, in process: what it answers and what it writes down."""

import json
import time

import numpy as np
import pytest

from portal.common.keys import portal_key
from projects.federation import encoding, signing
from projects.federation.data import file_sha256
from projects.federation.loop import initial_params
from projects.federation.protocol import (
    DatasetRef,
    Envelope,
    LearningSpec,
    RoundTask,
    SiteMessage,
    SiteReply,
    open_wire,
    sha256_hex,
)
from projects.site.handler import handle_task
from projects.site.identity import LOG_NAME, PRIVATE_DIR, write_key_pair

SLUG = "taipei-north-hospital"
SPEC = LearningSpec(
    features=("age", "dose"),
    label="outcome",
    classes=("no", "yes"),
    feature_ranges=((0.0, 100.0), (0.0, 10.0)),
    task="classification",
)


@pytest.fixture
def site(tmp_path, settings):
    folder = tmp_path / SLUG
    folder.mkdir()
    _path, public, _fingerprint = write_key_pair(folder / PRIVATE_DIR, SLUG)
    settings.SITE_DATA_DIRS = {SLUG: folder}
    settings.SITE_KEY_FILES = {}
    return folder, signing.public_from_text(public)


def message(folder, rows: list[str], *, slug: str = SLUG, **changes) -> Envelope[SiteMessage]:
    path = folder / "cohort.csv"
    path.write_text("age,dose,outcome\n" + "\n".join(rows) + "\n")
    params = encoding.encode_params(initial_params("logistic_regression", {}, 2, 2, 1))
    task = RoundTask(
        family="logistic_regression",
        family_options={},
        spec=SPEC,
        epochs=2,
        batch_size=4,
        learning_rate=0.5,
        proximal_mu=0.0,
        seed=1,
        round_number=1,
        site=slug,
    )
    body = SiteMessage(
        kind="train",
        run=1,
        launched="2026-12-03T00:00:00+00:00",
        round=1,
        site=slug,
        ticket=5,
        nonce="ab" * 16,
        deadline=int(time.time()) + 60,
        dataset=DatasetRef(site_key="cohort.csv", sha256=file_sha256(path), rows=len(rows)),
        task=task,
        params_sha256=sha256_hex(params),
        max_update_bytes=100_000,
    )
    for key, value in changes.items():
        body = type(body)(**{**body.__dict__, key: value})
    return Envelope.seal(body, portal_key(), params)


ROWS = [f"{20 + i},{i % 10},{'yes' if i % 3 else 'no'}" for i in range(30)]


def test_a_site_answers_its_own_task_signed_and_logs_it(site):
    folder, public = site
    envelope = handle_task(message(folder, ROWS).to_wire(), queue=f"site.{SLUG}")
    wire = json.loads(json.dumps(envelope.to_wire()))
    reply = open_wire(wire, SiteReply)
    assert reply.signed_by(public)
    assert reply.body.sample_count == 24 and reply.body.ticket == 5
    update = reply.attachment_bytes(reply.body.update_sha256, limit=100_000)
    assert all(np.isfinite(p).all() for p in encoding.decode_params(update))
    (line,) = [json.loads(x) for x in (folder / PRIVATE_DIR / LOG_NAME).read_text().splitlines()]
    assert line["outcome"] == "accepted" and line["update_sha256"] == reply.body.update_sha256
    assert line["data_sha256"] == file_sha256(folder / "cohort.csv")


def test_a_refusal_names_the_column_and_line_but_never_the_value(site):
    folder, public = site
    rows = [*ROWS[:5], "Mrs Chen 1961-04-02,3,yes", *ROWS[5:]]
    envelope = handle_task(message(folder, rows).to_wire(), queue=f"site.{SLUG}")
    body = envelope.body
    assert envelope.signed_by(public)
    assert body.error.code == "not_numeric"
    assert body.error.detail == {"column": "age", "line": 7}
    log = (folder / PRIVATE_DIR / LOG_NAME).read_text()
    assert "Mrs Chen" not in json.dumps(envelope.to_wire()) and "Mrs Chen" not in log


@pytest.mark.parametrize(
    "site_key", ["../elsewhere/cohort.csv", ".site/taipei-north-hospital.key", "/etc/passwd", ""]
)
def test_a_site_answers_a_file_outside_its_folder_with_a_refusal(site, site_key):
    folder, _public = site
    envelope = message(folder, ROWS)
    ref = DatasetRef(site_key=site_key, sha256=envelope.body.dataset.sha256, rows=30)
    wire = message(folder, ROWS, dataset=ref).to_wire()
    assert handle_task(wire, queue=f"site.{SLUG}").body.error.code == "outside_folder"


def test_a_task_past_its_deadline_is_refused_unanswered(site):
    folder, _public = site
    wire = message(folder, ROWS, deadline=int(time.time()) - 3600).to_wire()
    assert handle_task(wire, queue=f"site.{SLUG}") is None
    log = (folder / PRIVATE_DIR / LOG_NAME).read_text()
    assert '"reason":"expired"' in log


def test_without_the_portals_key_a_site_obeys_nothing(site, settings):
    folder, _public = site
    settings.PORTAL_PUBLIC_KEY = ""
    assert handle_task(message(folder, ROWS).to_wire(), queue=f"site.{SLUG}") is None
    settings.PORTAL_PUBLIC_KEY = signing.public_to_text(signing.generate())
    assert handle_task(message(folder, ROWS).to_wire(), queue=f"site.{SLUG}") is None
    reasons = [
        json.loads(x)["reason"] for x in (folder / PRIVATE_DIR / LOG_NAME).read_text().splitlines()
    ]
    assert reasons == ["no_portal_key", "bad_signature"]


def test_a_malformed_message_is_logged_by_the_queues_site(site):
    folder, _public = site
    assert handle_task({"body": {"domain": "x"}}, queue=f"site.{SLUG}") is None
    assert handle_task("junk", queue="site.someone-else") is None  # one identity: its log
    lines = (folder / PRIVATE_DIR / LOG_NAME).read_text().splitlines()
    assert [json.loads(x)["reason"] for x in lines] == ["malformed", "malformed"]
