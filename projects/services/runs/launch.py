"""Launching a run: the launch configuration every entry point builds, checked once, here.

The launch page, the API and ``manage.py launch_run`` all build a ``LaunchConfig`` and call
``run_launch``; ``launch_errors`` is the one check of its settings, so the three refuse the same
inputs with the same messages. ``launch_plan`` is the one answer to "may this run": the API's
policy check and the launch both call it, so they agree on the answer and its reasons.
"""

import logging
import math
from dataclasses import dataclass, field, replace
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
from projects.federation import encoding, privacy, strategies
from projects.federation.families import get_family
from projects.federation.loop import initial_params
from projects.federation.protocol import DpSpec, LearningSpec
from projects.models import (
    Dataset,
    FeatureScaling,
    ModelFamily,
    Problem,
    Strategy,
    TaskType,
    TrainingRun,
)
from projects.permissions import LAUNCH_ROLES, can_launch
from projects.services.policy import PolicyDecision, RunConfig, run_policy_check
from projects.services.privacy import budget_projections, budget_reason
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
    "validation_share": 0.2,
    "feature_scaling": FeatureScaling.RANGES,
}
# A little L2 keeps the demo's logistic regression from landing a row either side of the
# central model by the luck of its last step. A run may choose any strength the agreement
# permits, 0 included (the unregularised model a centralised baseline fits).
DEFAULT_FAMILY_OPTIONS: dict[str, dict[str, Any]] = {ModelFamily.LOGISTIC_REGRESSION: {"l2": 0.003}}
MAX_L2 = 100.0  # the agreement's own limit is checked by the policy
LIMITS: dict[str, tuple[float, float]] = {
    "rounds": (1, 500),
    "local_epochs": (1, 100),
    "batch_size": (1, 10_000),
    "learning_rate": (1e-6, 10.0),
    "round_deadline": (5, 0),  # upper bound: settings.FEDERATION_MAX_ROUND_DEADLINE
    "seed": (0, 2**31 - 1),
    # 0: no local validation; the agreement may permit less than the upper bound.
    "validation_share": (0.0, 0.9),
}
# Settings that take fractions rather than whole numbers.
FRACTIONAL = ("learning_rate", "validation_share")


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
    # Record-level differential privacy at the sites: {"epsilon": ..., "clip_norm": ...};
    # None: none.
    dp_options: dict[str, float] | None = None
    # The share of its rows each site keeps to score models on; 0: no local validation.
    validation_share: float = DEFAULTS["validation_share"]
    # How every site scales its features (``FeatureScaling``).
    feature_scaling: str = DEFAULTS["feature_scaling"]
    # The L2 strength; None: the family's default (``DEFAULT_FAMILY_OPTIONS``, else none).
    l2: float | None = None

    def resolved_family_options(self) -> dict[str, Any]:
        """The family's options the run trains with, the L2 strength among them."""
        options = dict(self.family_options or DEFAULT_FAMILY_OPTIONS.get(self.model_family, {}))
        if self.l2 is not None:
            options["l2"] = float(self.l2)
        return options

    def resolved_l2(self) -> float:
        value = self.resolved_family_options().get("l2", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0


def pooled_stats(datasets: list[Dataset], features: list[str]) -> list[tuple[float, float]]:
    """Each feature's mean and standard deviation over every contributor's rows, pooled from
    the summaries they registered (the population deviation, as a central scaler computes it).

    Site i describes n_i values with mean m_i and deviation s_i; over all N of them the mean is
    sum(n_i m_i) / N and the variance sum(n_i (s_i^2 + (m_i - mean)^2)) / N.
    """
    stats: list[tuple[float, float]] = []
    for name in features:
        parts: list[tuple[int, float, float]] = []
        for dataset in sorted(datasets, key=lambda d: d.pk):
            column = next((c for c in dataset.columns if c.get("name") == name), None)
            if column is None or column.get("mean") is None or column.get("std") is None:
                raise ApplicationError(
                    _(
                        "Standardisation needs every contributor's registered mean and standard "
                        "deviation of %(feature)s; the description of %(dataset)s has none: "
                        "describe the file again and register it anew."
                    )
                    % {"feature": name, "dataset": dataset.name}
                )
            count = int(dataset.row_count) - int(column.get("missing") or 0)
            parts.append((count, float(column["mean"]), float(column["std"])))
        total = sum(n for n, _m, _s in parts)
        if total <= 0:
            stats.append((0.0, 0.0))
            continue
        mean = math.fsum(n * m for n, m, _s in parts) / total
        variance = math.fsum(n * (sd * sd + (m - mean) ** 2) for n, m, sd in parts) / total
        stats.append((mean, math.sqrt(max(variance, 0.0))))
    return stats


def learning_spec(
    problem: Problem,
    datasets: list[Dataset],
    family: str,
    scaling: str = FeatureScaling.RANGES,
) -> LearningSpec:
    """Features, label, classes and scaling every site reads its file with.

    Inputs are the schema's required numeric features (an optional one may be missing from a
    site's file). Ranges come from the ratified schema's bounds, falling back to the registered
    datasets' observed minimum and maximum, so every site scales its data identically. With
    ``scaling`` "standardise", the means and deviations are pooled from the datasets'
    registered summaries (``pooled_stats``).
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
        scaling=str(scaling),
        feature_stats=tuple(pooled_stats(datasets, features))
        if scaling == FeatureScaling.STANDARDISE
        else (),
    )


def _check_number(name: str, value: Any, errors: dict[str, str]) -> None:
    low, high = limits()[name]
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    whole = name not in FRACTIONAL
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
    if not isinstance(config.family_options, dict):
        errors["family_options"] = _("Give the model's options as names and values.")
    elif config.l2 is not None:
        value = config.l2
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 <= value <= MAX_L2
        ):
            errors["l2"] = _("Give a number between %(low)s and %(high)s.") % {
                "low": 0,
                "high": MAX_L2,
            }
        elif "l2" in config.family_options and config.family_options["l2"] != value:
            errors["l2"] = _("Give the L2 strength once, not also among the model's options.")
    if config.model_family in ModelFamily.values and not {"family_options", "l2"} & set(errors):
        try:
            get_family(config.model_family, config.resolved_family_options() or None)
        except (ValueError, TypeError) as exc:
            errors["family_options"] = str(exc)
    if config.feature_scaling not in FeatureScaling.values:
        errors["feature_scaling"] = _("Choose one of the feature scalings.")
    if config.min_contributors is not None:
        value = config.min_contributors
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
            errors["min_contributors"] = _("Give a whole number of at least 1.")
    if not isinstance(config.secure_aggregation, bool):
        errors["secure_aggregation"] = _("Answer yes or no.")
    if config.dp_options is not None:
        if not isinstance(config.dp_options, dict):
            errors["dp_options"] = _("Give the differential-privacy options as names and numbers.")
        else:
            try:
                privacy.dp_options(config.dp_options)
            except (ValueError, TypeError) as exc:
                errors["dp_options"] = str(exc)
    return errors


@dataclass(frozen=True)
class LaunchPlan:
    """The answer to "may this run", and what a launch needs of it when the answer is yes."""

    decision: PolicyDecision
    min_contributors: int
    spec: LearningSpec | None = None  # None when refused
    secure: bool = False  # every round securely aggregated (asked, or the agreement requires it)

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.decision.reasons


def _dp_spec(config: LaunchConfig, decision: PolicyDecision, reasons: list[str]) -> DpSpec | None:
    """The run's DP-SGD settings: one noise multiplier that keeps every contributor's dataset
    within the run's epsilon (the smallest dataset, sampled the most, needs the most noise).
    """
    if config.dp_options is None:
        return None
    options = privacy.dp_options(config.dp_options)
    noise = 0.0
    for contributor in decision.contributors:
        rows = privacy.training_rows(contributor.dataset.row_count, float(config.validation_share))
        try:
            z = privacy.noise_for(
                target_epsilon=options["epsilon"],
                rows=rows,
                batch_size=int(config.batch_size),
                epochs=int(config.local_epochs),
                rounds=int(config.rounds),
                delta=privacy.DELTA,
            )
        except privacy.PrivacyError:
            reasons.append(
                _(
                    "No amount of noise keeps %(rounds)s rounds on %(dataset)s within epsilon "
                    "%(epsilon)s; ask for fewer rounds, fewer local epochs or a larger batch."
                )
                % {
                    "rounds": config.rounds,
                    "dataset": contributor.dataset.name,
                    "epsilon": options["epsilon"],
                }
            )
            return None
        noise = max(noise, z)
    agreement = decision.agreement
    return DpSpec(
        noise_multiplier=noise or privacy.MAX_NOISE,
        clip_norm=options["clip_norm"],
        epsilon=options["epsilon"],
        delta=privacy.DELTA,
        ceiling=agreement.dp_max_epsilon if agreement is not None else None,
    )


def launch_plan(
    *,
    problem: Problem,
    config: LaunchConfig,
    agreement_version: int | None = None,
    contributors: tuple[str, ...] | None = None,
) -> LaunchPlan:
    """Whether ``config`` may run on ``problem`` now, with every reason why not.

    The one code path behind the launch and the API's policy check: the agreement's terms
    (``run_policy_check``), whether the problem's schema suits the family, and the privacy
    budget. ``config`` must have passed ``launch_errors``.
    """
    agreement = problem.agreements.filter(status="effective").first()
    min_contributors = config.min_contributors or (agreement.min_contributors if agreement else 2)
    secure = bool(config.secure_aggregation) or bool(
        agreement is not None and agreement.secure_aggregation
    )
    epsilon = None
    if config.dp_options is not None:
        epsilon = privacy.dp_options(config.dp_options)["epsilon"]
    decision = run_policy_check(
        problem=problem,
        config=RunConfig(
            model_family=config.model_family,
            min_contributors=min_contributors,
            secure_aggregation=secure,
            strategy=config.strategy,
            dp_epsilon=epsilon,
            agreement_version=agreement_version,
            contributors=contributors,
            l2=config.resolved_l2(),
            validation_share=float(config.validation_share),
            feature_scaling=config.feature_scaling,
        ),
    )
    reasons = list(decision.reasons)
    spec = None
    if decision.contributors:
        try:
            spec = learning_spec(
                problem,
                [c.dataset for c in decision.contributors],
                config.model_family,
                config.feature_scaling,
            )
        except ApplicationError as exc:
            reasons.append(exc.message)
    # Differential privacy and secure aggregation combine: each site adds its DP-SGD noise
    # before it masks its update, and the ledger charges every dataset whose masked input
    # reached the coordinator (``privacy_spend_round``), so the same budget check holds.
    if spec is not None and not reasons:
        dp = _dp_spec(config, decision, reasons)
        if dp is not None:
            spec = replace(spec, dp=dp)
        if dp is not None and dp.ceiling is not None:
            # The ledger: no contributor's dataset may go past the agreement's ceiling.
            for projection in budget_projections(
                [c.dataset for c in decision.contributors],
                dp=dp,
                batch_size=int(config.batch_size),
                epochs=int(config.local_epochs),
                rounds=int(config.rounds),
                validation_share=float(config.validation_share),
                reserve=True,  # what runs under way will still spend is not free
            ):
                if not projection.allowed:
                    reasons.append(budget_reason(projection))
    return LaunchPlan(
        decision=replace(decision, reasons=tuple(reasons)),
        min_contributors=min_contributors,
        spec=spec if not reasons else None,
        secure=secure,
    )


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
        plan = launch_plan(problem=problem, config=config)
        decision = plan.decision
        if not plan.allowed or plan.spec is None:
            raise ApplicationError(
                _("This run may not start: %(reasons)s") % {"reasons": " ".join(plan.reasons)},
                extra={"reasons": list(plan.reasons)},
            )
        spec = plan.spec
        min_contributors = plan.min_contributors
        secure = plan.secure
        family_options = config.resolved_family_options()
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
            validation_share=float(config.validation_share),
            feature_scaling=config.feature_scaling,
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
                "options": run.options,
                "secure_aggregation": run.secure_aggregation,
                "contributors": sorted(c.institution.slug for c in decision.contributors),
                "differential_privacy": spec.dp.to_json() if spec.dp is not None else None,
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
