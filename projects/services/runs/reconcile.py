"""The coordinator's reconciler: the database decides what must be sent and when a round ends.

A round's dispatch and deadline are recorded with the round itself (its site rows and
``deadline_at``), in the transaction that opens it; the broker only carries work. Every
``FEDERATION_RECONCILE_SECONDS`` the coordinator compares the database with what should be
happening, so a broker that restarts or a coordinator that is killed loses nothing:

- an open round past its deadline closes with what arrived;
- a site that has not answered an open round is sent its task again (the same signed task)
  once ``FEDERATION_RESEND_SECONDS`` have passed since it was last sent, twice as long after each
  resend up to eight times as long (a site that comes back late is not left waiting for
  minutes): the first dispatch may have failed while the broker was away, or the broker lost the
  task or the answer. A site answers a task it already answered with the same signed answer, and
  an answer counts once;
- a run that should go on but has no open round (its next step was lost) is advanced;
- an evaluation of a model version is sent again, or dropped at its deadline, the same way.

A coordinator that (re)starts reconciles at once and sends every unanswered task again.
"""

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections
from django.db.models import F, Max, Value
from django.db.models.functions import Least
from django.utils import timezone

from alliance.services.audit_log import audit_checkpoint_after_append
from projects.federation.protocol import sha256_hex
from projects.models import Evaluation, Round, SiteRound, TrainingRun
from projects.services.runs import secure
from projects.services.runs.dispatch import publish_safely, round_messages, seal
from projects.services.runs.rounds import round_deadline, run_advance
from projects.services.runs.store import round_start_bytes
from projects.services.verification import evaluations_drop_overdue, send_evaluations

logger = logging.getLogger(__name__)

# A run between rounds for longer than this lost its next step.
STALLED_AFTER = timedelta(seconds=2)
# The wait between resends doubles up to this many times the first one.
RESEND_BACKOFF_CEILING = 8


def _one_more_resend() -> Least:
    """The resend count plus one, kept to 16 (the wait stops doubling long before), in SQL."""
    return Least(F("resends") + 1, Value(16))


def _due(site: SiteRound | Evaluation, started: datetime, now: datetime, resend_all: bool) -> bool:
    if resend_all:
        return True
    last = site.resent_at or started
    wait = settings.FEDERATION_RESEND_SECONDS * min(2**site.resends, RESEND_BACKOFF_CEILING)
    return last + timedelta(seconds=wait) <= now


def _resend(round_: Round, now: datetime, resend_all: bool) -> int:
    waiting = [
        s
        for s in round_.sites.select_related("institution", "dataset").filter(
            status=SiteRound.Status.DISPATCHED
        )
        if _due(s, round_.started_at, now, resend_all)
    ]
    if not waiting:
        return 0
    run = round_.run
    if run.secure_aggregation:
        rows = secure.round_rows(round_)
        waiting = [s for s in secure.waiting(round_, rows) if s.pk in {w.pk for w in waiting}]
        if not waiting:
            return 0
        envelopes = secure.stage_envelopes(run, round_, waiting, rows)
    else:
        params = round_start_bytes(run, round_.number)
        envelopes = seal(round_messages(run, round_, waiting, sha256_hex(params)), params)
    if not publish_safely(envelopes):
        return 0
    SiteRound.objects.filter(pk__in=[s.pk for s in waiting]).update(
        resent_at=now, resends=_one_more_resend()
    )
    return len(waiting)


def _resend_evaluations(now: datetime, resend_all: bool) -> int:
    waiting = list(
        Evaluation.objects.filter(status=Evaluation.Status.DISPATCHED, deadline_at__gt=now)
        .select_related("institution", "dataset", "model__run")
        .order_by("model_id", "pk")
    )
    due = [e for e in waiting if _due(e, e.requested_at, now, resend_all)]
    sent = 0
    for model_id in dict.fromkeys(e.model_id for e in due):
        batch = [e for e in due if e.model_id == model_id]
        if send_evaluations(batch, batch[0].model):
            Evaluation.objects.filter(pk__in=[e.pk for e in batch]).update(
                resent_at=now, resends=_one_more_resend()
            )
            sent += len(batch)
    return sent


@contextmanager
def _each(what: str, *args: object) -> Iterator[None]:
    """One run's failure (a missing stored model, say) is logged and never stops the others'."""
    try:
        yield
    except Exception:
        logger.exception("Reconciling " + what + " failed; the others go on.", *args)


def runs_reconcile(*, resend_all: bool = False) -> dict[str, int]:
    """Bring every unfinished run in line with the database; what was done, by kind."""
    now = timezone.now()
    done = {"closed": 0, "resent": 0, "advanced": 0, "evaluations_dropped": 0}
    open_rounds = list(
        Round.objects.filter(status=Round.Status.RUNNING)
        .select_related("run")
        .order_by("run_id", "number")
    )
    for round_ in open_rounds:
        with _each("round %s of run %s", round_.number, round_.run_id):
            if round_.deadline_at <= now:
                round_deadline(round_.run_id, round_.number)
                done["closed"] += 1
            else:
                done["resent"] += _resend(round_, now, resend_all)
    busy = {r.run_id for r in open_rounds if r.deadline_at > now}
    stalled = (
        TrainingRun.objects.filter(
            status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]
        )
        .exclude(pk__in=busy)
        .annotate(last_closed=Max("round_set__closed_at"))
        .order_by()
        .values_list("pk", "created_at", "last_closed")
    )
    for run_id, created, last_closed in stalled:
        stalled_since = (last_closed or created) + STALLED_AFTER
        if stalled_since <= now:
            with _each("run %s", run_id):
                if run_advance(run_id) is not None:
                    done["advanced"] += 1
    done["evaluations_dropped"] = evaluations_drop_overdue(now)
    done["resent"] += _resend_evaluations(now, resend_all)
    if any(done.values()):
        logger.info("Reconciled the runs: %s.", done)
    return done


def sign_pending_checkpoint() -> None:
    """Sign the audit log's new events, if any (never raises).

    A coordinator signs here, off the rounds' path, rather than after each commit
    (``audit.sign_on_commit(False)`` in projects.tasks): a round's dispatch never waits on a
    signature, and a checkpoint still follows the events within a pass.
    """
    audit_checkpoint_after_append()


class Reconciler(threading.Thread):
    """Runs ``runs_reconcile`` every FEDERATION_RECONCILE_SECONDS in a coordinator process."""

    def __init__(self, reconcile: Callable[..., object] = runs_reconcile) -> None:
        super().__init__(name="runs-reconciler", daemon=True)
        self.reconcile = reconcile
        self.stopped = threading.Event()

    def run(self) -> None:
        first = True
        while not self.stopped.is_set():
            close_old_connections()
            try:
                self.reconcile(resend_all=first)
                first = False
            except Exception:  # the database or broker may be away; the next pass tries again
                logger.warning("Reconciling the runs failed; trying again.", exc_info=True)
            sign_pending_checkpoint()
            self.stopped.wait(settings.FEDERATION_RECONCILE_SECONDS)
        close_old_connections()

    def stop(self) -> None:
        self.stopped.set()
