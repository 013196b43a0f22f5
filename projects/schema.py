"""Dataset descriptions and feature schemas: the only things about a site's data the portal sees.

Rows never leave a member's site. A site runs ``describe_csv`` (through ``manage.py
describe_dataset``) on its own machine and sends the portal this description, which is also the
exact shape the dataset registration accepts::

    {
      "name": "Oncology cohort 2024",            # shown in the portal
      "description": "",
      "site_key": "cohort-2024.csv",             # a file name in the site's own data directory
      "row_count": 569,                           # data rows, header excluded
      "sha256": "3b1f...",                        # SHA-256 of the file's bytes, 64 lowercase hex
      "label_column": "diagnosis",                # or null
      "columns": [
        {"name": "age", "type": "numeric", "missing": 0, "min": 23.0, "max": 91.0,
         "categories": null, "distinct": null},
        {"name": "diagnosis", "type": "numeric", "missing": 0, "min": 0.0, "max": 1.0,
         "categories": ["0", "1"], "distinct": 2},
        {"name": "ward", "type": "categorical", "missing": 3, "min": null, "max": null,
         "categories": ["A", "B"], "distinct": 2}
      ],
      "personal_data": false,
      "legal_basis": "",                          # required when personal_data is true
      "collection_start": "2024-01-01",           # ISO dates or null
      "collection_end": "2024-12-31"
    }

A column is *numeric* when every non-empty value is a plain finite decimal number (``12``,
``-0.5``, ``1e3``; not ``nan``, ``inf`` or ``1_000``), otherwise *categorical*. Empty values
(after stripping spaces) are counted in ``missing``. A column with no value at all is numeric
with no range, which is compatible with either kind of schema column.

Listing values is how data could leak, so it is capped: ``categories`` lists the sorted distinct
values of a categorical column only when there are at most ``max_categories`` (at most
``MAX_CATEGORIES``) of them, and those of a numeric column only when there are at most
``NUMERIC_CATEGORY_LIMIT`` (numbers written shortest: ``1.0`` is ``"1"``, sorted by value).
``distinct`` is the exact number of distinct values when it is at most ``max_categories`` and
``null`` otherwise; collecting a column's values stops as soon as it passes the cap, so an ID or
free-text column tells the portal neither its values nor how many there are.

A problem's *feature schema* (``feature_schema_clean``) declares the columns every contributing
dataset must provide; ``description_mismatches`` lists every way a description falls short of it.

Nothing here touches the database or the request: errors are raised with translated messages
that name the column concerned, all problems at once.
"""

import csv
import hashlib
import io
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

MAX_CATEGORIES = 50
NUMERIC_CATEGORY_LIMIT = 20
MAX_NAME_LENGTH = 200
MAX_SCHEMA_COLUMN_NAME_LENGTH = 100  # also the model's limit for a label column
MAX_ROW_COUNT = 2**31 - 1  # a PositiveIntegerField on every database

COLUMN_TYPES = ("numeric", "categorical")
TASK_TYPES = ("binary", "multiclass", "regression")

DESCRIPTION_KEYS = (
    "name",
    "description",
    "site_key",
    "row_count",
    "sha256",
    "label_column",
    "columns",
    "personal_data",
    "legal_basis",
    "collection_start",
    "collection_end",
)
# Every other key may be left out by a client and takes the default below. Whether the data is
# personal is never assumed: it must be declared.
REQUIRED_DESCRIPTION_KEYS = ("name", "site_key", "row_count", "sha256", "columns", "personal_data")
COLUMN_KEYS = (
    "name",
    "type",
    "missing",
    "min",
    "max",
    "categories",
    "distinct",
    "counts",
    "mean",
    "std",
)
REQUIRED_COLUMN_KEYS = ("name", "type", "missing")
FEATURE_KEYS = ("name", "type", "unit", "min", "max", "categories", "required")

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
# Control characters and ":" as well as path separators: a site key must name a file in the
# site's data directory on every platform (":" selects a drive or a stream on Windows).
_UNSAFE_SITE_KEY = re.compile(r"[/\\:\x00-\x1f\x7f]")


class DescribeError(ValueError):
    """A CSV file that cannot be described; the message says why, for the person at the site."""


# --- Describing a CSV file at the site ---------------------------------------------------------


class _HashingReader(io.RawIOBase):
    """Hashes bytes as the CSV reader consumes them: one pass, and the hash is of what was read."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        view[: len(data)] = data
        self.sha256.update(data)
        return len(data)


@dataclass
class _ColumnStats:
    name: str
    cap: int
    missing: int = 0
    numeric: bool = True
    minimum: float | None = None
    maximum: float | None = None
    # Distinct values, dropped (None) as soon as there are more than `cap` of them.
    texts: set[str] | None = field(default_factory=set)
    numbers: set[float] | None = field(default_factory=set)
    # The label only: how many rows hold each value (the class balance a model card reports).
    tally: Counter[str] | None = None
    # Welford's running mean and sum of squared deviations: a run may standardise with them.
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, raw: str) -> None:
        value = raw.strip()
        if not value:
            self.missing += 1
            return
        if self.tally is not None:
            self.tally[value] += 1
        if self.texts is not None:
            self.texts.add(value)
            if len(self.texts) > self.cap:
                self.texts = None
        if not self.numeric:
            return
        number = _parse_number(value)
        if number is None:
            self.numeric = False
            self.minimum = self.maximum = None
            self.numbers = None
            return
        self.minimum = number if self.minimum is None else min(self.minimum, number)
        self.maximum = number if self.maximum is None else max(self.maximum, number)
        self.count += 1
        delta = number - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (number - self.mean)
        if self.numbers is not None:
            self.numbers.add(number)
            if len(self.numbers) > self.cap:
                self.numbers = None

    def as_dict(self) -> dict[str, Any]:
        categories: list[str] | None = None
        distinct: int | None = None
        if self.numeric:
            if self.numbers is not None:
                distinct = len(self.numbers)
                if distinct <= min(NUMERIC_CATEGORY_LIMIT, self.cap):
                    categories = [format_number(number) for number in sorted(self.numbers)]
        elif self.texts is not None:
            distinct = len(self.texts)
            categories = sorted(self.texts)
        described: dict[str, Any] = {
            "name": self.name,
            "type": "numeric" if self.numeric else "categorical",
            "missing": self.missing,
            "min": self.minimum,
            "max": self.maximum,
            "categories": categories,
            "distinct": distinct,
        }
        if self.numeric and self.count:
            # The population standard deviation, as a central scaler computes it.
            described["mean"] = self.mean
            described["std"] = math.sqrt(max(self.m2, 0.0) / self.count)
        if self.tally is not None and categories is not None:
            # Counts per listed category (as written in the file, for a numeric label too).
            by_text = {
                format_number(float(k)) if self.numeric else k: v for k, v in self.tally.items()
            }
            described["counts"] = {c: by_text.get(c, 0) for c in categories}
        return described


def _parse_number(value: str) -> float | None:
    if not _NUMBER.fullmatch(value):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def format_number(number: float) -> str:
    """The shortest text for a number: ``1.0`` is ``"1"``, ``2.5`` is ``"2.5"``."""
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return repr(number)


def describe_csv(
    path: Path,
    *,
    label: str | None = None,
    name: str | None = None,
    site_key: str | None = None,
    description: str = "",
    personal_data: bool = False,
    legal_basis: str = "",
    collection_start: date | None = None,
    collection_end: date | None = None,
    max_categories: int = MAX_CATEGORIES,
) -> dict[str, Any]:
    """Describe a UTF-8 CSV file (header row first) without keeping any of its rows.

    Reads the file once, streaming, and hashes the bytes as it parses them. Blank lines are
    skipped and not counted. The result is checked with ``description_clean`` so that what the
    site sends is what the portal accepts; any problem raises ``DescribeError``.
    """
    if not 1 <= max_categories <= MAX_CATEGORIES:
        raise ValueError(f"max_categories must be between 1 and {MAX_CATEGORIES}")
    path = Path(path)
    if not path.is_file():
        raise DescribeError(_("There is no file at %(path)s.") % {"path": path})
    try:
        stats, row_count, sha256 = _read_csv(path, label=label, max_categories=max_categories)
    except OSError as exc:
        raise DescribeError(
            _("%(path)s cannot be read: %(error)s") % {"path": path, "error": exc.strerror or exc}
        ) from exc

    result: dict[str, Any] = {
        "name": name if name is not None else path.stem,
        "description": description,
        "site_key": site_key if site_key is not None else path.name,
        "row_count": row_count,
        "sha256": sha256,
        "label_column": label,
        "columns": [column.as_dict() for column in stats],
        "personal_data": personal_data,
        "legal_basis": legal_basis,
        "collection_start": collection_start.isoformat() if collection_start else None,
        "collection_end": collection_end.isoformat() if collection_end else None,
    }
    try:
        description_clean(result)
    except ValidationError as exc:
        raise DescribeError(" ".join(exc.messages)) from exc
    return result


def _read_csv(
    path: Path, *, label: str | None, max_categories: int
) -> tuple[list[_ColumnStats], int, str]:
    with path.open("rb", buffering=0) as raw:
        hashing = _HashingReader(raw)
        with io.TextIOWrapper(io.BufferedReader(hashing), encoding="utf-8-sig", newline="") as text:
            reader = csv.reader(text)
            try:
                header = next(reader, None)
                if not header or not any(cell.strip() for cell in header):
                    raise DescribeError(
                        _("%(path)s is empty: the first line must name the columns.")
                        % {"path": path}
                    )
                stats = _header_columns(header, label=label, max_categories=max_categories)
                row_count = 0
                for row in reader:
                    if not row:
                        continue
                    if len(row) != len(stats):
                        raise DescribeError(
                            _("Line %(line)d has %(found)d fields; the header has %(expected)d.")
                            % {"line": reader.line_num, "found": len(row), "expected": len(stats)}
                        )
                    row_count += 1
                    for column, value in zip(stats, row, strict=True):
                        column.add(value)
            except UnicodeDecodeError as exc:
                raise DescribeError(
                    _("%(path)s is not UTF-8 text; save it as UTF-8 CSV and try again.")
                    % {"path": path}
                ) from exc
            except csv.Error as exc:
                raise DescribeError(
                    _("Line %(line)d is not valid CSV: %(error)s")
                    % {"line": reader.line_num, "error": exc}
                ) from exc
    if row_count == 0:
        raise DescribeError(_("%(path)s has a header but no data rows.") % {"path": path})
    return stats, row_count, hashing.sha256.hexdigest()


def _header_columns(
    header: list[str], *, label: str | None, max_categories: int
) -> list[_ColumnStats]:
    names = [cell.strip() for cell in header]
    for index, column_name in enumerate(names, start=1):
        if not column_name:
            raise DescribeError(_("Column %(index)d has no name.") % {"index": index})
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise DescribeError(
            _("Column names must be unique; repeated: %(names)s.")
            % {"names": ", ".join(duplicates)}
        )
    if label is not None and label not in names:
        raise DescribeError(
            _("The label column “%(name)s” is not a column of the file (columns: %(columns)s).")
            % {"name": label, "columns": ", ".join(names)}
        )
    return [
        _ColumnStats(
            name=column_name,
            cap=max_categories,
            tally=Counter() if column_name == label else None,
        )
        for column_name in names
    ]


# --- Shared field checks -----------------------------------------------------------------------


def _is_number(value: object) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer too large for a float, as JSON allows
        return False


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unknown_keys(data: dict[Any, Any], allowed: tuple[str, ...]) -> str:
    return ", ".join(sorted(str(key) for key in data if key not in allowed))


def site_key_problem(site_key: object) -> str | None:
    """Why `site_key` is not a plain file name, or None when it is one."""
    if not isinstance(site_key, str) or not site_key.strip():
        return _("The site key is required.")
    if len(site_key) > MAX_NAME_LENGTH:
        return _("The site key must be at most %(max)d characters.") % {"max": MAX_NAME_LENGTH}
    if _UNSAFE_SITE_KEY.search(site_key) or ".." in site_key or site_key.startswith("."):
        return _(
            "The site key “%(key)s” must be a plain file name in the site's data directory, "
            "not a path (no “/”, “\\”, “:” or “..”, and not starting with “.”)."
        ) % {"key": site_key}
    return None


# --- A problem's feature schema ----------------------------------------------------------------


def feature_schema_clean(
    columns: list[Any], *, label_column: str, task_type: str
) -> list[dict[str, Any]]:
    """Validate and normalise the feature schema a problem's contributors must provide.

    Returns the columns in the given order with every key present (``unit`` "",
    ``categories`` [] and ``required`` True by default; bounds as floats). Raises one
    ``ValidationError`` listing every problem, each naming its column.
    """
    errors: list[str] = []
    if task_type not in TASK_TYPES:
        errors.append(
            _("The task type must be one of %(types)s, not “%(value)s”.")
            % {"types": ", ".join(TASK_TYPES), "value": task_type}
        )
    if not isinstance(columns, list) or not columns:
        errors.append(_("The feature schema must be a non-empty list of columns."))
        raise ValidationError(errors)

    cleaned: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, spec in enumerate(columns, start=1):
        column = _feature_clean(spec, index=index, seen=seen, errors=errors)
        if column is not None:
            cleaned.append(column)

    label = next((column for column in cleaned if column["name"] == label_column), None)
    if label is None:
        errors.append(
            _("The label column “%(name)s” is not one of the schema's columns.")
            % {"name": label_column}
        )
    else:
        errors.extend(_label_problems(label, task_type=task_type))
    if errors:
        raise ValidationError(errors)
    return cleaned


def _feature_clean(
    spec: object, *, index: int, seen: set[str], errors: list[str]
) -> dict[str, Any] | None:
    if not isinstance(spec, dict):
        errors.append(_("Column #%(index)d must be an object.") % {"index": index})
        return None
    raw_name = spec.get("name")
    name = raw_name.strip() if isinstance(raw_name, str) else ""
    ref = {"name": name or f"#{index}"}
    if not name:
        errors.append(_("Column “%(name)s” has no name.") % ref)
    elif len(name) > MAX_SCHEMA_COLUMN_NAME_LENGTH:
        errors.append(
            _("Column “%(name)s”: the name must be at most %(max)d characters.")
            % {**ref, "max": MAX_SCHEMA_COLUMN_NAME_LENGTH}
        )
    elif name in seen:
        errors.append(_("Column “%(name)s” is declared more than once.") % ref)
    seen.add(name)

    if unknown := _unknown_keys(spec, FEATURE_KEYS):
        errors.append(_("Column “%(name)s”: unknown keys %(keys)s.") % {**ref, "keys": unknown})

    column_type = spec.get("type")
    if column_type not in COLUMN_TYPES:
        errors.append(_("Column “%(name)s”: the type must be “numeric” or “categorical”.") % ref)
    unit = spec.get("unit", "")
    if not isinstance(unit, str):
        errors.append(_("Column “%(name)s”: the unit must be text.") % ref)
        unit = ""
    required = spec.get("required", True)
    if not isinstance(required, bool):
        errors.append(_("Column “%(name)s”: “required” must be true or false.") % ref)
        required = True

    bounds: dict[str, float | None] = {}
    for key in ("min", "max"):
        value = spec.get(key)
        bounds[key] = None
        if value is None:
            continue
        if not _is_number(value):
            errors.append(
                _("Column “%(name)s”: %(key)s must be a finite number or null.")
                % {**ref, "key": key}
            )
        else:
            bounds[key] = float(value)

    categories: list[str] = []
    raw_categories = spec.get("categories", [])
    categories_valid = isinstance(raw_categories, list) and all(
        isinstance(category, str) and category.strip() for category in raw_categories
    )
    if not categories_valid:
        errors.append(_("Column “%(name)s”: categories must be a list of non-empty texts.") % ref)
    else:
        categories = [category.strip() for category in raw_categories]
        if len(set(categories)) != len(categories):
            errors.append(_("Column “%(name)s”: categories must be unique.") % ref)

    if column_type == "numeric":
        low, high = bounds["min"], bounds["max"]
        if low is not None and high is not None and low > high:
            errors.append(
                _("Column “%(name)s”: the minimum %(min)s is above the maximum %(max)s.")
                % {**ref, "min": format_number(low), "max": format_number(high)}
            )
        if categories:
            errors.append(_("Column “%(name)s”: a numeric column has no categories.") % ref)
    elif column_type == "categorical":
        if spec.get("min") is not None or spec.get("max") is not None:
            errors.append(
                _("Column “%(name)s”: a categorical column has no minimum or maximum.") % ref
            )
        if not categories and categories_valid:
            errors.append(
                _("Column “%(name)s”: a categorical column needs at least one category.") % ref
            )

    return {
        "name": name,
        "type": column_type,
        "unit": unit,
        "min": bounds["min"],
        "max": bounds["max"],
        "categories": categories,
        "required": required,
    }


def _label_problems(label: dict[str, Any], *, task_type: str) -> list[str]:
    ref = {"name": label["name"]}
    problems: list[str] = []
    if not label["required"]:
        problems.append(_("The label column “%(name)s” must be required.") % ref)
    if label["type"] not in COLUMN_TYPES:
        return problems
    if task_type == "binary" and (label["type"] != "categorical" or len(label["categories"]) != 2):
        problems.append(
            _(
                "The label column “%(name)s” must be categorical with exactly 2 categories "
                "for binary classification."
            )
            % ref
        )
    elif task_type == "multiclass" and (
        label["type"] != "categorical" or len(label["categories"]) < 3
    ):
        problems.append(
            _(
                "The label column “%(name)s” must be categorical with at least 3 categories "
                "for multiclass classification."
            )
            % ref
        )
    elif task_type == "regression" and label["type"] != "numeric":
        problems.append(_("The label column “%(name)s” must be numeric for regression.") % ref)
    return problems


# --- A dataset description as received from a site --------------------------------------------


def description_clean(data: object) -> dict[str, Any]:
    """Check the structure of a dataset description (never trusted: a client sent it).

    Returns it normalised: keys in the order of the module docstring, texts stripped, the hash
    in lowercase and the collection dates as ``datetime.date``. Raises one ``ValidationError``
    with every problem.
    """
    if not isinstance(data, dict):
        raise ValidationError([_("A dataset description must be an object.")])
    errors: list[str] = []
    if unknown := _unknown_keys(data, DESCRIPTION_KEYS):
        errors.append(_("Unknown keys in the description: %(keys)s.") % {"keys": unknown})
    for key in REQUIRED_DESCRIPTION_KEYS:
        if key not in data:
            errors.append(_("The description has no “%(key)s”.") % {"key": key})

    name = data.get("name")
    if "name" in data and (
        not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME_LENGTH
    ):
        errors.append(
            _("The name must be non-empty text of at most %(max)d characters.")
            % {"max": MAX_NAME_LENGTH}
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        errors.append(_("The description must be text."))

    site_key = data.get("site_key")
    if "site_key" in data and (problem := site_key_problem(site_key)):
        errors.append(problem)

    row_count = data.get("row_count")
    row_count_ok = _is_count(row_count) and 1 <= row_count <= MAX_ROW_COUNT
    if "row_count" in data and not row_count_ok:
        errors.append(_("The row count must be a whole number of at least 1."))

    sha256 = data.get("sha256")
    if isinstance(sha256, str):
        sha256 = sha256.lower()
    if "sha256" in data and not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
        errors.append(_("The SHA-256 must be 64 hexadecimal digits."))

    columns = data.get("columns")
    cleaned_columns: list[dict[str, Any]] = []
    seen: set[str] = set()
    if "columns" in data:
        if not isinstance(columns, list) or not columns:
            errors.append(_("The columns must be a non-empty list."))
        else:
            for index, column in enumerate(columns, start=1):
                cleaned = _data_column_clean(
                    column,
                    index=index,
                    seen=seen,
                    row_count=row_count if row_count_ok else None,
                    errors=errors,
                )
                if cleaned is not None:
                    cleaned_columns.append(cleaned)

    label_column = data.get("label_column")
    if label_column is not None:
        if not isinstance(label_column, str) or not label_column.strip():
            errors.append(_("The label column must be a column name or null."))
        elif len(label_column) > MAX_SCHEMA_COLUMN_NAME_LENGTH:
            errors.append(
                _("The label column “%(name)s” must be at most %(max)d characters.")
                % {"name": label_column, "max": MAX_SCHEMA_COLUMN_NAME_LENGTH}
            )
        elif seen and label_column.strip() not in seen:
            errors.append(
                _("The label column “%(name)s” is not one of the columns.") % {"name": label_column}
            )

    personal_data = data.get("personal_data")
    if "personal_data" in data and not isinstance(personal_data, bool):
        errors.append(_("“personal_data” must be true or false."))
    legal_basis = data.get("legal_basis", "")
    if not isinstance(legal_basis, str):
        errors.append(_("The legal basis must be text."))
    elif personal_data is True and not legal_basis.strip():
        errors.append(_("Personal data needs a legal basis for processing it."))

    start = _date_clean(data.get("collection_start"), "collection_start", errors)
    end = _date_clean(data.get("collection_end"), "collection_end", errors)
    if start and end and start > end:
        errors.append(_("The collection period starts after it ends."))

    if errors:
        raise ValidationError(errors)
    return {
        "name": name.strip(),
        "description": description,
        "site_key": site_key,
        "row_count": row_count,
        "sha256": sha256,
        "label_column": label_column.strip() if label_column is not None else None,
        "columns": cleaned_columns,
        "personal_data": personal_data,
        "legal_basis": legal_basis.strip(),
        "collection_start": start,
        "collection_end": end,
    }


def _date_clean(value: object, key: str, errors: list[str]) -> date | None:
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    errors.append(_("“%(key)s” must be a date as YYYY-MM-DD or null.") % {"key": key})
    return None


def _data_column_clean(
    column: object, *, index: int, seen: set[str], row_count: int | None, errors: list[str]
) -> dict[str, Any] | None:
    if not isinstance(column, dict):
        errors.append(_("Column #%(index)d must be an object.") % {"index": index})
        return None
    raw_name = column.get("name")
    name = raw_name.strip() if isinstance(raw_name, str) else ""
    ref = {"name": name or f"#{index}"}
    problems_before = len(errors)
    if not name:
        errors.append(_("Column “%(name)s” has no name.") % ref)
    elif len(name) > MAX_NAME_LENGTH:
        errors.append(
            _("Column “%(name)s”: the name must be at most %(max)d characters.")
            % {**ref, "max": MAX_NAME_LENGTH}
        )
    elif name in seen:
        errors.append(_("Column “%(name)s” appears more than once.") % ref)
    seen.add(name)
    if unknown := _unknown_keys(column, COLUMN_KEYS):
        errors.append(_("Column “%(name)s”: unknown keys %(keys)s.") % {**ref, "keys": unknown})
    for key in REQUIRED_COLUMN_KEYS[1:]:
        if key not in column:
            errors.append(_("Column “%(name)s” has no “%(key)s”.") % {**ref, "key": key})

    column_type = column.get("type")
    if "type" in column and column_type not in COLUMN_TYPES:
        errors.append(_("Column “%(name)s”: the type must be “numeric” or “categorical”.") % ref)
    missing = column.get("missing")
    if "missing" in column and not (_is_count(missing) and missing >= 0):
        errors.append(_("Column “%(name)s”: “missing” must be a whole number ≥ 0.") % ref)
    elif _is_count(missing) and row_count is not None and missing > row_count:
        errors.append(
            _("Column “%(name)s” has more missing values than the dataset has rows.") % ref
        )

    low, high = column.get("min"), column.get("max")
    for key, value in (("min", low), ("max", high)):
        if value is not None and not _is_number(value):
            errors.append(
                _("Column “%(name)s”: %(key)s must be a finite number or null.")
                % {**ref, "key": key}
            )
    if column_type == "categorical" and (low is not None or high is not None):
        errors.append(_("Column “%(name)s”: a categorical column has no minimum or maximum.") % ref)
    if _is_number(low) and _is_number(high) and low > high:
        errors.append(_("Column “%(name)s”: the minimum is above the maximum.") % ref)

    for key in ("mean", "std"):
        value = column.get(key)
        if value is not None and not _is_number(value):
            errors.append(
                _("Column “%(name)s”: %(key)s must be a finite number or null.")
                % {**ref, "key": key}
            )
    if column_type == "categorical" and (
        column.get("mean") is not None or column.get("std") is not None
    ):
        errors.append(
            _("Column “%(name)s”: a categorical column has no mean or standard deviation.") % ref
        )
    if _is_number(column.get("std")) and column["std"] < 0:
        errors.append(_("Column “%(name)s”: the standard deviation cannot be negative.") % ref)

    categories = column.get("categories")
    if categories is not None:
        if not isinstance(categories, list) or not all(
            isinstance(category, str) for category in categories
        ):
            errors.append(_("Column “%(name)s”: categories must be a list of texts or null.") % ref)
        elif len(categories) > MAX_CATEGORIES:
            errors.append(
                _("Column “%(name)s” lists more than %(max)d categories.")
                % {**ref, "max": MAX_CATEGORIES}
            )
        elif len(set(categories)) != len(categories):
            errors.append(_("Column “%(name)s”: categories must be unique.") % ref)
    distinct = column.get("distinct")
    if distinct is not None and not (_is_count(distinct) and distinct >= 0):
        errors.append(_("Column “%(name)s”: “distinct” must be a whole number ≥ 0 or null.") % ref)
    counts = column.get("counts")
    if counts is not None:
        listed = set(categories) if isinstance(categories, list) else set()
        if (
            not isinstance(counts, dict)
            or not all(_is_count(n) and n >= 0 for n in counts.values())
            or not set(counts) <= listed
        ):
            errors.append(
                _("Column “%(name)s”: counts must give a whole number for listed categories.") % ref
            )
        elif row_count is not None and sum(counts.values()) > row_count:
            errors.append(
                _("Column “%(name)s” counts more values than the dataset has rows.") % ref
            )

    if len(errors) > problems_before:
        return None
    return {
        "name": name,
        "type": column_type,
        "missing": missing,
        "min": float(low) if low is not None else None,
        "max": float(high) if high is not None else None,
        "categories": list(categories) if categories is not None else None,
        "distinct": distinct,
        **({"counts": dict(counts)} if counts is not None else {}),
        **{k: float(column[k]) for k in ("mean", "std") if column.get(k) is not None},
    }


# --- Does a dataset fit a problem? -------------------------------------------------------------


def description_mismatches(
    schema: list[dict[str, Any]], *, label_column: str, description: dict[str, Any]
) -> list[str]:
    """Every way a clean description fails a clean, ratified schema; empty when it fits.

    Columns the schema does not declare are ignored: a site may hold more than the problem needs.
    """
    columns = {column["name"]: column for column in description["columns"]}
    problems: list[str] = []
    data_label = description.get("label_column")
    if data_label and data_label != label_column:
        problems.append(
            _("The dataset's label column “%(data)s” is not the problem's label column “%(name)s”.")
            % {"data": data_label, "name": label_column}
        )
    for spec in schema:
        ref = {"name": spec["name"]}
        data = columns.get(spec["name"])
        if data is None:
            if spec["required"]:
                problems.append(_("The required column “%(name)s” is not in the dataset.") % ref)
            continue
        if spec["required"] and data["missing"]:
            problems.append(
                _("The required column “%(name)s” has %(count)d missing values.")
                % {**ref, "count": data["missing"]}
            )
        if spec["type"] == "numeric":
            problems.extend(_numeric_mismatches(spec, data))
        else:
            problems.extend(_categorical_mismatches(spec, data))
    return problems


def _numeric_mismatches(spec: dict[str, Any], data: dict[str, Any]) -> list[str]:
    ref = {"name": spec["name"]}
    if data["type"] != "numeric":
        return [
            _("Column “%(name)s” must be numeric, but the dataset's values are not all numbers.")
            % ref
        ]
    problems: list[str] = []
    if spec["min"] is not None and data["min"] is not None and data["min"] < spec["min"]:
        problems.append(
            _(
                "Column “%(name)s” has values down to %(value)s, below the declared minimum "
                "%(bound)s."
            )
            % {**ref, "value": format_number(data["min"]), "bound": format_number(spec["min"])}
        )
    if spec["max"] is not None and data["max"] is not None and data["max"] > spec["max"]:
        problems.append(
            _("Column “%(name)s” has values up to %(value)s, above the declared maximum %(bound)s.")
            % {**ref, "value": format_number(data["max"]), "bound": format_number(spec["max"])}
        )
    return problems


def _categorical_mismatches(spec: dict[str, Any], data: dict[str, Any]) -> list[str]:
    ref = {"name": spec["name"]}
    if data["categories"] is None:
        return [
            _(
                "Column “%(name)s” must be categorical, but the dataset lists no categories for "
                "it (too many distinct values)."
            )
            % ref
        ]
    allowed = {str(category) for category in spec["categories"]}
    extra = [str(category) for category in data["categories"] if str(category) not in allowed]
    if not extra:
        return []
    return [
        _("Column “%(name)s” has categories the schema does not allow: %(values)s.")
        % {**ref, "values": ", ".join(extra)}
    ]
