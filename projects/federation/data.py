"""A site's data: reading its CSV file, encoding labels, scaling and splitting rows.

Only the site ever calls these on its own file; nothing read here travels. Scaling uses values
every site shares, never the site's own statistics, so every site maps a value to the same
number and the global model means the same thing everywhere: by default the feature ranges the
participants agreed on (the problem's schema); a run may instead standardise with the pooled
mean and standard deviation of the registered summaries, or leave the values as recorded.
"""

import csv
import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 1 << 20


class DataError(ValueError):
    """A file or value that cannot be used; ``code`` is what the portal translates.

    Codes: ``missing_column``, ``not_numeric``, ``empty``, ``unknown_label``.
    """

    def __init__(self, code: str, detail: dict[str, Any], message: str) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail
        self.message = message


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file, read in chunks (site files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _number(text: str, column: str, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    # NaN or infinity would poison every gradient: they are as unusable as text.
    if not math.isfinite(value):
        raise DataError(
            "not_numeric",
            {"column": column, "line": line, "value": text[:40]},
            f"Line {line}, column {column!r}: {text[:40]!r} is not a finite number.",
        )
    return value


def load_csv(
    path: Path, *, features: Sequence[str], label: str | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features (float64, in the order given) and raw label strings from a CSV file.

    The first non-blank row names the columns; other columns are ignored. Line numbers in
    errors count from the first line of the file.
    """
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:
            raise DataError("empty", {}, "The file is empty.")
        position: dict[str, int] = {}
        for i, name in enumerate(header):
            position.setdefault(name.strip(), i)
        wanted = [*features, *([label] if label is not None else [])]
        missing = [name for name in wanted if name not in position]
        if missing:
            raise DataError(
                "missing_column",
                {"columns": missing},
                f"The file has no column(s) {', '.join(repr(m) for m in missing)}.",
            )
        columns = [position[name] for name in features]
        label_column = position[label] if label is not None else None
        rows: list[list[float]] = []
        labels: list[str] = []
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # blank lines, as spreadsheets leave at the end
            cells = [row[c].strip() if c < len(row) else "" for c in columns]
            rows.append(
                [_number(cell, name, line) for cell, name in zip(cells, features, strict=True)]
            )
            if label_column is not None:
                labels.append(row[label_column].strip() if label_column < len(row) else "")
    if not rows:
        raise DataError("empty", {}, "The file has a header but no rows.")
    X = np.array(rows, dtype=np.float64).reshape(len(rows), len(features))
    y = np.array(labels, dtype=object) if label is not None else None
    return X, y


def encode_labels(raw: Sequence[str] | np.ndarray, classes: Sequence[str] | None) -> np.ndarray:
    """Class indices (int64) when ``classes`` are given, else the values as float64.

    A label is matched to a class by its exact text, so ``"1"`` and ``"1.0"`` are different
    classes: the problem's schema decides how labels are written.
    """
    if classes is not None:
        index = {str(c): i for i, c in enumerate(classes)}
        out = np.empty(len(raw), dtype=np.int64)
        for row, value in enumerate(raw):
            text = str(value).strip()
            if text not in index:
                raise DataError(
                    "unknown_label",
                    {"label": text[:40], "row": row + 1, "classes": [str(c) for c in classes]},
                    f"Row {row + 1}: label {text[:40]!r} is not one of the problem's classes.",
                )
            out[row] = index[text]
        return out
    values = np.empty(len(raw), dtype=np.float64)
    for row, value in enumerate(raw):
        values[row] = _number(str(value).strip(), "label", row + 2)
    return values


def scale(X: np.ndarray, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """Min-max scaling from the agreed ranges: low maps to 0, high to 1 (a point range to 0)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(ranges):
        raise ValueError(f"{len(ranges)} feature ranges for {X.shape[-1]} features.")
    low = np.array([float(r[0]) for r in ranges])
    high = np.array([float(r[1]) for r in ranges])
    width = high - low
    safe = np.where(width == 0, 1.0, width)
    return np.where(width == 0, 0.0, (X - low) / safe)


def standardise(X: np.ndarray, stats: Sequence[tuple[float, float]]) -> np.ndarray:
    """(x - mean) / deviation, feature by feature (a constant feature maps to 0)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(stats):
        raise ValueError(f"{len(stats)} feature summaries for {X.shape[-1]} features.")
    mean = np.array([float(s[0]) for s in stats])
    deviation = np.array([float(s[1]) for s in stats])
    safe = np.where(deviation == 0, 1.0, deviation)
    return np.where(deviation == 0, 0.0, (X - mean) / safe)


def transform(
    X: np.ndarray,
    scaling: str,
    ranges: Sequence[tuple[float, float]],
    stats: Sequence[tuple[float, float]] = (),
) -> np.ndarray:
    """The features as the model sees them, by the run's scaling (see the module's docstring)."""
    if scaling == "ranges":
        return scale(X, ranges)
    if scaling == "standardise":
        return standardise(X, stats)
    if scaling == "none":
        return np.asarray(X, dtype=np.float64)
    raise ValueError(f"Unknown feature scaling {scaling!r}.")


def split(
    n: int, validation_share: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation row indices from one permutation; at least one training row."""
    if n < 1:
        raise ValueError("Cannot split zero rows.")
    if not 0 <= validation_share < 1:
        raise ValueError(f"validation_share must be in [0, 1), not {validation_share!r}.")
    order = rng.permutation(n)
    n_validation = min(round(validation_share * n), n - 1)
    return order[n_validation:], order[:n_validation]
