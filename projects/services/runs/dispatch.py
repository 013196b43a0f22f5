"""What the coordinator sends: a round's task for each site, built once, signed, published.

A round's messages are built from the database rows of the round (inside the transaction that
opens it) and published after commit; a coordinator that resumes an open round rebuilds the same
messages from the same rows. Each is a ``SiteMessage`` signed with the portal's key
(``PORTAL_SIGNING_KEY``); the global parameters travel beside it, bound by their SHA-256.
"""

import dataclasses
import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from portal.common.keys import portal_key
from projects.federation import strategies
from projects.federation.protocol import (
    DatasetRef,
    Envelope,
    LearningSpec,
    RoundTask,
    SiteMessage,
)
from projects.models import Round, SiteRound, TrainingRun

logger = logging.getLogger(__name__)

_in_process: ContextVar[bool] = ContextVar("runs_in_process", default=False)


@contextmanager
def in_process() -> Iterator[None]:
    """Publish nothing inside this block: the caller plays the sites itself, with the same code
    (the demo's seeded run). Everything else, from the rows to the audit trail, is as usual."""
    token = _in_process.set(True)
    try:
        yield
    finally:
        _in_process.reset(token)


def publishing() -> bool:
    return not _in_process.get()


def new_nonce() -> str:
    return secrets.token_hex(16)


def round_task(run: TrainingRun, number: int, slug: str) -> RoundTask:
    """What site ``slug`` trains in round ``number`` of ``run``.

    The benchmark and the tests replay runs in process from the same task, so both read it here.
    """
    strategy = strategies.get_strategy(run.strategy)
    mu = run.strategy_options.get("mu", 0.0) if "mu" in strategy.client_options else 0.0
    return RoundTask(
        family=run.model_family,
        family_options=dict(run.family_options),
        spec=LearningSpec.from_json(run.spec),
        epochs=run.local_epochs,
        batch_size=run.batch_size,
        learning_rate=run.learning_rate,
        proximal_mu=float(mu),
        seed=run.seed,
        round_number=number,
        site=slug,
        validation_share=run.validation_share,
    )


def launched_text(run: TrainingRun) -> str:
    """The run's launch time as the protocol carries it."""
    return run.created_at.isoformat()


def site_message(
    run: TrainingRun,
    round_: Round,
    site: SiteRound,
    params_sha256: str,
    task: RoundTask | None = None,
) -> SiteMessage:
    """The task for one site's row of a round (``site.institution`` and ``site.dataset`` read).

    ``task``: the round's task for any site, when the caller built it once for the round.
    """
    slug = site.institution.slug
    task = (
        dataclasses.replace(task, site=slug)
        if task is not None
        else round_task(run, round_.number, slug)
    )
    return SiteMessage(
        kind="train",
        run=run.pk,
        launched=launched_text(run),
        round=round_.number,
        site=slug,
        ticket=site.pk,
        nonce=site.nonce,
        deadline=int(round_.deadline_at.timestamp()) + 1,
        dataset=DatasetRef(
            site_key=site.dataset.site_key,
            sha256=site.dataset.sha256,
            rows=site.dataset.row_count,
        ),
        task=task,
        params_sha256=params_sha256,
        max_update_bytes=run.max_update_bytes,
    )


def round_messages(
    run: TrainingRun, round_: Round, sites: list[SiteRound], params_sha256: str
) -> list[SiteMessage]:
    """Every site's task of a round: the round's task is read from the run once, not per site."""
    task = round_task(run, round_.number, "")
    return [site_message(run, round_, s, params_sha256, task) for s in sites]


def seal(messages: list[SiteMessage], params: bytes) -> list[Envelope[SiteMessage]]:
    """Sign each message with the portal's key; the parameters ride beside them."""
    key = portal_key()
    return [Envelope.seal(message, key, params) for message in messages]


def publish(envelopes: list[Envelope[SiteMessage]]) -> None:
    """Put each site's task on its own queue ``site.<slug>``.

    In one batch: on Redis the round's messages go in one pipeline, one round trip rather than
    one per site; a failure sends none of them, and the reconciler sends the round again.
    """
    from projects.site_tasks import site_train_task

    with site_train_task.app.producer_or_acquire() as producer, producer.batch():
        for envelope in envelopes:
            wire: dict[str, Any] = envelope.to_wire()
            wire["sent_at"] = time.time()  # a timing annotation, outside the signature
            site_train_task.apply_async(
                args=[wire], queue=f"site.{envelope.body.site}", producer=producer
            )


def publish_safely(envelopes: list[Envelope[SiteMessage]]) -> bool:
    """Publish; when the broker is away, say so and leave it to the reconciler to send again."""
    if not publishing():
        return True
    try:
        publish(envelopes)
    except Exception:  # any broker failure: the site rows still say what must be sent
        logger.warning(
            "Could not publish %s task(s); the reconciler sends them again.",
            len(envelopes),
            exc_info=True,
        )
        return False
    return True
