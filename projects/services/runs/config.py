"""A run's configuration: the settings every entry point builds (``LaunchConfig``), their one
check (``launch_errors``), and the learning spec a launch derives from the problem and the
contributors' datasets (``learning_spec``).

The launch page, the API and ``manage.py launch_run`` refuse the same inputs with the same
messages because they all go through ``launch_errors``; ``launch.launch_plan`` then decides
whether the run may start.
"""

import math
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _

from portal.common.errors import ApplicationError
from projects.federation import privacy, strategies
from projects.federation.families import get_family
from projects.federation.protocol import LearningSpec
from projects.models import (
    Dataset,
    FeatureScaling,
    ModelFamily,
    Problem,
    Strategy,
    TaskType,
)

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
