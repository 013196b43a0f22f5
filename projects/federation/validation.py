"""What a site's update must satisfy before it may touch the global model.

A site is trusted with its data, not with the global model: its update must have exactly the
global model's arrays (count, shapes, dtype), hold only finite numbers, and lie within
``max_norm`` (L2, over all arrays) of the parameters the site was sent. The bound is the usual
defence against one site swamping an average (and the clipping bound that differential
privacy would build on); the coordinator chooses it.

A refusal carries a ``code`` that the portal translates, plain ``detail`` values for the
translated message, and an English ``message`` for logs and the API.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from projects.federation.encoding import EncodingError, decode_params

CODES = ("count", "shape", "dtype", "not_finite", "norm", "too_large", "malformed")


@dataclass(frozen=True)
class Rejection:
    code: str
    detail: dict[str, Any] = field(default_factory=dict)
    message: str = ""


class UpdateRejected(Exception):
    """An update that failed validation; ``rejection`` says why."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.message)
        self.rejection = rejection


def _reject(code: str, message: str, **detail: Any) -> UpdateRejected:
    return UpdateRejected(Rejection(code=code, detail=detail, message=message))


def update_norm(update: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """The L2 norm of ``update - reference`` taken over all arrays together."""
    squares = [
        float(np.sum((np.asarray(u) - np.asarray(r)) ** 2))
        for u, r in zip(update, reference, strict=True)
    ]
    return math.sqrt(math.fsum(squares))


def validate_update(
    update: list[np.ndarray], reference: list[np.ndarray], *, max_norm: float
) -> None:
    """Raise UpdateRejected unless ``update`` is an acceptable replacement for ``reference``."""
    update = [np.asarray(u) for u in update]
    reference = [np.asarray(r) for r in reference]
    if len(update) != len(reference):
        raise _reject(
            "count",
            f"The update has {len(update)} arrays; the model has {len(reference)}.",
            count=len(update),
            expected=len(reference),
        )
    for i, (u, r) in enumerate(zip(update, reference, strict=True)):
        if u.shape != r.shape:
            raise _reject(
                "shape",
                f"Array {i} has shape {u.shape}; the model's is {r.shape}.",
                array=i,
                shape=list(u.shape),
                expected=list(r.shape),
            )
    for i, (u, r) in enumerate(zip(update, reference, strict=True)):
        if u.dtype != r.dtype:
            raise _reject(
                "dtype",
                f"Array {i} has dtype {u.dtype}; the model's is {r.dtype}.",
                array=i,
                dtype=str(u.dtype),
                expected=str(r.dtype),
            )
    for i, u in enumerate(update):
        if not np.all(np.isfinite(u)):
            raise _reject("not_finite", f"Array {i} holds NaN or infinite values.", array=i)
    norm = update_norm(update, reference)
    if not norm <= max_norm:
        raise _reject(
            "norm",
            f"The update moves the model by {norm:.6g} (L2); at most {max_norm:.6g} is accepted.",
            norm=norm,
            bound=float(max_norm),
        )


def rejection_from_encoding(error: EncodingError) -> Rejection:
    """A decoding failure as a rejection (codes ``too_large`` and ``malformed``)."""
    return Rejection(code=error.code, detail=dict(error.detail), message=str(error))


def decode_update(
    blob: bytes,
    reference: list[np.ndarray],
    *,
    max_norm: float,
    max_bytes: int | None = None,
) -> list[np.ndarray]:
    """Decode and validate a site's update in one step; UpdateRejected for any failure."""
    try:
        update = decode_params(blob, max_bytes=max_bytes, max_arrays=max(len(reference), 64))
    except EncodingError as exc:
        raise UpdateRejected(rejection_from_encoding(exc)) from exc
    validate_update(update, reference, max_norm=max_norm)
    return update
