"""One round of training on a site: what a member's site worker runs.

The site receives the global parameters and a ``RoundTask`` (``protocol``), checks that its file
is still the one it registered (SHA-256, before parsing a byte of it), scores the model it
received on its validation rows, trains on its own training rows and returns only parameters, a
row count, validation scores and timings. It has no database and reads nothing but its data file.

Randomness is derived, never shared: ``site_rng(seed, site, purpose, round)`` feeds the run's
seed, the site's slug, the purpose and the round into one numpy ``SeedSequence``. The
train/validation split uses purpose ``"split"`` and no round, so a site keeps the same
validation rows for the whole run; the minibatch shuffles use ``"train"`` and the round. Given
the same task, parameters and file, a round gives the same bits every time.
"""

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from projects.federation import privacy
from projects.federation.data import DataError, encode_labels, file_sha256, load_csv, scale, split
from projects.federation.families import (
    CLASSIFICATION,
    ModelFamily,
    TrainingDiverged,
    get_family,
)
from projects.federation.protocol import ProtocolError, RoundTask

__all__ = [
    "RoundTask",
    "SiteRefusal",
    "SiteResult",
    "evaluate_on_file",
    "evaluate_on_site",
    "score_on_site",
    "train_on_site",
]

Params = list[np.ndarray]


def _stable_int(text: str) -> int:
    """A 64-bit number from text, the same on every machine (``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def site_rng(seed: int, site: str, purpose: str, round_number: int = 0) -> np.random.Generator:
    """The generator for one purpose at one site: independent streams from one run seed."""
    return np.random.default_rng([seed, _stable_int(site), _stable_int(purpose), round_number])


@dataclass(frozen=True)
class SiteResult:
    """What a site sends back: parameters, training rows, validation scores, seconds spent.

    ``global_metrics`` score the model the site received, ``metrics`` its own update, both on
    the site's validation rows (``validation_rows`` says how many).
    """

    params: Params
    sample_count: int
    metrics: dict[str, float] = field(default_factory=dict)
    global_metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class SiteRefusal(ProtocolError):
    """The site cannot train this round: the protocol's error, with a message for the site.

    Codes: ``missing_file``, ``hash_mismatch``, ``invalid_task`` (family, options, classes or
    parameter shapes that do not fit), ``diverged`` (training produced non-finite numbers), and
    the data codes ``missing_column``, ``not_numeric``, ``empty``, ``unknown_label``. The
    message may quote the file (it stays at the site); ``detail`` is filtered before it leaves.
    """

    def __init__(self, code: str, detail: Mapping[str, Any], message: str) -> None:
        super().__init__(code, detail)
        self.message = message

    def __str__(self) -> str:
        return self.message


def n_outputs_for(family: ModelFamily, classes: Sequence[str] | None) -> int:
    """How many outputs the model has: the number of classes, or 1 for regression."""
    if family.task == CLASSIFICATION:
        if classes is None or len(classes) < 2:
            raise SiteRefusal(
                "invalid_task",
                {"reason": "classes"},
                f"{family.name} classifies: it needs at least two classes.",
            )
        return len(classes)
    if classes is not None:
        raise SiteRefusal(
            "invalid_task",
            {"reason": "classes"},
            f"{family.name} predicts a number: it takes no classes.",
        )
    return 1


def family_for(name: str, options: Mapping[str, Any]) -> ModelFamily:
    """The configured family, or SiteRefusal("invalid_task") saying what is wrong."""
    try:
        return get_family(name, dict(options))
    except ValueError as exc:
        raise SiteRefusal("invalid_task", {"reason": "family"}, str(exc)) from exc


def read_site_file(
    path: Path,
    *,
    features: Sequence[str],
    label: str,
    classes: Sequence[str] | None,
    feature_ranges: Sequence[tuple[float, float]],
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled features and encoded labels of a file; SiteRefusal with the data error's code."""
    try:
        X, raw = load_csv(path, features=list(features), label=label)
        assert raw is not None  # a label was asked for
        y = encode_labels(raw, classes)
    except DataError as exc:
        raise SiteRefusal(exc.code, exc.detail, exc.message) from exc
    if len(feature_ranges) != len(features):
        raise SiteRefusal(
            "invalid_task",
            {"reason": "feature_ranges"},
            f"{len(feature_ranges)} feature ranges for {len(features)} features.",
        )
    return scale(X, feature_ranges), y


def _check_file(path: Path) -> None:
    if not path.is_file():
        # Only the file's name: the site's directory layout is its own business.
        raise SiteRefusal(
            "missing_file", {"file": path.name}, f"The data file {path.name!r} is not there."
        )


class VerifiedData:
    """The site's files it has verified and parsed, kept in memory until they change.

    A round needs the file's rows as arrays, and the file must still be the one registered. Both
    are costly to redo every round (hashing and parsing dominate a small model's round), so a
    verified file's arrays are kept, keyed by the file's identity as the operating system
    reports it (device, inode, size, modification and change times, in nanoseconds), the hash
    it was verified against and the learning spec it was read with. Any change to the file
    changes its identity: it is hashed again, and a changed file is refused as before.

    Memory is bounded: at most ``max_entries`` files and ``max_bytes`` of arrays, the least
    recently used dropped first; a file larger than the whole budget is read every time.
    """

    def __init__(self, max_entries: int = 16, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0

    @staticmethod
    def _identity(path: Path) -> tuple:
        st = os.stat(path)
        return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def load(
        self, path: Path, expected_sha256: str, task: RoundTask
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scaled features and encoded labels of a file that has the registered hash."""
        _check_file(path)
        spec = (task.features, task.label, task.classes, task.feature_ranges)
        key = (self._identity(path), expected_sha256, spec)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
        actual = file_sha256(path)
        if actual != expected_sha256:
            raise SiteRefusal(
                "hash_mismatch",
                {"expected": expected_sha256, "actual": actual},
                "The data file changed since it was registered (its SHA-256 differs).",
            )
        X, y = read_site_file(
            path,
            features=task.features,
            label=task.label,
            classes=task.classes,
            feature_ranges=task.feature_ranges,
        )
        if self._identity(path) != key[0]:
            # Written to while it was read: use what was read once, remember nothing.
            return X, y
        size = X.nbytes + y.nbytes
        with self._lock:
            if size <= self.max_bytes and key not in self._entries:
                self._entries[key] = (X, y)
                self._bytes += size
                while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                    _old, (oX, oy) = self._entries.popitem(last=False)
                    self._bytes -= oX.nbytes + oy.nbytes
        return X, y

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


# One per process: a site worker's threads share what it verified.
VERIFIED = VerifiedData()


def train_on_site(
    task: RoundTask, global_params: Params, *, data_path: Path, expected_sha256: str
) -> SiteResult:
    """Train ``task.epochs`` epochs from ``global_params`` on this site's training rows."""
    started = time.perf_counter()
    family = family_for(task.family, task.family_options)
    n_outputs = n_outputs_for(family, task.classes)
    X, y = VERIFIED.load(Path(data_path), expected_sha256, task)
    expected = [p.shape for p in family.init(len(task.features), n_outputs, site_rng(0, "", ""))]
    if [np.shape(p) for p in global_params] != expected:
        raise SiteRefusal(
            "invalid_task",
            {"reason": "shapes"},
            "The global parameters do not fit this model family and schema.",
        )
    try:
        train_rows, validation_rows = split(
            len(X), task.validation_share, site_rng(task.seed, task.site, "split")
        )
    except ValueError as exc:
        raise SiteRefusal("invalid_task", {"reason": "validation_share"}, str(exc)) from exc
    loaded = time.perf_counter()
    start = [np.asarray(p, dtype=np.float64) for p in global_params]
    # The model as received, scored where the data lives, before this site moves it.
    global_metrics: dict[str, float] = {}
    if len(validation_rows):
        global_metrics = family.evaluate(start, X[validation_rows], y[validation_rows])
    global_metrics["validation_rows"] = float(len(validation_rows))
    scored = time.perf_counter()

    dp = task.spec.dp
    try:
        if dp is None:
            params = family.train(
                start,
                X[train_rows],
                y[train_rows],
                epochs=task.epochs,
                batch_size=task.batch_size,
                learning_rate=task.learning_rate,
                rng=site_rng(task.seed, task.site, "train", task.round_number),
                proximal_mu=task.proximal_mu,
            )
        else:
            # DP-SGD: the samples and the noise from streams of their own, derived from the run,
            # the site and the round, so the round is the same bits wherever it is computed.
            params = privacy.dp_sgd(
                family,
                start,
                X[train_rows],
                y[train_rows],
                epochs=task.epochs,
                batch_size=task.batch_size,
                learning_rate=task.learning_rate,
                clip_norm=dp.clip_norm,
                noise_multiplier=dp.noise_multiplier,
                rng=site_rng(task.seed, task.site, "train", task.round_number),
                noise_rng=site_rng(task.seed, task.site, "dp-noise", task.round_number),
                proximal_mu=task.proximal_mu,
            )
    except TrainingDiverged as exc:
        raise SiteRefusal("diverged", {}, str(exc)) from exc
    except ValueError as exc:  # epochs, batch size, learning rate or mu out of range
        raise SiteRefusal("invalid_task", {"reason": "hyperparameters"}, str(exc)) from exc
    trained = time.perf_counter()

    metrics: dict[str, float] = {}
    if len(validation_rows):
        metrics = family.evaluate(params, X[validation_rows], y[validation_rows])
    metrics["validation_rows"] = float(len(validation_rows))
    evaluated = time.perf_counter()
    return SiteResult(
        params=params,
        sample_count=len(train_rows),
        metrics=metrics,
        global_metrics=global_metrics,
        timings={
            "load": loaded - started,
            "train": trained - scored,
            "evaluate": (evaluated - trained) + (scored - loaded),
        },
    )


def evaluate_on_site(
    task: RoundTask,
    params: Params,
    *,
    data_path: Path,
    expected_sha256: str,
    holdout: bool,
) -> SiteResult:
    """Score ``params`` where the data lives, with the same checks as training.

    A contributor (``holdout`` False) scores on the validation rows of its own seeded split, the
    rows it scores every round's model on; a validator scores on every row of its held-out file.
    ``sample_count`` is the number of rows scored; nothing but the scores leaves the site.
    """
    started = time.perf_counter()
    family = family_for(task.family, task.family_options)
    n_outputs = n_outputs_for(family, task.classes)
    X, y = VERIFIED.load(Path(data_path), expected_sha256, task)
    expected = [p.shape for p in family.init(len(task.features), n_outputs, site_rng(0, "", ""))]
    if [np.shape(p) for p in params] != expected:
        raise SiteRefusal(
            "invalid_task",
            {"reason": "shapes"},
            "The model's parameters do not fit this model family and schema.",
        )
    if holdout:
        rows = np.arange(len(X))
    else:
        try:
            _train, rows = split(
                len(X), task.validation_share, site_rng(task.seed, task.site, "split")
            )
        except ValueError as exc:
            raise SiteRefusal("invalid_task", {"reason": "validation_share"}, str(exc)) from exc
    if not len(rows):
        raise SiteRefusal("empty", {}, "There are no rows to score the model on.")
    loaded = time.perf_counter()
    metrics = family.evaluate([np.asarray(p, dtype=np.float64) for p in params], X[rows], y[rows])
    return SiteResult(
        params=[],
        sample_count=len(rows),
        metrics=metrics,
        timings={"load": loaded - started, "evaluate": time.perf_counter() - loaded},
    )


def score_on_site(
    task: RoundTask, candidates: Sequence[Params], *, data_path: Path, expected_sha256: str
) -> list[dict[str, float]]:
    """Score each candidate model on every row of a validator's held-out file (read once)."""
    family = family_for(task.family, task.family_options)
    n_outputs = n_outputs_for(family, task.classes)
    X, y = VERIFIED.load(Path(data_path), expected_sha256, task)
    expected = [p.shape for p in family.init(len(task.features), n_outputs, site_rng(0, "", ""))]
    scores = []
    for params in candidates:
        if [np.shape(p) for p in params] != expected:
            raise SiteRefusal(
                "invalid_task",
                {"reason": "shapes"},
                "A candidate model does not fit this model family and schema.",
            )
        metrics = family.evaluate([np.asarray(p, dtype=np.float64) for p in params], X, y)
        metrics["rows"] = float(len(X))
        scores.append(metrics)
    return scores


def evaluate_on_file(
    family: str,
    family_options: Mapping[str, Any],
    params: Params,
    *,
    path: Path,
    features: Sequence[str],
    label: str,
    classes: Sequence[str] | None,
    feature_ranges: Sequence[tuple[float, float]],
) -> dict[str, float]:
    """Scores of ``params`` on every row of a file (a validator's held-out set), plus ``rows``."""
    path = Path(path)
    _check_file(path)
    model = family_for(family, family_options)
    n_outputs_for(model, classes)
    X, y = read_site_file(
        path, features=features, label=label, classes=classes, feature_ranges=feature_ranges
    )
    try:
        metrics = model.evaluate([np.asarray(p, dtype=np.float64) for p in params], X, y)
    except ValueError as exc:
        raise SiteRefusal("invalid_task", {"reason": "shapes"}, str(exc)) from exc
    metrics["rows"] = float(len(X))
    return metrics
