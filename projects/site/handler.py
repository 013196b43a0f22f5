"""A site worker's handling of one task: obey only the portal, answer only for itself.

In order, a message is refused (logged in the site's own log, and not answered) when it is not
a well-formed ``SiteMessage``, is unsigned or signed by any key but the portal's, is addressed to
an institution this worker does not serve, or is past its deadline. A message that passes those
is the portal's own request for this site; if the site still cannot train (a file outside its
folder, a changed file, bad parameters) it answers with a signed refusal whose detail names no
value from its data. Otherwise it trains and answers with a signed update.

Every task, obeyed or refused, is one line in the site's hash-chained log.
"""

import logging
import time
from collections.abc import Callable
from typing import Any

from django.utils import timezone

from projects.federation import encoding, privacy
from projects.federation.protocol import (
    Envelope,
    ProtocolError,
    SiteError,
    SiteMessage,
    SiteReply,
    canonical,
    open_wire,
    sha256_hex,
)
from projects.federation.secagg import SecAggFailure
from projects.federation.site import evaluate_on_site, score_on_site, train_on_site
from projects.site.identity import (
    PRIVATE_DIR,
    SiteIdentity,
    data_file,
    portal_public_key,
    site_identities,
)
from projects.site.secure import secure_answer

logger = logging.getLogger(__name__)

# A site's clock and the portal's differ a little: a deadline counts this much later.
CLOCK_GRACE = 60


def _message_hash(wire: Any) -> str:
    try:
        return sha256_hex(canonical(wire if isinstance(wire, dict) else {"raw": str(wire)[:1000]}))
    except (TypeError, ValueError):
        return ""


def _receiver(queue: str | None, identities: dict[str, SiteIdentity]) -> SiteIdentity | None:
    """Whose log records a message that could not be attributed from its body."""
    if queue and queue.startswith("site.") and queue[5:] in identities:
        return identities[queue[5:]]
    if len(identities) == 1:
        return next(iter(identities.values()))
    return None


def _log(identity: SiteIdentity | None, **entry: Any) -> None:
    entry = {"at": timezone.now().isoformat(), **entry}
    if entry.get("outcome") == "refused":
        logger.warning(
            "Site %s refused a task: %s", identity.slug if identity else "?", entry["reason"]
        )
    if identity is not None:
        identity.log.append(entry)


def handle_task(wire: Any, *, queue: str | None = None) -> Envelope[SiteReply] | None:
    """The signed reply to a task message, or None when the message is refused unanswered."""
    started = time.time()
    identities = site_identities()
    message_sha256 = _message_hash(wire)
    try:
        envelope = open_wire(wire, SiteMessage)
    except ProtocolError as exc:
        _log(
            _receiver(queue, identities),
            outcome="refused",
            reason="malformed",
            detail=exc.detail,
            message_sha256=message_sha256,
        )
        return None
    message = envelope.body
    identity = identities.get(message.site)
    head = {
        "kind": message.kind,
        "run": message.run,
        "round": message.round,
        "site": message.site,
        "ticket": message.ticket,
        "message_sha256": message_sha256,
    }
    portal = portal_public_key()
    refusal = None
    if portal is None:
        refusal = "no_portal_key"
    elif not envelope.signature:
        refusal = "unsigned"
    elif not envelope.signed_by(portal):
        refusal = "bad_signature"
    elif identity is None:
        refusal = "another_institution"
    elif message.deadline + CLOCK_GRACE < started:
        refusal = "expired"
    if refusal is not None:
        # Not the portal's request for this site: nobody is owed an answer.
        _log(identity or _receiver(queue, identities), outcome="refused", reason=refusal, **head)
        return None
    assert identity is not None
    # A secure round sends one ticket several stages: each has its own answer.
    answer_key = (
        message.ticket,
        f"{message.nonce}/{message.stage}" if message.stage else message.nonce,
    )
    answered = identity.answers.get(answer_key)
    if answered is not None:
        # Sent again by the coordinator: the same signed answer, not a second training.
        _log(identity, outcome="answered_again", reason="", **head)
        return answered
    reply = _answer(identity, envelope, head, started)
    if reply.body.error is None:  # a refusal is worked out again: the cause may be mended
        identity.answers.put(answer_key, reply)
    return reply


def _score(
    identity: SiteIdentity,
    envelope: Envelope[SiteMessage],
    path: Any,
    head: dict,
    timings: dict[str, float],
    started: float,
) -> Envelope[SiteReply]:
    """Score every candidate model on the held-out file; raises ProtocolError when it cannot."""
    message = envelope.body
    limit = min(message.max_update_bytes * max(len(message.candidates), 1), 64 * 1024 * 1024)
    blob = envelope.attachment_bytes(message.params_sha256, limit=limit)
    if sum(message.candidates) != len(blob):
        raise ProtocolError("invalid_task", {"field": "candidates"})
    candidates, offset = [], 0
    for size in message.candidates:
        chunk = blob[offset : offset + size]
        candidates.append(encoding.decode_params(chunk, max_bytes=message.max_update_bytes))
        offset += size
    scores = score_on_site(
        message.task, candidates, data_path=path, expected_sha256=message.dataset.sha256
    )
    reply = SiteReply.answering(
        message,
        identity.kid,
        sample_count=int(scores[0]["rows"]) if scores else 0,
        scores=tuple(scores),
        timings={**timings, "compute": time.time() - started, "replied_at": time.time()},
    )
    _log(identity, outcome="accepted", reason="", data_sha256=message.dataset.sha256, **head)
    return Envelope.seal(reply, identity.key)


# The site's own privacy budget ledger, beside its log.
PRIVACY_LEDGER = "privacy-ledger.jsonl"


def _admit_privacy(identity: SiteIdentity, message: SiteMessage) -> Callable[[], None] | None:
    """The site's own check of its privacy budget before a DP round, and the spend to record
    once the round is trained; ProtocolError ``privacy_budget`` when the round would exceed it.
    """
    dp = message.task.spec.dp
    if dp is None:
        return None
    ledger = privacy.SiteLedger(identity.folder / PRIVATE_DIR / PRIVACY_LEDGER)
    event = privacy.round_event(
        rows=privacy.training_rows(message.dataset.rows, message.task.validation_share),
        batch_size=message.task.batch_size,
        epochs=message.task.epochs,
        noise_multiplier=dp.noise_multiplier,
    )
    key = (message.run, message.launched, message.round)
    sha256 = message.dataset.sha256
    try:
        ledger.admit(sha256=sha256, key=key, event=event, ceiling=dp.ceiling, delta=dp.delta)
    except privacy.BudgetExceeded as exc:
        raise ProtocolError(
            "privacy_budget",
            {
                "spent": round(exc.spent, 3),
                "needed": round(exc.needed, 3),
                "ceiling": exc.ceiling,
            },
        ) from exc
    return lambda: ledger.record(sha256=sha256, key=key, event=event)


def _secure(
    identity: SiteIdentity,
    envelope: Envelope[SiteMessage],
    path: Any,
    head: dict,
    timings: dict[str, float],
    started: float,
) -> Envelope[SiteReply]:
    """One stage of a securely aggregated round; raises SecAggFailure or ProtocolError.

    The masked stage trains: with differential privacy the site's own ledger is asked first,
    as for a plain round, and the spend recorded once the masked input is ready to leave.
    """
    message = envelope.body
    spend = _admit_privacy(identity, message) if message.stage == "masked" else None
    answer, fields, attachment = secure_answer(identity, envelope, path)
    if spend is not None:
        spend()
    reply = SiteReply.answering(
        message,
        identity.kid,
        secagg=answer,
        timings={**timings, "compute": time.time() - started, "replied_at": time.time()},
        **fields,
    )
    _log(identity, outcome="accepted", reason="", stage=message.stage, **head)
    return Envelope.seal(reply, identity.key, attachment)


def _answer(
    identity: SiteIdentity, envelope: Envelope[SiteMessage], head: dict, started: float
) -> Envelope[SiteReply]:
    """Train on the portal's task for this site, or refuse it; the signed answer either way."""
    message = envelope.body
    sent = envelope.sent_at
    queue_wait = max(started - sent, 0.0) if sent is not None else 0.0
    timings: dict[str, float] = {"queue_wait": queue_wait}
    if sent is not None:
        timings["sent_at"] = sent
    try:
        if message.task.site != message.site:
            raise ProtocolError("invalid_task", {"field": "site"})
        path = data_file(identity, message.dataset.site_key)
        if path is None:
            raise ProtocolError("outside_folder", {"field": "site_key"})
        if message.kind == "score":
            return _score(identity, envelope, path, head, timings, started)
        if message.stage:
            return _secure(identity, envelope, path, head, timings, started)
        blob = envelope.attachment_bytes(message.params_sha256, limit=message.max_update_bytes)
        params = encoding.decode_params(blob, max_bytes=message.max_update_bytes)
        if message.kind == "train":
            spend = _admit_privacy(identity, message)
            result = train_on_site(
                message.task, params, data_path=path, expected_sha256=message.dataset.sha256
            )
            if spend is not None:
                spend()
        else:
            result = evaluate_on_site(
                message.task,
                params,
                data_path=path,
                expected_sha256=message.dataset.sha256,
                holdout=message.kind == "validate",
            )
    except (ProtocolError, encoding.EncodingError, SecAggFailure) as exc:
        code = exc.code if isinstance(exc, ProtocolError | SecAggFailure) else "invalid_task"
        detail = (
            exc.detail if isinstance(exc, ProtocolError | SecAggFailure) else {"field": "params"}
        )
        if isinstance(exc, SecAggFailure):
            code = f"secagg_{code}"[:32]
        reply = SiteReply.answering(
            message,
            identity.kid,
            error=SiteError(code, detail),
            timings={**timings, "compute": time.time() - started, "replied_at": time.time()},
            secagg={"stage": message.stage} if message.stage else {},
        )
        _log(
            identity,
            outcome="refused",
            reason=code,
            data_sha256=str(exc.detail.get("actual", "")) if code == "hash_mismatch" else "",
            **head,
        )
        return Envelope.seal(reply, identity.key)
    except Exception:  # the coordinator must hear of any failure, not wait for the deadline
        logger.exception("Site %s failed round %s", message.site, message.round)
        reply = SiteReply.answering(
            message,
            identity.kid,
            error=SiteError("site_error", {}),
            timings={**timings, "compute": time.time() - started, "replied_at": time.time()},
            secagg={"stage": message.stage} if message.stage else {},
        )
        _log(identity, outcome="refused", reason="site_error", **head)
        return Envelope.seal(reply, identity.key)

    if message.kind != "train":
        reply = SiteReply.answering(
            message,
            identity.kid,
            sample_count=result.sample_count,
            metrics=result.metrics,
            timings={
                **result.timings,
                **timings,
                "compute": time.time() - started,
                "replied_at": time.time(),
            },
        )
        _log(identity, outcome="accepted", reason="", data_sha256=message.dataset.sha256, **head)
        return Envelope.seal(reply, identity.key)
    update = encoding.encode_params(result.params)
    if len(update) > message.max_update_bytes:
        reply = SiteReply.answering(
            message,
            identity.kid,
            error=SiteError("too_large", {"field": "update"}),
            timings={**timings, "compute": time.time() - started, "replied_at": time.time()},
        )
        _log(identity, outcome="refused", reason="too_large", **head)
        return Envelope.seal(reply, identity.key)
    update_sha256 = encoding.params_sha256(update)
    reply = SiteReply.answering(
        message,
        identity.kid,
        update_sha256=update_sha256,
        sample_count=result.sample_count,
        metrics=result.metrics,
        global_metrics=result.global_metrics,
        timings={
            **result.timings,
            **timings,
            "compute": time.time() - started,
            "replied_at": time.time(),
        },
    )
    _log(
        identity,
        outcome="accepted",
        reason="",
        data_sha256=message.dataset.sha256,
        update_sha256=update_sha256,
        **head,
    )
    return Envelope.seal(reply, identity.key, update)
