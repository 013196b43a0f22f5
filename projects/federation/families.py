"""Model families: what a site trains and how a model is scored.

A family is a stateless object that knows how to make, train, score and apply parameters. The
parameters themselves are always a ``list[np.ndarray]`` of float64 arrays in a fixed order, and
that list is all the coordinator ever sees, stores, aggregates or sends: it calls only
``get_family(name, options)`` and the ``ModelFamily`` protocol methods. A later family backed by
another library (PyTorch, say) plugs in by implementing the same protocol and converting its
tensors to and from numpy arrays at the boundary.

The three families here are written in numpy rather than taken from scikit-learn because
federated training needs two things scikit-learn's estimators do not offer: the FedProx
proximal term (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020), which
adds ``mu/2 * ||w - w_global||^2`` to every local objective, and exact control of the seeded
minibatch shuffles, so that a round computed twice gives the same bits.

Training is plain minibatch SGD (McMahan et al., "Communication-Efficient Learning of Deep
Networks from Decentralized Data", AISTATS 2017, use it as the local solver of FedAvg): each
epoch draws one permutation of the rows from the given generator and steps once per batch.

- ``logistic_regression``: classes are integer indices; two classes use one sigmoid output
  (``[W (d, 1), b (1,)]``), more use a softmax (``[W (d, K), b (K,)]``). Option ``l2``.
- ``linear_regression``: ``[W (d, 1), b (1,)]``, squared loss. Option ``l2``.
- ``mlp``: one or two hidden layers (``hidden_layers``, each 1..1024 units), ``activation``
  ``relu`` or ``tanh``, ``task`` ``classification`` (sigmoid or softmax head) or ``regression``;
  Glorot-uniform weights, zero biases; parameters ``[W1, b1, W2, b2, (W3, b3)]``. Option ``l2``.

The L2 penalty is ``l2/2 * sum(W**2)`` over weight matrices, never biases.
"""

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Protocol

import numpy as np

# scikit-learn's scores, computed the same way without its input checks (``metrics``).
from projects.federation.metrics import f1 as f1_score
from projects.federation.metrics import roc_auc as roc_auc_score

Params = list[np.ndarray]

FAMILY_NAMES = ("logistic_regression", "linear_regression", "mlp")

CLASSIFICATION = "classification"
REGRESSION = "regression"

# Logits beyond this bound carry no more information (sigmoid(40) is already 1 - 4e-18) and
# exp() of them would overflow; gradients are exact inside the bound.
LOGIT_CLIP = 500.0
MAX_HIDDEN_UNITS = 1024


class TrainingDiverged(ValueError):
    """Training produced non-finite parameters (learning rate too high for this data)."""


class ModelFamily(Protocol):
    """What the coordinator and the sites need from a model family."""

    # Read-only properties, so that frozen dataclasses and plain attributes both qualify.
    @property
    def name(self) -> str: ...

    @property
    def task(self) -> str: ...  # "classification" or "regression"

    def init(self, n_features: int, n_outputs: int, rng: np.random.Generator) -> Params: ...

    def train(
        self,
        params: Params,
        X: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        learning_rate: float,
        rng: np.random.Generator,
        proximal_mu: float = 0.0,
    ) -> Params: ...

    def loss_and_grads(
        self, params: Params, X: np.ndarray, y: np.ndarray
    ) -> tuple[float, Params]: ...  # the objective on (X, y) and its gradient (DP-SGD uses it)

    def evaluate(self, params: Params, X: np.ndarray, y: np.ndarray) -> dict[str, float]: ...

    def predict(self, params: Params, X: np.ndarray) -> np.ndarray: ...


# --- Output heads -------------------------------------------------------------------------------
# A head turns the last layer's pre-activations z (n, outputs) into a loss and dloss/dz.


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # exp(-log(1 + exp(-z))) never overflows, whatever the sign of z.
    return np.exp(-np.logaddexp(0.0, -z))


def _softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _binary_head(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    z = np.clip(z, -LOGIT_CLIP, LOGIT_CLIP)
    target = y.astype(np.float64).reshape(-1, 1)
    # Cross-entropy of a sigmoid written as log(1 + e^z) - y z: stable for any z.
    loss = float(np.mean(np.logaddexp(0.0, z) - target * z))
    return loss, (_sigmoid(z) - target) / len(z)


def _softmax_head(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    z = np.clip(z, -LOGIT_CLIP, LOGIT_CLIP)
    shifted = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_norm
    rows = np.arange(len(z))
    loss = float(-np.mean(log_p[rows, y]))
    grad = np.exp(log_p)
    grad[rows, y] -= 1.0
    return loss, grad / len(z)


def _squared_head(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    residual = z[:, 0] - y
    loss = float(np.mean(residual**2))
    return loss, (2.0 * residual / len(z)).reshape(-1, 1)


def _layer_grads(a: np.ndarray, dz: np.ndarray, per_example: bool) -> tuple[np.ndarray, np.ndarray]:
    """A linear layer's weight and bias gradients from its input ``a`` and dloss/dz: summed over
    the rows, or one per row (leading axis) for per-example clipping."""
    if per_example:
        return np.einsum("ni,nj->nij", a, dz), dz.copy()
    return a.T @ dz, dz.sum(axis=0)


# --- Options ------------------------------------------------------------------------------------


def _number_option(options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ValueError(f"Option {key!r} must be a finite number, not {value!r}.")
    if value < 0:
        raise ValueError(f"Option {key!r} must be zero or more, not {value!r}.")
    return float(value)


def _check_keys(name: str, options: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"Unknown option(s) for {name}: {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}."
        )


def _glorot(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Glorot and Bengio (2010) uniform initialisation: keeps activations' variance stable."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def _whole(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_sizes(n_features: int, n_outputs: int) -> None:
    if not _whole(n_features) or n_features < 1:
        raise ValueError(f"A model needs at least one feature, not {n_features!r}.")
    if not _whole(n_outputs) or n_outputs < 1:
        raise ValueError(f"A model needs at least one output, not {n_outputs!r}.")


# --- The shared training loop -------------------------------------------------------------------


@dataclass(frozen=True)
class _NumpyFamily:
    """Minibatch SGD, scoring and prediction shared by the numpy families.

    A subclass provides ``_forward`` (the last layer's pre-activations and a function that turns
    dloss/dz into the gradient of every parameter) and ``_weights`` (which parameters the L2
    penalty applies to).
    """

    name: str
    task: str
    l2: float = 0.0

    def _forward(
        self, params: Params, X: np.ndarray
    ) -> tuple[np.ndarray, Callable[[np.ndarray], Params]]:
        raise NotImplementedError

    def _weights(self, params: Params) -> list[int]:
        return list(range(0, len(params), 2))  # [W, b, W, b, ...]: weights at even positions

    def _head(self, z: np.ndarray) -> Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]:
        if self.task == REGRESSION:
            return _squared_head
        return _binary_head if z.shape[1] == 1 else _softmax_head

    def _targets(self, y: np.ndarray) -> np.ndarray:
        if self.task == REGRESSION:
            return np.asarray(y, dtype=np.float64).reshape(-1)
        return np.asarray(y, dtype=np.int64).reshape(-1)

    def loss_and_grads(self, params: Params, X: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """The training objective on (X, y), L2 included, and its gradient for every parameter."""
        X = np.asarray(X, dtype=np.float64)
        y = self._targets(y)
        z, backward = self._forward(params, X)
        loss, dz = self._head(z)(z, y)
        grads = backward(dz)
        if self.l2:
            for i in self._weights(params):
                loss += 0.5 * self.l2 * float(np.sum(params[i] ** 2))
                grads[i] = grads[i] + self.l2 * params[i]
        return loss, grads

    def per_example_grads(self, params: Params, X: np.ndarray, y: np.ndarray) -> Params:
        """Each row's own gradient of the objective (L2 included), stacked on a leading axis:
        what ``loss_and_grads`` gives for that row alone, for all rows in one pass (DP-SGD)."""
        X = np.asarray(X, dtype=np.float64)
        y = self._targets(y)
        z, backward = self._forward(params, X)
        _, dz = self._head(z)(z, y)
        # The heads average over the rows; each row's own gradient is n times its share.
        grads = backward(dz * len(X), per_example=True)  # type: ignore[call-arg]
        if self.l2:
            for i in self._weights(params):
                grads[i] = grads[i] + self.l2 * params[i]
        return grads

    def train(
        self,
        params: Params,
        X: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        learning_rate: float,
        rng: np.random.Generator,
        proximal_mu: float = 0.0,
    ) -> Params:
        """Minibatch SGD from ``params``; returns new arrays and leaves ``params`` untouched.

        With ``proximal_mu > 0`` every step also descends ``mu/2 * ||w - w_start||^2``, which
        keeps a site's model near the global one it started from (FedProx).
        """
        if not _whole(epochs) or epochs < 0:
            raise ValueError(f"epochs must be a whole number of zero or more, not {epochs!r}.")
        if not _whole(batch_size) or batch_size < 1:
            raise ValueError(
                f"batch_size must be a whole number of one or more, not {batch_size!r}."
            )
        if not np.isfinite(learning_rate) or learning_rate <= 0:
            raise ValueError(f"learning_rate must be a positive number, not {learning_rate!r}.")
        if not np.isfinite(proximal_mu) or proximal_mu < 0:
            raise ValueError(f"proximal_mu must be zero or more, not {proximal_mu!r}.")
        X = np.asarray(X, dtype=np.float64)
        y = self._targets(y)
        if len(X) != len(y):
            raise ValueError(f"{len(X)} rows of features but {len(y)} labels.")
        anchor = [np.array(p, dtype=np.float64, copy=True) for p in params]
        current = [a.copy() for a in anchor]
        n = len(X)
        # Overflow is judged once at the end (TrainingDiverged) rather than warned about per step.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for _ in range(epochs):
                order = rng.permutation(n)
                for start in range(0, n, batch_size):
                    batch = order[start : start + batch_size]
                    _, grads = self.loss_and_grads(current, X[batch], y[batch])
                    for w, g, w0 in zip(current, grads, anchor, strict=True):
                        if proximal_mu > 0:
                            g = g + proximal_mu * (w - w0)
                        w -= learning_rate * g
        if not all(np.all(np.isfinite(w)) for w in current):
            raise TrainingDiverged(
                "Training diverged (non-finite parameters); lower the learning rate."
            )
        return current

    def _output(self, params: Params, X: np.ndarray) -> np.ndarray:
        z, _ = self._forward(params, np.asarray(X, dtype=np.float64))
        return np.clip(z, -LOGIT_CLIP, LOGIT_CLIP) if self.task == CLASSIFICATION else z

    def predict_proba(self, params: Params, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, K), also for two classes (classification only)."""
        if self.task != CLASSIFICATION:
            raise ValueError(f"{self.name} is a regression model: it has no class probabilities.")
        z = self._output(params, X)
        if z.shape[1] == 1:
            p = _sigmoid(z[:, 0])
            return np.column_stack([1.0 - p, p])
        return _softmax(z)

    def predict(self, params: Params, X: np.ndarray) -> np.ndarray:
        """Class indices (int64) for classification, predicted values for regression."""
        if self.task == CLASSIFICATION:
            z = self._output(params, X)
            if z.shape[1] == 1:
                return (z[:, 0] > 0).astype(np.int64)
            return np.argmax(z, axis=1).astype(np.int64)
        return self._output(params, X)[:, 0].copy()

    def evaluate(self, params: Params, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Scores of ``params`` on (X, y), the L2 penalty left out.

        Classification: ``loss`` (mean cross-entropy), ``accuracy``, ``f1`` (the class at index
        1 for two classes, macro average otherwise) and ``roc_auc`` (one-vs-rest macro average
        for more classes), the last one only when every class occurs in ``y``. Regression:
        ``loss`` (= ``mse``), ``mse``, ``rmse``, ``mae`` and ``r2``.
        """
        X = np.asarray(X, dtype=np.float64)
        y = self._targets(y)
        if len(X) == 0:
            raise ValueError("Cannot score a model on zero rows.")
        if len(X) != len(y):
            raise ValueError(f"{len(X)} rows of features but {len(y)} labels.")
        z = self._output(params, X)
        loss, _ = self._head(z)(z, y)
        if self.task == REGRESSION:
            residual = z[:, 0] - y
            mse = float(np.mean(residual**2))
            total = float(np.sum((y - y.mean()) ** 2))
            # As scikit-learn's r2_score: a constant target gives 1 if predicted exactly, else 0.
            r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 else float(mse == 0.0)
            return {
                "loss": loss,
                "mse": mse,
                "rmse": float(np.sqrt(mse)),
                "mae": float(np.mean(np.abs(residual))),
                "r2": r2,
            }
        proba = self.predict_proba(params, X)
        n_classes = proba.shape[1]
        predicted = np.argmax(proba, axis=1) if n_classes > 2 else (z[:, 0] > 0).astype(np.int64)
        labels = list(range(n_classes))
        metrics = {
            "loss": loss,
            "accuracy": float(np.mean(predicted == y)),
            "f1": f1_score(y, predicted, labels),
        }
        # ROC AUC is undefined unless every class occurs; leave it out rather than report NaN.
        if len(np.unique(y)) == n_classes:
            metrics["roc_auc"] = roc_auc_score(y, proba)
        return metrics


@dataclass(frozen=True)
class LogisticRegression(_NumpyFamily):
    name: str = "logistic_regression"
    task: str = CLASSIFICATION

    def init(self, n_features: int, n_outputs: int, rng: np.random.Generator) -> Params:
        """Zeros: the objective is convex, so no symmetry needs breaking."""
        _check_sizes(n_features, n_outputs)
        if n_outputs < 2:
            raise ValueError("Logistic regression needs at least two classes.")
        k = 1 if n_outputs == 2 else n_outputs
        return [np.zeros((n_features, k)), np.zeros(k)]

    def _forward(
        self, params: Params, X: np.ndarray
    ) -> tuple[np.ndarray, Callable[[np.ndarray], Params]]:
        W, b = params
        return X @ W + b, lambda dz, per_example=False: list(_layer_grads(X, dz, per_example))


@dataclass(frozen=True)
class LinearRegression(_NumpyFamily):
    name: str = "linear_regression"
    task: str = REGRESSION

    def init(self, n_features: int, n_outputs: int, rng: np.random.Generator) -> Params:
        _check_sizes(n_features, n_outputs)
        if n_outputs != 1:
            raise ValueError("Linear regression predicts exactly one value.")
        return [np.zeros((n_features, 1)), np.zeros(1)]

    def _forward(
        self, params: Params, X: np.ndarray
    ) -> tuple[np.ndarray, Callable[[np.ndarray], Params]]:
        W, b = params
        return X @ W + b, lambda dz, per_example=False: list(_layer_grads(X, dz, per_example))


@dataclass(frozen=True)
class MLP(_NumpyFamily):
    name: str = "mlp"
    task: str = CLASSIFICATION
    hidden_layers: tuple[int, ...] = (32,)
    activation: str = "relu"

    def init(self, n_features: int, n_outputs: int, rng: np.random.Generator) -> Params:
        _check_sizes(n_features, n_outputs)
        if self.task == CLASSIFICATION:
            if n_outputs < 2:
                raise ValueError("A classification MLP needs at least two classes.")
            out = 1 if n_outputs == 2 else n_outputs
        else:
            if n_outputs != 1:
                raise ValueError("A regression MLP predicts exactly one value.")
            out = 1
        sizes = [n_features, *self.hidden_layers, out]
        params: Params = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            params += [_glorot(rng, fan_in, fan_out), np.zeros(fan_out)]
        return params

    def _activation_slope(self, h: np.ndarray) -> np.ndarray:
        return (h > 0).astype(np.float64) if self.activation == "relu" else 1.0 - np.tanh(h) ** 2

    def _forward(
        self, params: Params, X: np.ndarray
    ) -> tuple[np.ndarray, Callable[[np.ndarray], Params]]:
        inputs = [X]  # the input of each layer
        pre: list[np.ndarray] = []  # each hidden layer's pre-activation
        a = X
        n_layers = len(params) // 2
        for layer in range(n_layers):
            z = a @ params[2 * layer] + params[2 * layer + 1]
            if layer == n_layers - 1:
                break
            pre.append(z)
            a = np.maximum(z, 0.0) if self.activation == "relu" else np.tanh(z)
            inputs.append(a)

        def backward(dz: np.ndarray, per_example: bool = False) -> Params:
            grads: Params = [np.empty(0)] * len(params)
            for layer in reversed(range(n_layers)):
                grads[2 * layer], grads[2 * layer + 1] = _layer_grads(
                    inputs[layer], dz, per_example
                )
                if layer == 0:
                    break
                da = dz @ params[2 * layer].T
                dz = da * self._activation_slope(pre[layer - 1])
            return grads

        return z, backward


def _mlp(options: Mapping[str, Any]) -> MLP:
    _check_keys("mlp", options, {"hidden_layers", "activation", "task", "l2"})
    layers = options.get("hidden_layers", [32])
    if (
        not isinstance(layers, list | tuple)
        or not 1 <= len(layers) <= 2
        or any(not _whole(u) or not 1 <= u <= MAX_HIDDEN_UNITS for u in layers)
    ):
        raise ValueError(
            f"hidden_layers must list one or two layer sizes between 1 and {MAX_HIDDEN_UNITS}, "
            f"not {layers!r}."
        )
    activation = options.get("activation", "relu")
    if activation not in ("relu", "tanh"):
        raise ValueError(f"activation must be 'relu' or 'tanh', not {activation!r}.")
    task = options.get("task", CLASSIFICATION)
    if task not in (CLASSIFICATION, REGRESSION):
        raise ValueError(f"task must be 'classification' or 'regression', not {task!r}.")
    return MLP(
        task=task,
        hidden_layers=tuple(int(u) for u in layers),
        activation=activation,
        l2=_number_option(options, "l2", 0.0),
    )


def get_family(name: str, options: Mapping[str, Any] | None = None) -> ModelFamily:
    """The family called ``name`` configured with ``options``; ValueError says what is wrong."""
    options = dict(options or {})
    if name == "logistic_regression":
        _check_keys(name, options, {"l2"})
        return LogisticRegression(l2=_number_option(options, "l2", 0.0))
    if name == "linear_regression":
        _check_keys(name, options, {"l2"})
        return LinearRegression(l2=_number_option(options, "l2", 0.0))
    if name == "mlp":
        return _mlp(options)
    raise ValueError(f"Unknown model family {name!r}; known: {', '.join(FAMILY_NAMES)}.")
