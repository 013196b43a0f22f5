"""Launching a run: the launch configuration every entry point builds, checked once, here.

The launch page, the API and ``manage.py launch_run`` all build a ``LaunchConfig`` and call
``run_launch``; ``launch_errors`` is the one check of its settings, so the three refuse the same
inputs with the same messages.
"""

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Max
from django.utils.translation import gettext as _

from alliance.permissions import acting_membership
from alliance.services.audit import audit_record
from portal.common.errors import ApplicationError
from projects.federation import encoding, strategies
from projects.federation.families import get_family
from projects.federation.loop import initial_params
from projects.federation.protocol import LearningSpec
from projects.models import Dataset, ModelFamily, Problem, Strategy, TaskType, TrainingRun
from projects.permissions import LAUNCH_ROLES, can_launch
from projects.services.policy import RunConfig, run_policy_check
from projects.services.runs.store import model_store
from projects.services.stages import problem_advance_stage

logger = logging.getLogger(__name__)

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


def limits() -> dict[str, tuple[float, float]]:
    """Each numeric setting's allowed range, as pages and the API state it up front."""
    return {
        name: (low, settings.FEDERATION_MAX_ROUND_DEADLINE if name == "round_deadline" else high)
        for name, (low, high) in LIMITS.items()
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
    # Secure aggregation; whatever is asked here, a run is secure when its agreement says so.
    secure_aggregation: bool = False


def learning_spec(problem: Problem, datasets: list[Dataset], family: str) -> LearningSpec:
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
    return LearningSpec(
        features=tuple(features),
        label=label,
        classes=None if classes is None else tuple(classes),
        feature_ranges=tuple(ranges),
        task="classification" if classification else "regression",
        metric=revision.metric,
    )


def _check_number(name: str, value: Any, errors: dict[str, str]) -> None:
    low, high = limits()[name]
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    whole = name != "learning_rate"
    if (
        not is_number
        or not math.isfinite(value)
        or not low <= value <= high
        or (whole and value != int(value))
    ):
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
    elif not isinstance(config.strategy_options, dict):
        errors["strategy_options"] = _("Give the strategy's options as names and numbers.")
    else:
        allowed = strategies.get_strategy(config.strategy).defaults
        unknown = sorted(set(config.strategy_options) - set(allowed))
        if unknown:
            errors["strategy_options"] = _(
                "%(strategy)s takes no option %(unknown)s (it takes: %(allowed)s)."
            ) % {
                "strategy": Strategy(config.strategy).label,
                "unknown": ", ".join(unknown),
                "allowed": ", ".join(sorted(allowed)) or _("none"),
            }
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


def run_launch(*, actor: AbstractBaseUser, problem: Problem, config: LaunchConfig) -> TrainingRun:
    """Launch a run on a data-ready problem under its effective agreement, or refuse and say why.

    Permission first, then the settings, then the agreement: a caller who may not launch
    learns nothing about the problem's state. The policy check runs here with the run's own
    configuration and again before every round.
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
        secure = bool(config.secure_aggregation) or bool(
            agreement is not None and agreement.secure_aggregation
        )
        decision = run_policy_check(
            problem=problem,
            config=RunConfig(
                model_family=config.model_family,
                min_contributors=min_contributors,
                secure_aggregation=secure,
                strategy=config.strategy,
            ),
        )
        if not decision.allowed:
            raise ApplicationError(
                _("This run may not start: %(reasons)s") % {"reasons": " ".join(decision.reasons)},
                extra={"reasons": list(decision.reasons)},
            )
        spec = learning_spec(
            problem, [c.dataset for c in decision.contributors], config.model_family
        )
        family_options = dict(
            config.family_options or DEFAULT_FAMILY_OPTIONS.get(config.model_family, {})
        )
        if config.model_family == ModelFamily.MLP:
            family_options.setdefault("task", spec.task)
        n_outputs = len(spec.classes) if spec.classes else 1
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
            rounds=int(config.rounds),
            local_epochs=int(config.local_epochs),
            batch_size=int(config.batch_size),
            learning_rate=float(config.learning_rate),
            min_contributors=min_contributors,
            round_deadline=int(config.round_deadline),
            seed=int(config.seed),
            secure_aggregation=secure,
            max_update_norm=settings.FEDERATION_MAX_UPDATE_NORM,
            max_update_bytes=settings.FEDERATION_MAX_UPDATE_BYTES,
            spec=spec.to_json(),
        )
        params = initial_params(
            config.model_family, family_options, len(spec.features), n_outputs, run.seed
        )
        initial = model_store(
            run=run, round_number=0, blob=encoding.encode_params(params), metrics={}
        )
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
                "secure_aggregation": run.secure_aggregation,
                "contributors": sorted(c.institution.slug for c in decision.contributors),
                "initial_model_sha256": initial.sha256,
            },
        )
        problem_advance_stage(problem=problem, to=Problem.Stage.TRAINING)
        transaction.on_commit(lambda: send_advance(run.pk))
    return run


def send_advance(run_id: int) -> None:
    """Ask the coordinator to open the first round; the reconciler does if the broker is away."""
    from projects.services.runs.dispatch import publishing
    from projects.tasks import run_advance_task

    if not publishing():
        return
    try:
        run_advance_task.apply_async(args=[run_id], queue="coordinator")
    except Exception:  # any broker failure: the run is queued in the database all the same
        logger.warning("Could not ask for run %s's first round; the reconciler will.", run_id)
