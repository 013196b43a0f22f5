"""Federated training runs: launch, dispatch each round, count updates, aggregate, cancel.

The coordinator's state lives in the database. Celery carries the work (``projects.tasks`` for the
coordinator queue, ``projects.site_tasks`` for each site's queue) and every step here is
idempotent: a duplicate delivery of an update counts once, a late one after its round closed is
ignored, and ``runs_resume`` picks up whatever a stopped coordinator left open.
"""

import datetime
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.models import Institution, Role
from alliance.permissions import acting_membership
from alliance.services.audit import audit_record
from portal.common.errors import ApplicationError, Conflict
from projects.federation import encoding, strategies
from projects.federation.families import get_family
from projects.federation.loop import initial_params
from projects.federation.validation import UpdateRejected, validate_update
from projects.models import (
    ModelFamily,
    ModelVersion,
    Participation,
    Problem,
    Round,
    SiteRound,
    Strategy,
    TaskType,
    TrainingRun,
)
from projects.services.policy import RunConfig, run_policy_check

logger = logging.getLogger(__name__)

LAUNCH_ROLES = (Role.RESEARCHER, Role.ADMIN)

# Defaults a launch form starts from; the demo problem learns well with them.
DEFAULTS: dict[str, Any] = {
    "rounds": 10,
    "local_epochs": 10,
    "batch_size": 32,
    "learning_rate": 0.5,
    "round_deadline": 120,
    "seed": 42,
    "strategy": Strategy.FEDAVG,
}
# A little L2 keeps the demo's logistic regression from landing a row either side of the
# central model by the luck of its last step.
DEFAULT_FAMILY_OPTIONS: dict[str, dict[str, Any]] = {ModelFamily.LOGISTIC_REGRESSION: {"l2": 0.003}}
LIMITS: dict[str, tuple[float, float]] = {
    "rounds": (1, 500),
    "local_epochs": (1, 100),
    "batch_size": (1, 10_000),
    "learning_rate": (1e-6, 10.0),
    "round_deadline": (5, 0),  # upper bound: settings.FEDERATION_MAX_ROUND_DEADLINE
    "seed": (0, 2**31 - 1),
}


@dataclass(frozen=True)
class LaunchConfig:
    """What a researcher chooses for a run; everything else follows from the problem."""

    model_family: str = ModelFamily.LOGISTIC_REGRESSION
    strategy: str = DEFAULTS["strategy"]
    strategy_options: dict[str, float] = field(default_factory=dict)
    family_options: dict[str, Any] = field(default_factory=dict)
    rounds: int = DEFAULTS["rounds"]
    local_epochs: int = DEFAULTS["local_epochs"]
    batch_size: int = DEFAULTS["batch_size"]
    learning_rate: float = DEFAULTS["learning_rate"]
    min_contributors: int | None = None  # None: what the agreement requires
    round_deadline: int = DEFAULTS["round_deadline"]
    seed: int = DEFAULTS["seed"]


# --- Reading the problem the same way everywhere --------------------------------------------


def _learning_spec(problem: Problem, datasets: list[Any], family: str) -> dict[str, Any]:
    """Features, label, classes and scaling ranges every site reads its file with.

    Inputs are the schema's required numeric features (an optional one may be missing from a
    site's file). Ranges come from the ratified schema's bounds, falling back to the registered
    datasets' observed minimum and maximum, so every site scales its data identically.
    """
    revision = problem.revisions.get(number=problem.current_revision)
    label = revision.label_column
    schema = {f["name"]: f for f in revision.features}
    observed: dict[str, tuple[float, float]] = {}
    for dataset in datasets:
        for column in dataset.columns:
            low, high = column.get("minimum"), column.get("maximum")
            if low is None or high is None:
                continue
            name = column["name"]
            if name in observed:
                low, high = min(low, observed[name][0]), max(high, observed[name][1])
            observed[name] = (float(low), float(high))
    features: list[str] = []
    ranges: list[tuple[float, float]] = []
    for name, f in schema.items():
        if name == label or f.get("type") != "numeric" or not f.get("required", True):
            continue
        low = f.get("min", observed.get(name, (None, None))[0])
        high = f.get("max", observed.get(name, (None, None))[1])
        if low is None or high is None:
            low, high = 0.0, 1.0
        features.append(name)
        ranges.append((float(low), float(high)))
    if not features:
        raise ApplicationError(
            _("The problem's schema has no required numeric feature for a model to learn from.")
        )
    classification = revision.task_type in (TaskType.BINARY, TaskType.MULTICLASS)
    classes: list[str] | None = None
    if classification:
        classes = [str(c) for c in schema.get(label, {}).get("categories") or []]
        if not classes:
            classes = ["0", "1"] if revision.task_type == TaskType.BINARY else []
        if len(classes) < 2:
            raise ApplicationError(
                _("The label %(label)s lists no categories to classify into.") % {"label": label}
            )
    if family == ModelFamily.LINEAR_REGRESSION and classification:
        raise ApplicationError(
            _("Linear regression predicts numbers; this problem is a classification.")
        )
    if family == ModelFamily.LOGISTIC_REGRESSION and not classification:
        raise ApplicationError(
            _(
                "Logistic regression classifies; this problem is a regression. Choose linear "
                "regression or a multilayer perceptron."
            )
        )
    return {
        "features": features,
        "label": label,
        "classes": classes,
        "feature_ranges": ranges,
        "task": "classification" if classification else "regression",
        "metric": revision.metric,
    }


def _check_number(name: str, value: Any, errors: dict[str, str]) -> None:
    low, high = LIMITS[name]
    if name == "round_deadline":
        high = settings.FEDERATION_MAX_ROUND_DEADLINE
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or not low <= value <= high:
        errors[name] = _("Give a number between %(low)s and %(high)s.") % {
            "low": low,
            "high": high,
        }


def launch_errors(config: LaunchConfig) -> dict[str, str]:
    """Field errors of a launch configuration, before any policy or permission question."""
    errors: dict[str, str] = {}
    for name in LIMITS:
        _check_number(name, getattr(config, name), errors)
    if config.model_family not in ModelFamily.values:
        errors["model_family"] = _("Choose one of the model families.")
    if config.strategy not in Strategy.values:
        errors["strategy"] = _("Choose one of the strategies.")
    else:
        try:
            strategies.strategy_options(config.strategy, config.strategy_options)
        except (ValueError, TypeError) as exc:
            errors["strategy_options"] = str(exc)
    if config.model_family in ModelFamily.values:
        try:
            get_family(config.model_family, config.family_options or None)
        except (ValueError, TypeError) as exc:
            errors["family_options"] = str(exc)
    if config.min_contributors is not None:
        value = config.min_contributors
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
            errors["min_contributors"] = _("Give a whole number of at least 1.")
    return errors


# --- Launch ----------------------------------------------------------------------------------


def can_launch(actor: AbstractBaseUser | None, problem: Problem) -> bool:
    """Researchers (and admins) of an institution that actively contributes to the problem."""
    if actor is None or not actor.is_authenticated:
        return False
    try:
        membership = acting_membership(actor, roles=LAUNCH_ROLES)
    except PermissionDenied:
        return False
    return problem.participations.filter(
        institution=membership.institution,
        role=Participation.Role.CONTRIBUTOR,
        status=Participation.Status.ACTIVE,
    ).exists()


def _store_model(run: TrainingRun, round_number: int, blob: bytes, metrics: dict) -> ModelVersion:
    sha = encoding.params_sha256(blob)
    name = f"models/{sha[:2]}/{sha}.npy"
    # Content-addressed: the same parameters are one file, whichever run produced them.
    if not default_storage.exists(name):
        name = default_storage.save(name, ContentFile(blob))
    _PARAMS_CACHE[sha] = blob
    # Only once committed: a rolled-back round must not leave its model in the map.
    key = _model_key(run, round_number)
    transaction.on_commit(lambda: _MODEL_SHA.__setitem__(key, sha))
    return ModelVersion.objects.create(
        run=run,
        round_number=round_number,
        file=name,
        sha256=sha,
        size=len(blob),
        metrics=metrics,
    )


def run_launch(*, actor: AbstractBaseUser, problem: Problem, config: LaunchConfig) -> TrainingRun:
    """Launch a run on a data-ready problem under its effective agreement, or refuse and say why.

    The policy check runs here with the run's own configuration and again before every round.
    """
    if not can_launch(actor, problem):
        raise PermissionDenied(
            _("Only researchers of an institution contributing to this problem launch runs.")
        )
    errors = launch_errors(config)
    if errors:
        raise ApplicationError(_("Correct the run's settings."), extra={"errors": errors})
    membership = acting_membership(actor, roles=LAUNCH_ROLES)
    with transaction.atomic():
        problem = Problem.objects.select_for_update(of=("self",)).get(pk=problem.pk)
        agreement = problem.agreements.filter(status="effective").first()
        min_contributors = config.min_contributors or (
            agreement.min_contributors if agreement else 2
        )
        decision = run_policy_check(
            problem=problem,
            config=RunConfig(model_family=config.model_family, min_contributors=min_contributors),
        )
        if not decision.allowed:
            raise ApplicationError(
                _("This run may not start: %(reasons)s") % {"reasons": " ".join(decision.reasons)},
                extra={"reasons": list(decision.reasons)},
            )
        datasets = [c.dataset for c in decision.contributors]
        spec = _learning_spec(problem, datasets, config.model_family)
        family_options = dict(
            config.family_options or DEFAULT_FAMILY_OPTIONS.get(config.model_family, {})
        )
        if config.model_family == ModelFamily.MLP:
            family_options.setdefault("task", spec["task"])
        n_outputs = len(spec["classes"]) if spec["classes"] else 1
        number = (problem.runs.aggregate(n=Max("number"))["n"] or 0) + 1
        run = TrainingRun.objects.create(
            problem=problem,
            number=number,
            agreement=decision.agreement,
            revision=problem.current_revision,
            launched_by=actor,
            institution=membership.institution,
            model_family=config.model_family,
            family_options=family_options,
            strategy=config.strategy,
            strategy_options=strategies.strategy_options(config.strategy, config.strategy_options),
            rounds=config.rounds,
            local_epochs=config.local_epochs,
            batch_size=config.batch_size,
            learning_rate=float(config.learning_rate),
            min_contributors=min_contributors,
            round_deadline=config.round_deadline,
            seed=config.seed,
            max_update_norm=settings.FEDERATION_MAX_UPDATE_NORM,
            max_update_bytes=settings.FEDERATION_MAX_UPDATE_BYTES,
            spec=spec,
        )
        params = initial_params(
            config.model_family, family_options, len(spec["features"]), n_outputs, config.seed
        )
        initial = _store_model(run, 0, encoding.encode_params(params), {})
        audit_record(
            actor=actor,
            action="run.launched",
            target=run,
            subject_institution=membership.institution,
            payload={
                "problem": problem.slug,
                "run": run.number,
                "agreement_version": run.agreement.number,
                "terms_sha256": run.agreement.terms_sha256,
                "model_family": run.model_family,
                "strategy": run.strategy,
                "strategy_options": run.strategy_options,
                "rounds": run.rounds,
                "seed": run.seed,
                "contributors": sorted(c.institution.slug for c in decision.contributors),
                "initial_model_sha256": initial.sha256,
            },
        )
        transaction.on_commit(lambda: _send_advance(run.pk))
    return run


def _send_advance(run_id: int) -> None:
    from projects.tasks import run_advance_task

    run_advance_task.apply_async(args=[run_id], queue="coordinator")


# --- Rounds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RunFacts:
    """What checking an answer needs of its run; none of it changes after launch."""

    pk: int
    created_at: datetime.datetime
    max_update_bytes: int
    max_update_norm: float


_RUN_FACTS: dict[tuple[int, float], _RunFacts] = {}


_PARAMS_CACHE: dict[str, bytes] = {}
# (run id, run's launch time, round number) -> SHA-256 of the model after that round: a stored
# model never changes, so the coordinator need not ask the database again for the model a round
# started from. The launch time keeps a reused id (a rolled-back launch) from matching.
_MODEL_SHA: dict[tuple[int, float, int], str] = {}


def _model_key(run: TrainingRun | _RunFacts, round_number: int) -> tuple[int, float, int]:
    return (run.pk, run.created_at.timestamp(), round_number)


def _model_bytes(model: ModelVersion) -> bytes:
    """A model's stored bytes; the coordinator reads the same few models again and again."""
    blob = _PARAMS_CACHE.get(model.sha256)
    if blob is None:
        with default_storage.open(model.file.name, "rb") as handle:
            blob = handle.read()
        if encoding.params_sha256(blob) != model.sha256:
            raise RuntimeError(f"Stored model {model.file.name} does not match its SHA-256.")
        if len(_PARAMS_CACHE) > 64:
            _PARAMS_CACHE.clear()
        _PARAMS_CACHE[model.sha256] = blob
    return blob


def _run_facts(run_id: int, launched: Any) -> _RunFacts | None:
    """The run's facts, from memory when the answer names the run's launch time correctly."""
    if isinstance(launched, int | float):
        facts = _RUN_FACTS.get((run_id, float(launched)))
        if facts is not None:
            return facts
    row = (
        TrainingRun.objects.filter(pk=run_id)
        .values("pk", "created_at", "max_update_bytes", "max_update_norm")
        .order_by()
        .first()
    )
    if row is None:
        return None
    facts = _RunFacts(**row)
    if len(_RUN_FACTS) > 1024:
        _RUN_FACTS.clear()
    _RUN_FACTS[(facts.pk, facts.created_at.timestamp())] = facts
    return facts


def _round_start_bytes(run: TrainingRun | _RunFacts, number: int) -> bytes:
    """The global model round ``number`` started from (the model after round ``number - 1``)."""
    key = _model_key(run, number - 1)
    sha = _MODEL_SHA.get(key)
    if sha is not None and sha in _PARAMS_CACHE:
        return _PARAMS_CACHE[sha]
    model = ModelVersion.objects.get(run_id=run.pk, round_number=number - 1)
    blob = _model_bytes(model)
    if len(_MODEL_SHA) > 1024:
        _MODEL_SHA.clear()
    _MODEL_SHA[key] = model.sha256
    return blob


def round_task(run: TrainingRun, number: int, slug: str) -> dict[str, Any]:
    """What a site is asked to do in round ``number``: the engine's ``RoundTask`` as plain JSON.

    The benchmark replays runs in process from the same fields, so both read them here.
    """
    strategy = strategies.get_strategy(run.strategy)
    mu = run.strategy_options.get("mu", 0.0) if "mu" in strategy.client_options else 0.0
    return {
        "family": run.model_family,
        "family_options": run.family_options,
        "features": run.spec["features"],
        "label": run.spec["label"],
        "classes": run.spec["classes"],
        "feature_ranges": run.spec["feature_ranges"],
        "epochs": run.local_epochs,
        "batch_size": run.batch_size,
        "learning_rate": run.learning_rate,
        "proximal_mu": float(mu),
        "seed": run.seed,
        "round_number": number,
        "site": slug,
    }


def _site_message(run: TrainingRun, number: int, site: SiteRound, params_text: str) -> dict:
    return {
        "run": run.pk,
        "round": number,
        "site": site.institution.slug,
        # Echoed back: the answer then finds its row and its run's limits without a lookup.
        "ticket": site.pk,
        "launched": run.created_at.timestamp(),
        "site_key": site.dataset.site_key,
        "sha256": site.dataset.sha256,
        "max_bytes": run.max_update_bytes,
        "task": round_task(run, number, site.institution.slug),
        "params": params_text,
        "sent_at": time.time(),
    }


def _fail_run(run: TrainingRun, reasons: list[str], *, action: str = "run.failed") -> None:
    run.status = TrainingRun.Status.FAILED
    run.reasons = [str(r) for r in reasons]
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "reasons", "finished_at"])
    audit_record(
        actor=None,
        action=action,
        target=run,
        subject_institution=run.institution,
        payload={"problem": run.problem.slug, "run": run.number, "reasons": run.reasons},
    )


def run_advance(run_id: int) -> Round | None:
    """Start the run's next round, after asking the agreement policy again; or do nothing.

    Nothing happens when the run has finished or a round is already open (a duplicate or late
    task). A refusal by the policy fails the run with every reason.
    """
    with transaction.atomic():
        run = (
            TrainingRun.objects.select_for_update(of=("self",))
            .select_related("problem", "agreement", "institution")
            .filter(pk=run_id)
            .order_by()  # the models' default orderings would join up to the problem
            .first()
        )
        if run is None or run.is_finished:
            return None
        statuses = list(run.round_set.values_list("status", flat=True))
        if Round.Status.RUNNING in statuses:
            return None
        done = statuses.count(Round.Status.SUCCEEDED)
        if done >= run.rounds:
            return None
        if run.status == TrainingRun.Status.QUEUED:
            run.status = TrainingRun.Status.RUNNING
            run.started_at = timezone.now()
            run.save(update_fields=["status", "started_at"])
        decision = run_policy_check(
            problem=run.problem,
            config=RunConfig(
                model_family=run.model_family,
                min_contributors=run.min_contributors,
                agreement_version=run.agreement.number,
            ),
        )
        if not decision.allowed:
            _fail_run(run, list(decision.reasons), action="run.refused")
            return None
        number = done + 1
        now = timezone.now()
        round_ = Round.objects.create(
            run=run,
            number=number,
            started_at=now,
            deadline_at=now + timedelta(seconds=run.round_deadline),
            excluded=[
                {"institution": e.institution.slug, "name": e.institution.name, "reason": e.reason}
                for e in decision.excluded
            ],
        )
        sites = SiteRound.objects.bulk_create(
            SiteRound(round=round_, institution=c.institution, dataset=c.dataset)
            for c in sorted(decision.contributors, key=lambda c: c.institution.slug)
        )
        audit_record(
            actor=None,
            action="round.started",
            target=run,  # a round's events name its run, so one filter finds the whole run
            subject_institution=run.institution,
            payload={
                "problem": run.problem.slug,
                "run": run.number,
                "round": number,
                "agreement_version": run.agreement.number,
                "sites": [s.institution.slug for s in sites],
                "datasets": {s.institution.slug: s.dataset.sha256 for s in sites},
                "excluded": round_.excluded,
            },
        )
        params_text = encoding.to_text(_round_start_bytes(run, number))
        messages = [_site_message(run, number, s, params_text) for s in sites]
        deadline = run.round_deadline

        def dispatch() -> None:
            _publish(messages)
            _schedule_deadline(run_id, number, deadline)

        transaction.on_commit(dispatch)
    return round_


def _publish(messages: list[dict]) -> None:
    from projects.site_tasks import site_train_task

    with site_train_task.app.producer_or_acquire() as producer:
        for message in messages:
            message["sent_at"] = time.time()
            site_train_task.apply_async(
                args=[message], queue=f"site.{message['site']}", producer=producer
            )


def _schedule_deadline(run_id: int, number: int, countdown: float) -> None:
    from projects.tasks import round_deadline_task

    round_deadline_task.apply_async(
        args=[run_id, number], countdown=max(countdown, 0), queue="coordinator"
    )


def _rejection_text(code: str, message: str, detail: dict) -> str:
    """The reason a site's answer was not used, in the reader's language where it is known."""
    texts = {
        "too_large": _("The update is larger than the limit a run accepts (%(detail)s)."),
        "malformed": _("The update is not a valid parameter file (%(detail)s)."),
        "count": _("The update has a different number of arrays than the model (%(detail)s)."),
        "shape": _("The update's arrays have other shapes than the model's (%(detail)s)."),
        "dtype": _("The update's arrays have another number type than the model's (%(detail)s)."),
        "not_finite": _("The update holds values that are not finite numbers (%(detail)s)."),
        "norm": _("The update moves the model farther than the run allows (%(detail)s)."),
        "hash_mismatch": _(
            "The site's data file differs from the registered dataset (SHA-256 mismatch)."
        ),
        "missing_file": _("The site has no file under the dataset's registered site key."),
        "missing_column": _("The site's file lacks a column the model needs (%(detail)s)."),
        "not_numeric": _("The site's file holds a value that is not a number (%(detail)s)."),
        "unknown_label": _("The site's file holds a label outside the problem's classes."),
        "empty": _("The site's file has too few rows to train on."),
        "invalid_task": _("The site could not read the round's task (%(detail)s)."),
        "diverged": _("Training at the site produced numbers that are not finite."),
        "site_error": _("Training failed at the site (%(detail)s)."),
        "bad_answer": _("The site's answer was not in the expected form (%(detail)s)."),
    }
    text = texts.get(code)
    if text is None:
        return message or code
    shown = ", ".join(f"{k}={v}" for k, v in sorted(detail.items())) if detail else message
    return text % {"detail": shown}


def _clean_metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    clean = {}
    for key, number in list(value.items())[:32]:
        if isinstance(key, str) and isinstance(number, int | float) and math.isfinite(number):
            clean[key[:40]] = float(number)
    return clean


def update_receive(reply: Any) -> None:
    """A site's answer arrived: count it once, and close the round when every site answered."""
    received = time.time()
    closed = _record_answer(reply, received)
    if closed is not None:
        run_advance(closed)


def _answer_timings(reply: dict, received: float) -> dict[str, float]:
    timings = _clean_metrics(reply.get("timings"))
    replied, sent = reply.get("replied_at"), reply.get("sent_at")
    if isinstance(replied, int | float) and math.isfinite(replied):
        timings["return"] = max(received - float(replied), 0.0)
    if isinstance(sent, int | float) and math.isfinite(sent):
        timings["sent_at"] = float(sent)  # made relative to the round's start when it closes
    return timings


def _record_answer(reply: Any, received: float) -> int | None:
    """Record the answer; return the run's id when the round closed and the run goes on.

    The hot path of a round, run once per site: one conditional update (which finds the row by
    its ticket, checks run, round and site, and is what makes a duplicate count once, even when
    two coordinators race) and one check whether any site still trains. Only the last answer
    takes the round's lock, to close it.
    """
    try:
        run_id, number, slug = int(reply["run"]), int(reply["round"]), str(reply["site"])
        ticket = int(reply.get("ticket") or 0)
    except (KeyError, TypeError, ValueError):
        logger.warning("Ignored a site answer without run, round and site.")
        return None
    facts = _run_facts(run_id, reply.get("launched"))
    if facts is None:
        logger.warning("Ignored an answer from %s for unknown run %s.", slug, run_id)
        return None
    fields: dict[str, Any] = {
        "answered_at": timezone.now(),
        "timings": _answer_timings(reply, received),
        "metrics": _clean_metrics(reply.get("metrics")),
    }
    error = reply.get("error")
    if error is not None:
        if isinstance(error, dict):
            detail = error.get("detail") if isinstance(error.get("detail"), dict) else {}
            code, message = str(error.get("code", "site_error"))[:32], str(error.get("message", ""))
            rejection: tuple[str, str, dict] | None = (code, message, detail)
        else:
            rejection = ("bad_answer", "", {"error": str(error)[:200]})
    else:
        rejection = _accept_update(facts, number, reply, fields)
    # Closing or cancelling a round moves every dispatched site on in the same transaction, so
    # "still dispatched" also means "its round is still open".
    mine = SiteRound.objects.filter(
        round__run_id=run_id,
        round__number=number,
        institution__slug=slug,
        status=SiteRound.Status.DISPATCHED,
    )
    if ticket:
        mine = mine.filter(pk=ticket)
    if rejection is None:
        if not mine.update(status=SiteRound.Status.CONTRIBUTED, **fields):
            logger.info("Ignored a late or repeated answer from %s for round %s.", slug, number)
            return None
    else:
        code, message, detail = rejection
        reason = _rejection_text(code, message, detail)[:2000]
        with transaction.atomic():
            site = mine.select_related("round__run", "institution").order_by().first()
            if site is None or not mine.filter(pk=site.pk).update(
                status=SiteRound.Status.REJECTED, reason_code=code, reason=reason, **fields
            ):
                return None
            audit_record(
                actor=None,
                action="round.update_rejected",
                target=site.round.run,
                subject_institution=site.institution,
                payload={
                    "run": site.round.run.number,
                    "round": number,
                    "site": slug,
                    "code": code,
                    "reason": reason,
                },
            )
    if SiteRound.objects.filter(
        round__run_id=run_id, round__number=number, status=SiteRound.Status.DISPATCHED
    ).exists():
        return None
    return run_id if _close_when_answered(run_id, number) else None


def _close_when_answered(run_id: int, number: int) -> bool:
    """Close the round if it is still open and every site answered; True if the run goes on.

    Checked again under the round's lock: a concurrent answer or the deadline may have closed it.
    """
    with transaction.atomic():
        round_ = (
            Round.objects.select_for_update(of=("self",))
            .select_related("run__problem", "run__institution")
            .filter(run_id=run_id, number=number)
            .order_by()
            .first()
        )
        if round_ is None or round_.status != Round.Status.RUNNING:
            return False
        sites = list(round_.sites.select_related("institution").order_by("institution__slug"))
        if any(s.status == SiteRound.Status.DISPATCHED for s in sites):
            return False
        return _round_close(round_, sites=sites)


def _accept_update(
    run: _RunFacts, number: int, reply: dict, fields: dict[str, Any]
) -> tuple[str, str, dict] | None:
    """Decode and validate the update; add it to the site's ``fields``, or say why not."""
    text = reply.get("params")
    count = reply.get("sample_count")
    if not isinstance(text, str):
        return ("bad_answer", "", {"params": "missing"})
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        return ("bad_answer", "", {"sample_count": str(count)[:40]})
    # Base64 is 4/3 of the bytes: refuse a too-large answer before decoding anything.
    if len(text) > run.max_update_bytes * 4 // 3 + 8:
        return ("too_large", "", {"limit": run.max_update_bytes})
    try:
        blob = encoding.from_text(text)
        update = encoding.decode_params(blob, max_bytes=run.max_update_bytes)
        reference = encoding.decode_params(_round_start_bytes(run, number))
        validate_update(update, reference, max_norm=run.max_update_norm)
    except encoding.EncodingError as exc:
        return (exc.code, str(exc), exc.detail)
    except UpdateRejected as exc:
        r = exc.rejection
        return (r.code, r.message, r.detail)
    fields.update(
        update=text,
        update_sha256=encoding.params_sha256(blob),
        update_bytes=len(blob),
        sample_count=count,
    )
    return None


def _weighted_metrics(sites: list[SiteRound]) -> dict[str, float]:
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    for s in sites:
        w = float(s.metrics.get("validation_rows") or s.sample_count or 1)
        for key, value in s.metrics.items():
            if key == "validation_rows":
                continue
            totals[key] = totals.get(key, 0.0) + w * value
            weights[key] = weights.get(key, 0.0) + w
    return {k: totals[k] / weights[k] for k in sorted(totals) if weights[k] > 0}


def _round_close(
    round_: Round, *, at_deadline: bool = False, sites: list[SiteRound] | None = None
) -> bool:
    """Close the round (inside the caller's transaction, round locked); True if the run goes on.

    At the deadline, sites that have not answered are dropped. With fewer contributions than
    the run's minimum the round and the run fail; otherwise the contributions are aggregated
    in a fixed order (by institution), the new global model is stored and the round audited.
    ``sites``: the round's site rows when the caller has just read them (under the lock).
    """
    t0 = time.time()
    run = round_.run
    now = timezone.now()
    if sites is None:
        sites = list(round_.sites.select_related("institution").order_by("institution__slug"))
    dropped = [s for s in sites if s.status == SiteRound.Status.DISPATCHED]
    for s in dropped:
        s.status = SiteRound.Status.DROPPED
        s.reason = _("No answer before the round's deadline.")
    if dropped:
        SiteRound.objects.bulk_update(dropped, ["status", "reason"])
    contributed = [s for s in sites if s.status == SiteRound.Status.CONTRIBUTED]
    summary = {
        "problem": run.problem.slug,
        "run": run.number,
        "round": round_.number,
        "contributed": [s.institution.slug for s in contributed],
        "dropped": [s.institution.slug for s in dropped],
        "rejected": {
            s.institution.slug: s.reason_code
            for s in sites
            if s.status == SiteRound.Status.REJECTED
        },
        "updates": {s.institution.slug: s.update_sha256 for s in contributed},
    }
    round_.contributors = len(contributed)
    timings = dict(round_.timings or {})
    computes = [s.timings.get("compute", 0.0) for s in contributed]
    waits = [s.timings.get("queue_wait", 0.0) for s in contributed]
    returns = [s.timings.get("return", 0.0) for s in contributed]
    started = round_.started_at.timestamp()
    for s in sites:
        sent = s.timings.pop("sent_at", None)
        if sent is not None:
            s.timings["dispatch"] = max(sent - started, 0.0)
    dispatched = [s.timings.get("dispatch", 0.0) for s in contributed]
    timings.update(
        {
            "dispatch": max(dispatched, default=0.0),
            "site_compute": max(computes, default=0.0),
            "queue_wait": max(waits, default=0.0),
            "collection": max(returns, default=0.0),
        }
    )
    if len(contributed) < run.min_contributors:
        round_.status = Round.Status.FAILED
        round_.reason = _(
            "Only %(count)s of the %(needed)s contributions the run needs arrived "
            "(%(dropped)s dropped at the deadline, %(rejected)s rejected)."
        ) % {
            "count": len(contributed),
            "needed": run.min_contributors,
            "dropped": len(dropped),
            "rejected": len(summary["rejected"]),
        }
        round_.timings = timings
        round_.closed_at = timezone.now()
        round_.save()
        audit_record(
            actor=None,
            action="round.failed",
            target=round_.run,
            subject_institution=run.institution,
            payload={**summary, "reason": round_.reason},
        )
        _fail_run(
            run,
            [_("Round %(n)s failed: %(reason)s") % {"n": round_.number, "reason": round_.reason}],
        )
        return False

    global_blob = _round_start_bytes(run, round_.number)
    global_params = encoding.decode_params(global_blob)
    results = [
        (encoding.decode_params(encoding.from_text(s.update)), float(s.sample_count))
        for s in contributed
    ]
    state = (
        encoding.decode_params(encoding.from_text(run.strategy_state))
        if run.strategy_state
        else None
    )
    params, state = strategies.aggregate(
        run.strategy, global_params, results, state, run.strategy_options
    )
    blob = encoding.encode_params(params)
    t1 = time.time()
    metrics = _weighted_metrics(contributed)
    model = _store_model(run, round_.number, blob, metrics)
    if state is not None:
        run.strategy_state = encoding.to_text(encoding.encode_params(state))
    for s in contributed:
        s.update = ""  # the aggregate is kept; the site's update has served (its hash stays)
    SiteRound.objects.bulk_update(sites, ["update", "timings"])
    round_.status = Round.Status.SUCCEEDED
    round_.metrics = metrics
    round_.model = model
    timings["aggregation"] = t1 - t0
    timings["persistence"] = time.time() - t1
    round_.timings = {k: round(v, 6) for k, v in timings.items()}
    # Closed once aggregated and stored: the round's wall time includes both.
    round_.closed_at = timezone.now()
    round_.save()
    audit_record(
        actor=None,
        action="round.closed",
        target=round_.run,
        subject_institution=run.institution,
        payload={
            **summary,
            "model_sha256": model.sha256,
            "metrics": metrics,
            "at_deadline": at_deadline,
        },
    )
    fields = ["strategy_state"] if state is not None else []
    if round_.number >= run.rounds:
        run.status = TrainingRun.Status.SUCCEEDED
        run.finished_at = now
        fields += ["status", "finished_at"]
    if fields:
        run.save(update_fields=fields)
    if run.status == TrainingRun.Status.SUCCEEDED:
        audit_record(
            actor=None,
            action="run.succeeded",
            target=run,
            subject_institution=run.institution,
            payload={
                "problem": run.problem.slug,
                "run": run.number,
                "rounds": round_.number,
                "model_sha256": model.sha256,
                "metrics": metrics,
            },
        )
        return False
    return True


def round_deadline(run_id: int, number: int) -> None:
    """The round's deadline passed: close it with what arrived, if it is still open."""
    goes_on = False
    with transaction.atomic():
        round_ = (
            Round.objects.select_for_update(of=("self",))
            .select_related("run__problem", "run__institution")
            .filter(run_id=run_id, number=number, status=Round.Status.RUNNING)
            .order_by()
            .first()
        )
        if round_ is None:
            return
        if round_.deadline_at > timezone.now():
            # Early (a clock skew or a resumed check): look again when it is due.
            remaining = (round_.deadline_at - timezone.now()).total_seconds()
            transaction.on_commit(lambda: _schedule_deadline(run_id, number, remaining))
            return
        goes_on = _round_close(round_, at_deadline=True)
    if goes_on:
        run_advance(run_id)


def run_cancel(*, actor: AbstractBaseUser, run: TrainingRun) -> TrainingRun:
    """Stop a queued or running run; answers still on their way are ignored when they arrive."""
    if not can_cancel(actor, run):
        raise PermissionDenied(
            _("Only the launching institution's researchers and admins, or staff, cancel a run.")
        )
    with transaction.atomic():
        # The open round first, then the run: the order a closing round takes them in, so the
        # two never wait for each other. A round that closed meanwhile is no longer open here.
        open_rounds = list(
            Round.objects.select_for_update(of=("self",)).filter(
                run_id=run.pk, status=Round.Status.RUNNING
            )
        )
        run = (
            TrainingRun.objects.select_for_update(of=("self",))
            .select_related("problem")
            .get(pk=run.pk)
        )
        if run.is_finished:
            raise Conflict(
                _("This run has already finished (%(status)s).")
                % {"status": run.get_status_display().lower()}
            )
        now = timezone.now()
        for round_ in open_rounds:
            round_.status = Round.Status.CANCELLED
            round_.closed_at = now
            round_.reason = _("The run was cancelled.")
            round_.save(update_fields=["status", "closed_at", "reason"])
            round_.sites.filter(status=SiteRound.Status.DISPATCHED).update(
                status=SiteRound.Status.CANCELLED
            )
        run.status = TrainingRun.Status.CANCELLED
        run.cancelled_by = actor
        run.finished_at = now
        run.reasons = [_("Cancelled by %(who)s.") % {"who": actor.get_username()}]
        run.save(update_fields=["status", "cancelled_by", "finished_at", "reasons"])
        audit_record(
            actor=actor,
            action="run.cancelled",
            target=run,
            subject_institution=run.institution,
            payload={
                "problem": run.problem.slug,
                "run": run.number,
                "open_rounds": [r.number for r in open_rounds],
            },
        )
    return run


def can_cancel(actor: AbstractBaseUser | None, run: TrainingRun) -> bool:
    if actor is None or not actor.is_authenticated:
        return False
    if actor.is_staff:
        return True
    try:
        membership = acting_membership(actor, roles=LAUNCH_ROLES)
    except PermissionDenied:
        return False
    return membership.institution_id == run.institution_id


def runs_resume() -> int:
    """Pick up every unfinished run after a coordinator (re)start; return how many were seen.

    An open round past its deadline closes now; one whose sites all answered closes; otherwise
    sites that have not answered are sent their task again (a duplicate answer counts once) and
    the deadline check is scheduled anew. A run between rounds advances.
    """
    seen = 0
    for run_id in TrainingRun.objects.filter(
        status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]
    ).values_list("pk", flat=True):
        seen += 1
        open_round = (
            Round.objects.filter(run_id=run_id, status=Round.Status.RUNNING).order_by().first()
        )
        if open_round is None:
            run_advance(run_id)
            continue
        if open_round.deadline_at <= timezone.now():
            round_deadline(run_id, open_round.number)
            continue
        if not open_round.sites.filter(status=SiteRound.Status.DISPATCHED).exists():
            if _close_when_answered(run_id, open_round.number):
                run_advance(run_id)
            continue
        run = TrainingRun.objects.get(pk=run_id)
        params_text = encoding.to_text(_round_start_bytes(run, open_round.number))
        waiting = open_round.sites.select_related("institution", "dataset").filter(
            status=SiteRound.Status.DISPATCHED
        )
        _publish([_site_message(run, open_round.number, s, params_text) for s in waiting])
        remaining = (open_round.deadline_at - timezone.now()).total_seconds()
        _schedule_deadline(run_id, open_round.number, remaining)
    return seen


# --- Reading -----------------------------------------------------------------------------


def may_download(actor: AbstractBaseUser | None, run: TrainingRun) -> bool:
    """Whether the run's agreement lets this person download its models."""
    scope = run.agreement.download_scope
    if scope == "public":
        return True
    if actor is None or not actor.is_authenticated:
        return False
    if actor.is_staff:
        return True
    try:
        membership = acting_membership(actor)
    except PermissionDenied:
        return False
    if scope == "members":
        return membership.institution.status == Institution.Status.ADMITTED
    return run.problem.participations.filter(
        institution=membership.institution, status=Participation.Status.ACTIVE
    ).exists()


def download_refusal(run: TrainingRun) -> str:
    """Why the run's agreement keeps its models from this person, in the agreement's terms."""
    scope = run.agreement.download_scope
    if scope == "members":
        return _(
            "Agreement version %(n)s lets only people of admitted alliance members download "
            "this run's models."
        ) % {"n": run.agreement.number}
    return _(
        "Agreement version %(n)s lets only people of the institutions taking part in this "
        "problem download this run's models."
    ) % {"n": run.agreement.number}


def model_bytes(model: ModelVersion) -> bytes:
    """The stored parameters of a model version, checked against its SHA-256."""
    return _model_bytes(model)


def model_params(model: ModelVersion) -> list[np.ndarray]:
    return encoding.decode_params(_model_bytes(model))


__all__ = [
    "DEFAULTS",
    "LaunchConfig",
    "can_cancel",
    "can_launch",
    "download_refusal",
    "launch_errors",
    "may_download",
    "model_bytes",
    "model_params",
    "round_deadline",
    "run_advance",
    "run_cancel",
    "run_launch",
    "runs_resume",
    "update_receive",
]
