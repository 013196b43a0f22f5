"""Record-level differential privacy at the sites: DP-SGD and its accounting.

Each site trains with DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016):
every step draws a Poisson sample of the site's training rows (each row independently with
probability ``q = batch_size / rows``), clips each example's gradient to L2 norm ``C``
(``clip_norm``), adds Gaussian noise ``N(0, (z C)^2 I)`` to the sum (``z`` is the noise
multiplier) and divides by the expected batch size. The per-example gradients come from the
family's own ``loss_and_grads`` on one row at a time, so every model family gets the same
mechanism. The noise is drawn from a generator derived from the run's seed, the site and the
round, so a round computed twice (in process or at the site) gives the same bits.

The unit of privacy is one record of one dataset. One round at one dataset is the privacy event
``SelfComposed(PoissonSampled(q, Gaussian(z)), steps)`` with ``steps = epochs * ceil(rows /
batch_size)``; events compose across rounds and runs by adding their Rényi-DP curves (Mironov,
CSF 2017; Mironov, Talwar, Zhang 2019), which Google's ``dp-accounting`` package computes
(``RdpAccountant`` at the whole orders ``ORDERS``), and the curve is turned into epsilon once,
at the dataset's delta.
``noise_for`` finds the smallest multiplier whose run stays within a target epsilon (Brent's
method over the same accountant).
"""

import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from projects.federation.families import TrainingDiverged

Params = list[np.ndarray]

# delta per dataset: the design notes fix 1e-5 for the alliance's datasets (each well under
# 100 000 records, so delta stays below 1/rows).
DELTA = 1e-5
# The options a run may set and their defaults; epsilon has none: the run states its budget.
DEFAULTS: dict[str, float] = {"clip_norm": 1.0}
OPTIONS = ("epsilon", "clip_norm")
MAX_EPSILON = 100.0
MAX_NOISE = 1000.0
# The Rényi orders the accountant works at: whole orders only, since a fractional one costs a
# series for every sampled event (ten times the time). Epsilon is a minimum over the orders,
# so fewer orders can only overstate it: the ledger errs on the side of the records.
ORDERS = [*range(2, 33), 40, 48, 56, 64, 80, 96, 128, 192, 256]


class PrivacyError(ValueError):
    """A privacy setting or event the accountant cannot work with."""


def dp_options(options: Mapping[str, Any] | None) -> dict[str, float]:
    """A run's differential-privacy options, checked, with defaults; ValueError says what is wrong.

    ``epsilon``: the run's budget per dataset, in (0, 100]; ``clip_norm``: the per-example
    gradient bound C, in (0, 1000].
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"Unknown differential-privacy option(s): {', '.join(unknown)}; "
            f"allowed: {', '.join(OPTIONS)}."
        )
    if "epsilon" not in options:
        raise ValueError("Differential privacy needs the run's epsilon.")
    merged: dict[str, float] = {**DEFAULTS}
    for key, value in options.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"Option {key!r} must be a finite number, not {value!r}.")
        high = MAX_EPSILON if key == "epsilon" else 1000.0
        if not 0 < value <= high:
            raise ValueError(f"Option {key!r} must be above 0 and at most {high:g}, not {value!r}.")
        merged[key] = float(value)
    return merged


# --- The mechanism's parameters -------------------------------------------------------------


def training_rows(rows: int, validation_share: float) -> int:
    """How many of a file's rows a site trains on (the same arithmetic as ``data.split``)."""
    return rows - min(round(validation_share * rows), rows - 1)


def sampling_rate(rows: int, batch_size: int) -> float:
    return min(1.0, batch_size / rows)


def steps_per_round(rows: int, batch_size: int, epochs: int) -> int:
    return epochs * math.ceil(rows / batch_size)


@dataclass(frozen=True)
class Event:
    """One round's privacy event at one dataset, as plain parameters (what a ledger stores)."""

    noise_multiplier: float
    sampling_rate: float
    steps: int

    def to_json(self) -> dict[str, Any]:
        return {
            "noise_multiplier": self.noise_multiplier,
            "sampling_rate": self.sampling_rate,
            "steps": self.steps,
        }


def round_event(*, rows: int, batch_size: int, epochs: int, noise_multiplier: float) -> Event:
    """The event of one round of DP-SGD on ``rows`` training rows."""
    return Event(
        noise_multiplier=float(noise_multiplier),
        sampling_rate=sampling_rate(rows, batch_size),
        steps=steps_per_round(rows, batch_size, epochs),
    )


# --- Accounting (dp-accounting, Rényi DP) ---------------------------------------------------


def dp_event(event: Event, count: int = 1) -> Any:
    """The ``dp_accounting`` event of ``count`` repetitions of ``event``."""
    from dp_accounting import dp_event as events

    gaussian = events.GaussianDpEvent(event.noise_multiplier)
    step = (
        gaussian
        if event.sampling_rate >= 1.0
        else events.PoissonSampledDpEvent(event.sampling_rate, gaussian)
    )
    return events.SelfComposedDpEvent(step, event.steps * count)


def epsilon(events: Iterable[tuple[Event, int]], delta: float = DELTA) -> float:
    """Epsilon at ``delta`` of the given (event, repetitions) composed by RDP; 0 for none."""
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant(ORDERS)
    composed = False
    for event, count in events:
        if count > 0:
            accountant.compose(dp_event(event, count))
            composed = True
    return float(accountant.get_epsilon(delta)) if composed else 0.0


def noise_for(
    *, target_epsilon: float, rows: int, batch_size: int, epochs: int, rounds: int, delta: float
) -> float:
    """The smallest noise multiplier whose ``rounds`` rounds stay within ``target_epsilon``."""
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    def event(z: float) -> Any:
        return dp_event(
            round_event(rows=rows, batch_size=batch_size, epochs=epochs, noise_multiplier=z),
            rounds,
        )

    def fresh() -> Any:
        return RdpAccountant(ORDERS)

    try:
        z = float(
            dp_accounting.calibrate_dp_mechanism(
                fresh,
                event,
                target_epsilon,
                delta,
                bracket_interval=dp_accounting.ExplicitBracketInterval(0.3, MAX_NOISE),
                tol=1e-3,
            )
        )
    except (ValueError, RuntimeError) as exc:  # no multiplier in the bracket reaches the target
        raise PrivacyError(
            f"No noise multiplier up to {MAX_NOISE:g} reaches this epsilon."
        ) from exc
    # Brent stops near the root, possibly just below it: nudge up until within the budget.
    while fresh().compose(event(z)).get_epsilon(delta) > target_epsilon:
        z *= 1.001
    return z


# --- DP-SGD ---------------------------------------------------------------------------------


def per_example_grads(family: Any, params: Params, X: np.ndarray, y: np.ndarray) -> Params:
    """Each row's gradient, stacked on a leading axis: in one pass when the family offers it,
    else one ``loss_and_grads`` per row (any family that follows the protocol)."""
    own = getattr(family, "per_example_grads", None)
    if own is not None:
        return list(own(params, X, y))
    rows = [family.loss_and_grads(params, X[i : i + 1], y[i : i + 1])[1] for i in range(len(X))]
    return [np.stack([r[k] for r in rows]) for k in range(len(params))]


def clip_per_example(grads: Sequence[np.ndarray], clip_norm: float) -> list[np.ndarray]:
    """Each row's gradient (leading axis) scaled to L2 norm at most ``clip_norm``, the norm
    taken over all of that row's arrays together (flat clipping)."""
    if not grads or len(grads[0]) == 0:
        return [np.asarray(g, dtype=np.float64) for g in grads]
    n = len(grads[0])
    squares = np.zeros(n, dtype=np.float64)
    for g in grads:
        squares += np.sum(np.reshape(g, (n, -1)) ** 2, axis=1)
    norms = np.sqrt(squares)
    scale = np.minimum(1.0, clip_norm / np.where(norms > 0, norms, 1.0))
    return [g * scale.reshape((n,) + (1,) * (g.ndim - 1)) for g in grads]


def noisy_sum(
    grads: Sequence[np.ndarray],
    shapes: Sequence[tuple[int, ...]],
    *,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> Params:
    """The sum of the clipped per-example gradients plus N(0, (z C)^2) on every coordinate."""
    sigma = noise_multiplier * clip_norm
    clipped = clip_per_example(grads, clip_norm)
    totals = (
        [
            np.sum(g, axis=0) if len(g) else np.zeros(shape, dtype=np.float64)
            for g, shape in zip(clipped, shapes, strict=True)
        ]
        if clipped
        else [np.zeros(shape, dtype=np.float64) for shape in shapes]
    )
    return [t + rng.normal(0.0, sigma, size=t.shape) for t in totals]


def dp_sgd(
    family: Any,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
    noise_rng: np.random.Generator,
    proximal_mu: float = 0.0,
) -> Params:
    """DP-SGD from ``params`` on (X, y) with any family that has ``loss_and_grads``.

    ``rng`` draws the Poisson samples, ``noise_rng`` the Gaussian noise. The proximal term
    (FedProx) depends on no record, so it is added after the noise, unclipped.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    n = len(X)
    if n < 1:
        raise ValueError("No training rows.")
    q = sampling_rate(n, batch_size)
    steps = steps_per_round(n, batch_size, epochs)
    expected = q * n
    anchor = [np.array(p, dtype=np.float64, copy=True) for p in params]
    current = [a.copy() for a in anchor]
    shapes = [a.shape for a in anchor]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for _ in range(steps):
            chosen = np.flatnonzero(rng.random(n) < q)
            grads = per_example_grads(family, current, X[chosen], y[chosen]) if len(chosen) else []
            noisy = noisy_sum(
                grads, shapes, clip_norm=clip_norm, noise_multiplier=noise_multiplier, rng=noise_rng
            )
            for w, g, w0 in zip(current, noisy, anchor, strict=True):
                g = g / expected
                if proximal_mu > 0:
                    g = g + proximal_mu * (w - w0)
                w -= learning_rate * g
    if not all(np.all(np.isfinite(w)) for w in current):
        raise TrainingDiverged(
            "Training diverged (non-finite parameters); lower the learning rate."
        )
    return current


# --- A site's own ledger ---------------------------------------------------------------------


class BudgetExceeded(ValueError):
    """A round that would take the site's dataset past the agreement's ceiling."""

    def __init__(self, spent: float, needed: float, ceiling: float) -> None:
        self.spent, self.needed, self.ceiling = spent, needed, ceiling
        super().__init__(f"spent {spent:.3f}, round needs {needed:.3f}, ceiling {ceiling:g}")


class SiteLedger:
    """The privacy events a site's datasets spent, as the site itself saw them: one JSON line
    per round in its own folder, so the site holds its budget without trusting the coordinator.

    A round is keyed by (run, launched, round): the same round sent again is not spent twice.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def events(self, sha256: str, *, besides: tuple[int, str, int] | None = None) -> list[Event]:
        return [
            Event(e["noise_multiplier"], e["sampling_rate"], e["steps"])
            for e in self._entries()
            if e["sha256"] == sha256 and (e["run"], e["launched"], e["round"]) != besides
        ]

    def admit(
        self,
        *,
        sha256: str,
        key: tuple[int, str, int],
        event: Event,
        ceiling: float | None,
        delta: float,
    ) -> None:
        """Raise BudgetExceeded if this round would take the dataset past ``ceiling``."""
        if ceiling is None:
            return
        spent = [(e, 1) for e in self.events(sha256, besides=key)]
        total = epsilon([*spent, (event, 1)], delta)
        if total > ceiling:
            raise BudgetExceeded(epsilon(spent, delta), epsilon([(event, 1)], delta), ceiling)

    def record(self, *, sha256: str, key: tuple[int, str, int], event: Event) -> None:
        with self._lock:
            run, launched, round_number = key
            if any(
                (e["run"], e["launched"], e["round"]) == key and e["sha256"] == sha256
                for e in self._entries()
            ):
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = {
                "sha256": sha256,
                "run": run,
                "launched": launched,
                "round": round_number,
                **event.to_json(),
            }
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line, sort_keys=True) + "\n")
