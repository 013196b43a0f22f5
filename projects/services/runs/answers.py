"""A site's answer arriving: proven the site's own before it touches a row, then counted once.

In order, an answer is **dropped** (it never counts, never marks a site rejected or dropped, and
so never blocks that site's genuine answer) when it is not a well-formed ``SiteReply``, names a
dispatch that does not exist or another run, round or site than its ticket's, is unsigned, is
not signed by the site's active key, echoes another dispatch's nonce or launch time, or carries
an update other than the one it signed. Dropped answers are counted on the round they claim and
reported once, when it closes.

An answer that is the site's own is then **rejected** with its reason (a refusal the site
signed, a sample count above the registered rows, an update that does not fit the model) or
**counted**. One conditional update finds the row still dispatched and moves it on, which is what
makes a duplicate count once and a late answer (after the round closed, or after the site was
dropped or rejected) change nothing.
"""

import functools
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from alliance.models import Institution
from alliance.services.audit import audit_record
from projects.federation import encoding, signing
from projects.federation.protocol import (
    Envelope,
    ProtocolError,
    SiteReply,
    open_wire,
)
from projects.federation.validation import UpdateRejected, validate_update
from projects.models import Dataset, Round, SiteKey, SiteRound, TrainingRun
from projects.services.runs.rounds import close_when_answered, run_advance
from projects.services.runs.secure import answer_record as secure_answer_record
from projects.services.runs.store import round_start_bytes
from projects.services.verification import evaluation_dispatch, evaluation_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dispatch:
    """What checking an answer needs of the dispatch it names: one query's worth."""

    pk: int
    status: str
    nonce: str
    round_id: int
    run_id: int
    round_number: int
    slug: str
    rows: int
    created_at: datetime  # the run's launch time
    max_update_bytes: int
    max_update_norm: float
    public_key: str | None  # the site's active key, if it has one
    kind: str = "train"
    secure: bool = False  # the run is securely aggregated

    @property
    def launched(self) -> str:
        return self.created_at.isoformat()


@dataclass(frozen=True)
class _RunKey:
    pk: int
    created_at: datetime


def _table(model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@functools.cache
def _dispatch_sql() -> str:
    """The one query behind ``_dispatch``, written once: the ORM took milliseconds of CPU to
    build and compile it for every answer, many times what the database takes to answer it."""
    site, round_, run = _table(SiteRound), _table(Round), _table(TrainingRun)
    institution, dataset, key = _table(Institution), _table(Dataset), _table(SiteKey)
    return (
        f"SELECT s.id, s.status, s.nonce, s.round_id, r.run_id, r.number, i.slug, d.row_count,"
        f" t.created_at, t.max_update_bytes, t.max_update_norm,"
        f" (SELECT k.public_key FROM {key} k WHERE k.institution_id = s.institution_id"
        f" AND k.status = %s ORDER BY k.registered_at DESC LIMIT 1),"
        f" t.secure_aggregation"
        f" FROM {site} s JOIN {round_} r ON r.id = s.round_id JOIN {run} t ON t.id = r.run_id"
        f" JOIN {institution} i ON i.id = s.institution_id JOIN {dataset} d ON d.id = s.dataset_id"
        f" WHERE s.id = %s"
    )


def _aware(value: Any) -> datetime:
    """A timestamp as the ORM returns it (SQLite's driver hands back text)."""
    if isinstance(value, str):
        value = parse_datetime(value)
    assert isinstance(value, datetime)
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


def _dispatch(ticket: int) -> Dispatch | None:
    """The site row the ticket names, its run's limits and the site's active key."""
    with connection.cursor() as cursor:
        cursor.execute(_dispatch_sql(), [SiteKey.Status.ACTIVE.value, ticket])
        row = cursor.fetchone()
    if row is None:
        return None
    return Dispatch(
        pk=row[0],
        status=row[1],
        nonce=row[2],
        round_id=row[3],
        run_id=row[4],
        round_number=row[5],
        slug=row[6],
        rows=row[7],
        created_at=_aware(row[8]),
        max_update_bytes=row[9],
        max_update_norm=row[10],
        public_key=row[11],
        secure=bool(row[12]),
    )


@functools.lru_cache(maxsize=1024)
def _public_key(text: str) -> Ed25519PublicKey | None:
    try:
        return signing.public_from_text(text)
    except signing.BadKey:
        return None


def _forgery(envelope: Envelope[SiteReply], dispatch: Any) -> str | None:
    """Why the answer is not provably the site's own answer to this dispatch; None if it is.

    ``dispatch`` is a round's ``Dispatch`` or an evaluation's: the same checks for both.
    """
    reply = envelope.body
    if dispatch is None or (
        dispatch.kind,
        dispatch.run_id,
        dispatch.round_number,
        dispatch.slug,
    ) != (reply.kind, reply.run, reply.round, reply.site):
        return "unknown_dispatch"
    if not envelope.signature:
        return "unsigned"
    public = _public_key(dispatch.public_key) if dispatch.public_key else None
    if public is None:
        return "no_active_key"
    if not envelope.signed_by(public):
        return "bad_signature"
    if reply.nonce != dispatch.nonce or reply.launched != dispatch.launched:
        return "replayed"
    if reply.error is None and reply.kind == "train" and reply.stage in ("", "masked"):
        # The update travels beside the signed body: it must be the one the site signed.
        try:
            envelope.attachment_bytes(reply.update_sha256, limit=dispatch.max_update_bytes)
        except ProtocolError:
            return "altered"
    return None


def _count_forged(run_id: int, number: int, reason: str) -> None:
    """Count a dropped answer on the open round it claims (reported when the round closes)."""
    logger.warning("Dropped an answer claiming run %s round %s: %s.", run_id, number, reason)
    with transaction.atomic():
        round_ = (
            Round.objects.select_for_update(of=("self",))
            .filter(run_id=run_id, number=number, status=Round.Status.RUNNING)
            .order_by()
            .only("pk", "forged")
            .first()
        )
        if round_ is not None:
            forged = dict(round_.forged)
            forged[reason] = forged.get(reason, 0) + 1
            Round.objects.filter(pk=round_.pk).update(forged=forged)


def _accept_update(
    dispatch: Dispatch, envelope: Envelope[SiteReply], fields: dict[str, Any]
) -> tuple[str, dict] | None:
    """Check the site's claims against the records; add the update to ``fields``, or say why not."""
    reply = envelope.body
    if not 1 <= reply.sample_count <= dispatch.rows:
        return ("sample_count", {"claimed": reply.sample_count, "registered": dispatch.rows})
    blob = envelope.attachment_bytes(reply.update_sha256, limit=dispatch.max_update_bytes)
    try:
        update = encoding.decode_params(blob, max_bytes=dispatch.max_update_bytes)
        run = _RunKey(dispatch.run_id, dispatch.created_at)
        reference = encoding.decode_params(round_start_bytes(run, dispatch.round_number))
        validate_update(update, reference, max_norm=dispatch.max_update_norm)
    except encoding.EncodingError as exc:
        return (exc.code, exc.detail)
    except UpdateRejected as exc:
        return (exc.rejection.code, exc.rejection.detail)
    fields.update(
        update=encoding.to_text(blob),
        update_sha256=reply.update_sha256,
        update_bytes=len(blob),
        sample_count=reply.sample_count,
    )
    return None


def update_receive(wire: Any) -> None:
    """A site's answer arrived: record it; the last one closes the round and opens the next."""
    _record_answer(wire, time.time())


def _record_answer(wire: Any, received: float) -> None:
    """Record the answer; close the round (and open the next) when it was the last awaited."""
    try:
        envelope = open_wire(wire, SiteReply)
    except ProtocolError as exc:
        logger.warning("Dropped an answer that is not a site reply (%s).", exc)
        return None
    reply = envelope.body
    if reply.kind != "train":
        evaluation = evaluation_dispatch(reply.ticket)
        forgery = _forgery(envelope, evaluation)
        if forgery is not None:
            logger.warning(
                "Dropped an evaluation answer claiming to be from %s: %s.", reply.site, forgery
            )
        else:
            evaluation_record(evaluation, reply)
        return None
    dispatch = _dispatch(reply.ticket)
    forgery = _forgery(envelope, dispatch)
    if forgery is not None:
        _count_forged(reply.run, reply.round, forgery)
        return None
    assert dispatch is not None
    if dispatch.secure or reply.stage:
        # A secure run's answers count only as stages; a plain update is never accepted there.
        if not (dispatch.secure and reply.stage):
            _count_forged(reply.run, reply.round, "not_secure")
            return None
        closed = secure_answer_record(dispatch, envelope)
        if closed is not None:  # the last stage closed the round: open the next one
            run_advance(closed)
        return None
    timings = dict(reply.timings)
    replied = timings.pop("replied_at", None)
    if replied is not None:
        timings["return"] = max(received - replied, 0.0)
    fields: dict[str, Any] = {
        "answered_at": timezone.now(),
        "timings": timings,
        "metrics": dict(reply.metrics),
        "global_metrics": dict(reply.global_metrics),
    }
    if reply.error is not None:
        rejection: tuple[str, dict] | None = (reply.error.code, dict(reply.error.detail))
    else:
        rejection = _accept_update(dispatch, envelope, fields)
    # Closing or cancelling a round moves every dispatched site on in the same transaction, so
    # "still dispatched" also means "its round is still open".
    if rejection is None:
        if not _move_on(dispatch.pk, status=SiteRound.Status.CONTRIBUTED, **fields):
            logger.info(
                "Ignored a late or repeated answer from %s for round %s.",
                dispatch.slug,
                dispatch.round_number,
            )
            return None
    elif not _reject(dispatch, rejection, fields):
        return None
    if _awaiting(dispatch.round_id):
        return None
    close_when_answered(dispatch.run_id, dispatch.round_number, dispatch.round_id)
    return None


def _move_on(pk: int, **fields: Any) -> bool:
    """``SiteRound.objects.filter(pk=pk, status=DISPATCHED).update(**fields)`` as one statement
    built without the ORM's query compiler (each value still prepared by its field)."""
    meta = SiteRound._meta
    quote = connection.ops.quote_name
    columns, params = [], []
    for name, value in fields.items():
        field = meta.get_field(name)
        columns.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    sql = f"UPDATE {_table(SiteRound)} SET {', '.join(columns)} WHERE id = %s AND status = %s"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, pk, SiteRound.Status.DISPATCHED.value])
        return cursor.rowcount == 1


def _awaiting(round_id: int) -> bool:
    """Whether a site of the round has still to answer (read after this answer's commit)."""
    sql = f"SELECT 1 FROM {_table(SiteRound)} WHERE round_id = %s AND status = %s LIMIT 1"
    with connection.cursor() as cursor:
        cursor.execute(sql, [round_id, SiteRound.Status.DISPATCHED.value])
        return cursor.fetchone() is not None


def _reject(dispatch: Dispatch, rejection: tuple[str, dict], fields: dict) -> bool:
    code, detail = rejection
    mine = SiteRound.objects.filter(pk=dispatch.pk, status=SiteRound.Status.DISPATCHED)
    reason = rejection_text(code, detail)[:2000]
    with transaction.atomic():
        site = mine.select_related("round__run", "institution").order_by().first()
        if site is None or not mine.filter(pk=site.pk).update(
            status=SiteRound.Status.REJECTED, reason_code=code[:32], reason=reason, **fields
        ):
            return False
        audit_record(
            actor=None,
            action="round.update_rejected",
            target=site.round.run,
            subject_institution=site.institution,
            payload={
                "run": site.round.run.number,
                "round": dispatch.round_number,
                "site": dispatch.slug,
                "code": code,
                "reason": reason,
            },
        )
    return True


def rejection_text(code: str, detail: dict) -> str:
    """The reason a site's answer was not used, in the reader's language where it is known."""
    texts = {
        "too_large": _("The update is larger than the limit a run accepts (%(detail)s)."),
        "malformed": _("The update is not a valid parameter file (%(detail)s)."),
        "count": _("The update has a different number of arrays than the model (%(detail)s)."),
        "shape": _("The update's arrays have other shapes than the model's (%(detail)s)."),
        "dtype": _("The update's arrays have another number type than the model's (%(detail)s)."),
        "not_finite": _("The update holds values that are not finite numbers (%(detail)s)."),
        "norm": _("The update moves the model farther than the run allows (%(detail)s)."),
        "sample_count": _(
            "The site claimed more training rows than its registered dataset has (%(detail)s)."
        ),
        "hash_mismatch": _(
            "The site's data file differs from the registered dataset (SHA-256 mismatch)."
        ),
        "missing_file": _("The site has no file under the dataset's registered site key."),
        "outside_folder": _("The site refused a file name that would leave its data folder."),
        "missing_column": _("The site's file lacks a column the model needs (%(detail)s)."),
        "not_numeric": _("The site's file holds a value that is not a number (%(detail)s)."),
        "unknown_label": _("The site's file holds a label outside the problem's classes."),
        "empty": _("The site's file has too few rows to train on."),
        "invalid_task": _("The site could not read the round's task (%(detail)s)."),
        "diverged": _("Training at the site produced numbers that are not finite."),
        "site_error": _("Training failed at the site (%(detail)s)."),
        "privacy_budget": _(
            "The site refused the round: its own ledger says the round would take its dataset "
            "past the agreement's privacy budget (%(detail)s)."
        ),
    }
    text = texts.get(code)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(detail.items())) if detail else "-"
    if text is None:
        return _("The site refused the round (%(code)s: %(detail)s).") % {
            "code": code,
            "detail": shown,
        }
    return text % {"detail": shown}
