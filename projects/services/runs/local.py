"""A run played through in this one process: the coordinator's services and the sites' own code.

The demo's first run is trained this way when the demo is seeded, before any worker runs: every
task the coordinator would publish is built and signed as usual, answered by the site code with
each demo site's own folder and key, and received as usual. Only the broker is left out.
"""

from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser
from django.test.utils import override_settings

from portal.common.keys import portal_public_text
from projects.federation.protocol import Envelope, sha256_hex
from projects.models import Evaluation, Problem, Round, SiteRound, TrainingRun
from projects.services.runs import secure
from projects.services.runs.answers import update_receive
from projects.services.runs.config import LaunchConfig
from projects.services.runs.dispatch import in_process, seal, site_message
from projects.services.runs.launch import run_launch
from projects.services.runs.rounds import run_advance
from projects.services.runs.store import round_start_bytes
from projects.site.handler import handle_task


def _answer(envelopes: list[Envelope]) -> None:
    for envelope in envelopes:
        reply = handle_task(envelope.to_wire(), queue=f"site.{envelope.body.site}")
        if reply is not None:
            update_receive(reply.to_wire())


def _play_round(run: TrainingRun) -> bool:
    round_ = Round.objects.filter(run=run, status=Round.Status.RUNNING).first()
    if round_ is None:
        return False
    if run.secure_aggregation:
        # Stage after stage: each one moves on when its last answer arrives.
        while round_.status == Round.Status.RUNNING:
            rows = secure.round_rows(round_)
            todo = secure.waiting(round_, rows)
            if not todo:
                break
            _answer(secure.stage_envelopes(run, round_, todo, rows))
            round_.refresh_from_db()
        return True
    waiting = list(
        round_.sites.select_related("institution", "dataset").filter(
            status=SiteRound.Status.DISPATCHED
        )
    )
    params = round_start_bytes(run, round_.number)
    _answer(seal([site_message(run, round_, s, sha256_hex(params)) for s in waiting], params))
    return True


def _play_evaluations(run: TrainingRun) -> None:
    """Answer every evaluation of the run's models, and what those answers ask for next."""
    from projects.services.verification import evaluation_envelope

    while True:
        waiting = list(
            Evaluation.objects.filter(
                model__run=run, status=Evaluation.Status.DISPATCHED
            ).select_related("institution", "dataset", "model__run")
        )
        if not waiting:
            return
        for evaluation in waiting:
            _answer([evaluation_envelope(evaluation, evaluation.model)])


def run_in_this_process(
    *, actor: AbstractBaseUser, problem: Problem, config: LaunchConfig, sites_dir: Path
) -> TrainingRun:
    """Launch a run and play it to its end here, its final model scored everywhere, each site
    reading its own folder under ``sites_dir``."""
    sites = override_settings(
        PORTAL_PUBLIC_KEY=portal_public_text(), SITE_DATA_ROOT=sites_dir, SITE_DATA_DIRS={}
    )
    with in_process(), sites:
        run = run_launch(actor=actor, problem=problem, config=config)
        run_advance(run.pk)
        for _round in range(config.rounds + 1):
            if not _play_round(run):
                break
        _play_evaluations(run)
    run.refresh_from_db()
    return run
