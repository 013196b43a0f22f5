"""The demo medical problem, seeded for tests that train: real files and keys at each site's folder.

Also what a site would send, computed by the real site code (``answer``), and what a site that
misbehaves, or somebody who is not the site, could send instead (``signed_reply``).
"""

import io
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.signals import setting_changed
from django.db import connection

from projects.demo import BREAST_CANCER
from projects.federation import encoding, signing
from projects.federation.protocol import Envelope, SiteMessage, SiteReply, sha256_hex
from projects.models import Problem, SiteRound, TrainingRun
from projects.services.runs import dispatch
from projects.services.runs.store import round_start_bytes
from projects.site.handler import handle_task
from projects.site.identity import default_key_path
from tests import snapshot

SITES = ["kaohsiung-harbour-hospital", "taichung-medical-centre", "taipei-north-hospital"]


# The demo seeded once per session (tests/snapshot.py): its rows, and the folder of its sites'
# files and keys that every test gets a copy of.
_SEEDED: tuple[snapshot.Snapshot, Path] | None = None


def _place(var_dir: Path) -> None:
    """Point the portal's folders at ``var_dir``, as the worker processes started with it see them.

    Each change is announced, so that what read the old value (the storage of stored models)
    follows: a model written under another folder would be missing for the coordinator.
    """
    for name, value in (
        ("VAR_DIR", var_dir),
        ("SITE_DATA_ROOT", var_dir / "sites"),
        ("MEDIA_ROOT", var_dir / "media"),
    ):
        setattr(settings, name, value)
        setting_changed.send(sender=type(settings), setting=name, value=value, enter=True)


def seed_medical(var_dir: Path) -> Problem:
    """Seed the demo alliance and problems with site files (and keys) under ``var_dir/sites``.

    In an ordinary test on PostgreSQL the demo is seeded once per session and put back here in
    one statement, with a copy of the sites' folder; a transactional test seeds it anew.
    """
    global _SEEDED
    if not (snapshot.available() and connection.in_atomic_block):
        _place(var_dir)
        call_command("seed_demo", "--without-run", stdout=io.StringIO())
        return Problem.objects.get(slug=BREAST_CANCER)
    if _SEEDED is None or not _SEEDED[0].fits():
        source = Path(tempfile.mkdtemp(prefix="seeded-demo-"))
        _place(source)
        rows, _nothing = snapshot.Snapshot.take(
            lambda: call_command("seed_demo", "--without-run", stdout=io.StringIO())
        )
        _SEEDED = (rows, source)
    rows, source = _SEEDED
    _place(var_dir)
    rows.restore()
    shutil.copytree(source / "sites", var_dir / "sites", dirs_exist_ok=True)
    return Problem.objects.get(slug=BREAST_CANCER)


def site_key(slug: str):
    """A demo site's private key, read from its own folder."""
    path = default_key_path(Path(settings.SITE_DATA_ROOT) / slug, slug)
    return signing.private_from_text(path.read_text())


def message_for(run: TrainingRun, slug: str, number: int = 1) -> Envelope[SiteMessage]:
    """The signed task the coordinator sends ``slug`` in round ``number`` (as it builds it)."""
    site = SiteRound.objects.select_related("institution", "dataset", "round").get(
        round__run=run, round__number=number, institution__slug=slug
    )
    params = round_start_bytes(run, number)
    message = dispatch.site_message(run, site.round, site, sha256_hex(params))
    return dispatch.seal([message], params)[0]


def answer(run: TrainingRun, slug: str, number: int = 1) -> dict:
    """What the site's worker would send: computed by the real site code on the real file."""
    reply = handle_task(message_for(run, slug, number).to_wire(), queue=f"site.{slug}")
    assert reply is not None
    return reply.to_wire()


def signed_reply(
    run: TrainingRun,
    slug: str,
    number: int = 1,
    *,
    key=None,
    update: bytes | None = None,
    **fields,
) -> dict:
    """A reply to the real task, signed with ``key`` (the site's own by default).

    ``update`` is the update's bytes (the round's start model by default); ``fields`` override
    the reply's fields (sample_count, error, ...).
    """
    key = key or site_key(slug)
    message = message_for(run, slug, number).body
    blob = round_start_bytes(run, number) if update is None else update
    values = {"update_sha256": encoding.params_sha256(blob), "sample_count": 100, **fields}
    if values.get("error") is not None:
        values["update_sha256"] = ""
        values["sample_count"] = 0
        blob = b""
    kid = signing.fingerprint(signing.public_to_text(key))
    reply = SiteReply.answering(message, kid, **values)
    return Envelope.seal(reply, key, blob).to_wire()


def answer_evaluations(model) -> None:
    """Every site asked about ``model`` scores it with the real site code, and answers; then
    what that asks for next (a certification asks the validators to score the coalitions)."""
    from projects.models import Evaluation
    from projects.services import runs
    from projects.services.verification import evaluation_envelope

    while waiting := list(
        Evaluation.objects.filter(model=model, status="dispatched").select_related(
            "institution", "dataset", "model__run"
        )
    ):
        for evaluation in waiting:
            sealed = evaluation_envelope(evaluation, evaluation.model)
            reply = handle_task(sealed.to_wire(), queue=f"site.{evaluation.institution.slug}")
            runs.update_receive(reply.to_wire())


def train(run, rounds: int | None = None) -> None:
    """Play every round of ``run`` through the real site code, in process."""
    from projects.services import runs

    runs.run_advance(run.pk)
    for number in range(1, (rounds or run.rounds) + 1):
        for slug in SITES:
            runs.update_receive(answer(run, slug, number))
