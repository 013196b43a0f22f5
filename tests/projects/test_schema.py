"""Dataset descriptions and feature schemas: pure functions, no database."""

import csv
import hashlib
import json
from datetime import date
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from projects.schema import (
    DescribeError,
    describe_csv,
    description_clean,
    description_mismatches,
    feature_schema_clean,
)

MIXED_CSV = (
    "age,sex,score,comment,outcome\n"
    "34,F,1.5,first visit,1\n"
    ",M,2.0,,0\n"
    '51, F ,-3,"late, again",1\n'
    "\n"
    "47,X,1e1,ok,0\n"
)


def write(tmp_path: Path, text: str, name: str = "cohort.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def messages(excinfo: pytest.ExceptionInfo[ValidationError]) -> str:
    return "\n".join(excinfo.value.messages)


# --- describe_csv ------------------------------------------------------------------------------


def test_describes_mixed_csv(tmp_path):
    path = write(tmp_path, MIXED_CSV)

    result = describe_csv(
        path,
        label="outcome",
        description="Outpatients",
        personal_data=True,
        legal_basis="Consent",
        collection_start=date(2024, 1, 1),
        collection_end=date(2024, 6, 30),
    )

    assert result == {
        "name": "cohort",
        "description": "Outpatients",
        "site_key": "cohort.csv",
        "row_count": 4,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "label_column": "outcome",
        "columns": [
            {
                "name": "age",
                "type": "numeric",
                "missing": 1,
                "min": 34.0,
                "max": 51.0,
                "categories": ["34", "47", "51"],
                "distinct": 3,
                # The summaries a run standardises with (population deviation).
                "mean": pytest.approx(44.0),
                "std": pytest.approx((158 / 3) ** 0.5),
            },
            {
                "name": "sex",
                "type": "categorical",
                "missing": 0,
                "min": None,
                "max": None,
                "categories": ["F", "M", "X"],
                "distinct": 3,
            },
            {
                "name": "score",
                "type": "numeric",
                "missing": 0,
                "min": -3.0,
                "max": 10.0,
                "categories": ["-3", "1.5", "2", "10"],
                "distinct": 4,
                "mean": pytest.approx(2.625),
                "std": pytest.approx(((1.125**2 + 0.625**2 + 5.625**2 + 7.375**2) / 4) ** 0.5),
            },
            {
                "name": "comment",
                "type": "categorical",
                "missing": 1,
                "min": None,
                "max": None,
                "categories": ["first visit", "late, again", "ok"],
                "distinct": 3,
            },
            {
                "name": "outcome",
                "type": "numeric",
                "missing": 0,
                "min": 0.0,
                "max": 1.0,
                "categories": ["0", "1"],
                "distinct": 2,
                "counts": {"0": 2, "1": 2},  # the label's class balance
                "mean": pytest.approx(0.5),
                "std": pytest.approx(0.5),
            },
        ],
        "personal_data": True,
        "legal_basis": "Consent",
        "collection_start": "2024-01-01",
        "collection_end": "2024-06-30",
    }
    assert list(result) == [
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
    ]


def test_uses_given_name_and_site_key(tmp_path):
    result = describe_csv(write(tmp_path, MIXED_CSV), name="Cohort A", site_key="a.csv")

    assert (result["name"], result["site_key"], result["label_column"]) == (
        "Cohort A",
        "a.csv",
        None,
    )


def test_lists_no_values_when_column_passes_the_cap(tmp_path):
    rows = "".join(f"P{i:03d},{i * 1.5},{i % 3}\n" for i in range(60))
    path = write(tmp_path, "patient_id,dose,arm\n" + rows)

    id_column, dose, arm = describe_csv(path)["columns"]

    assert id_column == {
        "name": "patient_id",
        "type": "categorical",
        "missing": 0,
        "min": None,
        "max": None,
        "categories": None,
        "distinct": None,
    }
    assert (dose["categories"], dose["distinct"], dose["min"], dose["max"]) == (
        None,
        None,
        0.0,
        88.5,
    )
    assert (arm["categories"], arm["distinct"]) == (["0", "1", "2"], 3)


def test_numeric_column_with_more_than_twenty_values_lists_none_but_counts_them(tmp_path):
    path = write(tmp_path, "x\n" + "".join(f"{i}\n" for i in range(30)))

    (column,) = describe_csv(path)["columns"]

    assert (column["categories"], column["distinct"]) == (None, 30)


def test_categorical_column_at_the_cap_is_listed(tmp_path):
    path = write(tmp_path, "code\n" + "".join(f"C{i:02d}\n" for i in range(50)))

    (column,) = describe_csv(path)["columns"]

    assert column["distinct"] == 50
    assert column["categories"] == [f"C{i:02d}" for i in range(50)]


def test_a_smaller_cap_applies_to_both_kinds(tmp_path):
    path = write(tmp_path, "n,c\n1,a\n2,b\n3,c\n")

    n, c = describe_csv(path, max_categories=2)["columns"]

    assert (n["categories"], n["distinct"], c["categories"], c["distinct"]) == (
        None,
        None,
        None,
        None,
    )


def test_normalises_numbers(tmp_path):
    path = write(tmp_path, "v\n1.0\n1\n2.50\n+3\n1e1\n-0.0\n.5\n")

    (column,) = describe_csv(path)["columns"]

    assert column["type"] == "numeric"
    assert column["categories"] == ["0", "0.5", "1", "2.5", "3", "10"]
    assert (column["distinct"], column["min"], column["max"]) == (6, -0.0, 10.0)


@pytest.mark.parametrize("odd", ["nan", "inf", "1_000", "1e999", "0x10", "12 kg"])
def test_not_plain_finite_numbers_make_column_categorical(tmp_path, odd):
    (column,) = describe_csv(write(tmp_path, f"v\n1\n{odd}\n"))["columns"]

    assert column["type"] == "categorical"
    assert (column["min"], column["max"]) == (None, None)
    assert column["categories"] == sorted(["1", odd])


def test_column_without_values_is_numeric_without_range(tmp_path):
    _, empty = describe_csv(write(tmp_path, "a,b\n1,\n2, \n"))["columns"]

    assert empty == {
        "name": "b",
        "type": "numeric",
        "missing": 2,
        "min": None,
        "max": None,
        "categories": [],
        "distinct": 0,
    }


def test_accepts_utf8_with_byte_order_mark(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("名稱,年齡\n王,30\n".encode("utf-8-sig"))

    result = describe_csv(path, label="名稱")

    assert [column["name"] for column in result["columns"]] == ["名稱", "年齡"]
    assert result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_hashes_files_larger_than_one_buffer(tmp_path):
    path = write(tmp_path, "i,j\n" + "".join(f"{i},{i % 7}\n" for i in range(50_000)))

    result = describe_csv(path)

    assert result["row_count"] == 50_000
    assert result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_refuses_missing_file(tmp_path):
    with pytest.raises(DescribeError, match="no file"):
        describe_csv(tmp_path / "absent.csv")


@pytest.mark.parametrize("text", ["", "\n", " , \n"])
def test_refuses_file_without_header(tmp_path, text):
    with pytest.raises(DescribeError, match="empty"):
        describe_csv(write(tmp_path, text))


def test_refuses_header_without_rows(tmp_path):
    with pytest.raises(DescribeError, match="no data rows"):
        describe_csv(write(tmp_path, "a,b\n"))


def test_refuses_duplicate_column_names(tmp_path):
    with pytest.raises(DescribeError, match="repeated: age"):
        describe_csv(write(tmp_path, "age,sex, age\n1,F,1\n"))


def test_refuses_unnamed_column(tmp_path):
    with pytest.raises(DescribeError, match="Column 2 has no name"):
        describe_csv(write(tmp_path, "age,,sex\n1,2,F\n"))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a,b\n1,2\n3\n", 3),
        ("a,b\n1,2\n3,4,5\n", 3),
        ('a,b\n1,"two\nlines"\n\n5,6,7\n', 5),
    ],
)
def test_refuses_row_with_other_number_of_fields(tmp_path, text, line):
    with pytest.raises(DescribeError, match=rf"Line {line} has"):
        describe_csv(write(tmp_path, text))


def test_refuses_label_that_is_not_a_column(tmp_path):
    with pytest.raises(DescribeError, match="“diagnosis” is not a column"):
        describe_csv(write(tmp_path, MIXED_CSV), label="diagnosis")


def test_refuses_text_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("name,city\nJosé,Köln\n".encode("latin-1"))

    with pytest.raises(DescribeError, match="not UTF-8"):
        describe_csv(path)


def test_refuses_path_like_site_key(tmp_path):
    with pytest.raises(DescribeError, match="plain file name"):
        describe_csv(write(tmp_path, MIXED_CSV), site_key="../other.csv")


def test_refuses_personal_data_without_legal_basis(tmp_path):
    with pytest.raises(DescribeError, match="legal basis"):
        describe_csv(write(tmp_path, MIXED_CSV), personal_data=True)


def test_describe_error_is_a_value_error():
    assert issubclass(DescribeError, ValueError)


def test_describes_breast_cancer_data(tmp_path):
    # pandas is not a dependency of the portal, so the frame is written with the csv module
    # rather than from load_breast_cancer(as_frame=True).
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    path = tmp_path / "breast_cancer.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*data.feature_names, "diagnosis"])
        for features, target in zip(data.data, data.target, strict=True):
            writer.writerow([*(float(value) for value in features), int(target)])

    result = describe_csv(path, label="diagnosis")

    assert len(result["columns"]) == 31
    assert result["row_count"] == 569
    diagnosis = result["columns"][-1]
    assert diagnosis["name"] == "diagnosis"
    assert diagnosis["categories"] == ["0", "1"]
    assert all(column["type"] == "numeric" for column in result["columns"])
    assert result["columns"][0]["name"] == "mean radius"
    assert result["columns"][0]["categories"] is None
    assert description_clean(result)["row_count"] == 569


# --- the describe_dataset command ---------------------------------------------------------------


def test_command_prints_the_description_as_json(tmp_path):
    path = write(tmp_path, MIXED_CSV)
    out = StringIO()

    call_command(
        "describe_dataset",
        str(path),
        "--label",
        "outcome",
        "--name",
        "Cohort A",
        "--site-key",
        "cohort-a.csv",
        "--description",
        "Outpatients",
        "--personal-data",
        "--legal-basis",
        "Consent",
        "--collected-from",
        "2024-01-01",
        "--collected-to",
        "2024-06-30",
        stdout=out,
    )

    assert json.loads(out.getvalue()) == describe_csv(
        path,
        label="outcome",
        name="Cohort A",
        site_key="cohort-a.csv",
        description="Outpatients",
        personal_data=True,
        legal_basis="Consent",
        collection_start=date(2024, 1, 1),
        collection_end=date(2024, 6, 30),
    )


def test_command_defaults_match_describe_csv(tmp_path):
    path = write(tmp_path, "名稱,n\n王,1\n")
    out = StringIO()

    call_command("describe_dataset", str(path), stdout=out)

    assert "王" in out.getvalue()  # ensure_ascii=False
    assert json.loads(out.getvalue()) == describe_csv(path)


def test_command_reports_describe_errors(tmp_path):
    with pytest.raises(CommandError, match="“diagnosis” is not a column"):
        call_command("describe_dataset", str(write(tmp_path, MIXED_CSV)), "--label", "diagnosis")


def test_command_refuses_malformed_date(tmp_path):
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        call_command(
            "describe_dataset", str(write(tmp_path, MIXED_CSV)), "--collected-from", "2024-13-01"
        )


# --- feature_schema_clean ----------------------------------------------------------------------

GOOD_SCHEMA: list[dict[str, Any]] = [
    {"name": "age", "type": "numeric", "unit": "years", "min": 0, "max": 120},
    {"name": "sex", "type": "categorical", "categories": ["F", "M"], "required": False},
    {"name": "outcome", "type": "categorical", "categories": ["0", "1"]},
]


def test_feature_schema_clean_normalises_a_good_schema():
    cleaned = feature_schema_clean(GOOD_SCHEMA, label_column="outcome", task_type="binary")

    assert cleaned == [
        {
            "name": "age",
            "type": "numeric",
            "unit": "years",
            "min": 0.0,
            "max": 120.0,
            "categories": [],
            "required": True,
        },
        {
            "name": "sex",
            "type": "categorical",
            "unit": "",
            "min": None,
            "max": None,
            "categories": ["F", "M"],
            "required": False,
        },
        {
            "name": "outcome",
            "type": "categorical",
            "unit": "",
            "min": None,
            "max": None,
            "categories": ["0", "1"],
            "required": True,
        },
    ]
    assert all(isinstance(cleaned[0][key], float) for key in ("min", "max"))


def test_feature_schema_clean_accepts_multiclass_and_regression_labels():
    multiclass = [{"name": "grade", "type": "categorical", "categories": ["I", "II", "III"]}]
    regression = [{"name": "los", "type": "numeric", "min": 0}]

    assert feature_schema_clean(multiclass, label_column="grade", task_type="multiclass")
    assert feature_schema_clean(regression, label_column="los", task_type="regression")


def test_feature_schema_clean_reports_every_problem_at_once():
    bad = [
        {"name": "age", "type": "numeric", "min": 10, "max": 5, "categories": ["a"]},
        {"name": "age", "type": "numeric"},
        {"name": "", "type": "numeric"},
        {"name": "x" * 101, "type": "numeric"},
        {"name": "ward", "type": "categorical", "min": 1, "categories": []},
        {"name": "site", "type": "categorical", "categories": ["A", "A", 3]},
        {"name": "weight", "type": "text", "colour": "red", "required": "yes", "unit": 5},
        {"name": "height", "type": "numeric", "max": float("nan")},
        "not a column",
        {"name": "outcome", "type": "categorical", "categories": ["0", "1", "2"]},
    ]

    with pytest.raises(ValidationError) as excinfo:
        feature_schema_clean(bad, label_column="outcome", task_type="binary")

    found = excinfo.value.messages
    expected = [
        "Column “age”: the minimum 10 is above the maximum 5.",
        "Column “age”: a numeric column has no categories.",
        "Column “age” is declared more than once.",
        "Column “#3” has no name.",
        f"Column “{'x' * 101}”: the name must be at most 100 characters.",
        "Column “ward”: a categorical column has no minimum or maximum.",
        "Column “ward”: a categorical column needs at least one category.",
        "Column “site”: categories must be a list of non-empty texts.",
        "Column “weight”: unknown keys colour.",
        "Column “weight”: the type must be “numeric” or “categorical”.",
        "Column “weight”: the unit must be text.",
        "Column “weight”: “required” must be true or false.",
        "Column “height”: max must be a finite number or null.",
        "Column #9 must be an object.",
        "The label column “outcome” must be categorical with exactly 2 categories for binary "
        "classification.",
    ]
    assert sorted(found) == sorted(expected)


def test_feature_schema_clean_reports_repeated_categories():
    bad = [{"name": "site", "type": "categorical", "categories": ["A", "A"]}]

    with pytest.raises(ValidationError, match="“site”: categories must be unique"):
        feature_schema_clean(bad, label_column="site", task_type="binary")


@pytest.mark.parametrize(
    ("label", "task_type", "message"),
    [
        ("outcome", "multiclass", "“outcome” must be categorical with at least 3 categories"),
        ("outcome", "regression", "“outcome” must be numeric for regression"),
        ("age", "binary", "“age” must be categorical with exactly 2 categories"),
        ("sex", "binary", "“sex” must be required"),
        ("bmi", "binary", "“bmi” is not one of the schema's columns"),
        ("outcome", "ranking", "task type must be one of binary, multiclass, regression"),
    ],
)
def test_feature_schema_clean_checks_the_label_against_the_task(label, task_type, message):
    with pytest.raises(ValidationError) as excinfo:
        feature_schema_clean(GOOD_SCHEMA, label_column=label, task_type=task_type)

    assert message in messages(excinfo)


@pytest.mark.parametrize("columns", [[], None, {"name": "age"}])
def test_feature_schema_clean_refuses_no_columns(columns):
    with pytest.raises(ValidationError, match="non-empty list"):
        feature_schema_clean(columns, label_column="age", task_type="regression")


# --- description_clean -------------------------------------------------------------------------


def good_description(**changes: Any) -> dict[str, Any]:
    description: dict[str, Any] = {
        "name": "Cohort A",
        "description": "Outpatients",
        "site_key": "cohort-a.csv",
        "row_count": 4,
        "sha256": "AB" * 32,
        "label_column": "outcome",
        "columns": [
            {
                "name": "age",
                "type": "numeric",
                "missing": 1,
                "min": 34,
                "max": 51.0,
                "categories": None,
                "distinct": None,
            },
            {
                "name": "outcome",
                "type": "numeric",
                "missing": 0,
                "min": 0.0,
                "max": 1.0,
                "categories": ["0", "1"],
                "distinct": 2,
            },
        ],
        "personal_data": True,
        "legal_basis": "Consent",
        "collection_start": "2024-01-01",
        "collection_end": "2024-06-30",
    }
    description.update(changes)
    return description


def test_description_clean_normalises_a_good_description():
    cleaned = description_clean(good_description())

    assert cleaned["sha256"] == "ab" * 32
    assert cleaned["collection_start"] == date(2024, 1, 1)
    assert cleaned["collection_end"] == date(2024, 6, 30)
    assert cleaned["columns"][0]["min"] == 34.0
    assert isinstance(cleaned["columns"][0]["min"], float)
    assert list(cleaned) == list(good_description())


def test_description_clean_accepts_what_describe_csv_produces(tmp_path):
    result = describe_csv(write(tmp_path, MIXED_CSV), label="outcome")

    cleaned = description_clean(json.loads(json.dumps(result)))

    assert cleaned == {**result, "collection_start": None, "collection_end": None}


def test_description_clean_fills_optional_keys():
    minimal = {
        key: good_description()[key]
        for key in ("name", "site_key", "row_count", "sha256", "columns", "personal_data")
    }
    minimal["personal_data"] = False

    cleaned = description_clean(minimal)

    assert (cleaned["description"], cleaned["label_column"], cleaned["legal_basis"]) == (
        "",
        None,
        "",
    )
    assert (cleaned["collection_start"], cleaned["collection_end"]) == (None, None)


@pytest.mark.parametrize(
    "site_key",
    [
        "../cohort.csv",
        "data/cohort.csv",
        "/etc/passwd",
        "data\\cohort.csv",
        "C:cohort.csv",
        ".hidden.csv",
        "..",
        "cohort..csv",
        "cohort\x00.csv",
        "",
        "   ",
        None,
        7,
    ],
)
def test_description_clean_refuses_site_key_that_is_not_a_plain_name(site_key):
    with pytest.raises(ValidationError) as excinfo:
        description_clean(good_description(site_key=site_key))

    assert "site key" in messages(excinfo)


def test_description_clean_reports_every_problem_at_once():
    bad = good_description(
        name="",
        description=3,
        site_key="../x.csv",
        row_count=0,
        sha256="xyz",
        label_column="diagnosis",
        personal_data="yes",
        legal_basis=None,
        collection_start="2024-07-01",
        collection_end="2024-06-31",
        columns=[
            {"name": "age", "type": "numeric", "missing": -1, "min": "a", "max": None},
            {"name": "age", "type": "text", "missing": 0, "colour": "red"},
            {
                "name": "ward",
                "type": "categorical",
                "missing": 0,
                "min": 1,
                "categories": [str(i) for i in range(51)],
            },
            {"name": "site", "type": "categorical", "missing": 0, "categories": ["A", 1]},
            {"name": "bmi", "type": "numeric", "missing": 0, "min": 30, "max": 20},
            {"type": "numeric", "distinct": -2},
            [],
        ],
        owner="someone",
    )

    with pytest.raises(ValidationError) as excinfo:
        description_clean(bad)

    found = excinfo.value.messages
    for expected in [
        "Unknown keys in the description: owner.",
        "The name must be non-empty text",
        "The description must be text.",
        "The site key “../x.csv” must be a plain file name",
        "The row count must be a whole number of at least 1.",
        "The SHA-256 must be 64 hexadecimal digits.",
        "The label column “diagnosis” is not one of the columns.",
        "“personal_data” must be true or false.",
        "The legal basis must be text.",
        "“collection_end” must be a date as YYYY-MM-DD or null.",
        "Column “age”: “missing” must be a whole number ≥ 0.",
        "Column “age”: min must be a finite number or null.",
        "Column “age” appears more than once.",
        "Column “age”: the type must be “numeric” or “categorical”.",
        "Column “age”: unknown keys colour.",
        "Column “ward”: a categorical column has no minimum or maximum.",
        "Column “ward” lists more than 50 categories.",
        "Column “site”: categories must be a list of texts or null.",
        "Column “bmi”: the minimum is above the maximum.",
        "Column “#6” has no name.",
        "Column “#6” has no “missing”.",
        "Column “#6”: “distinct” must be a whole number ≥ 0 or null.",
        "Column #7 must be an object.",
    ]:
        assert any(message.startswith(expected) for message in found), expected
    assert len(found) == 23


def test_description_clean_requires_the_essential_keys():
    with pytest.raises(ValidationError) as excinfo:
        description_clean({"description": "no data here"})

    for key in ("name", "site_key", "row_count", "sha256", "columns", "personal_data"):
        assert f"The description has no “{key}”." in excinfo.value.messages


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"legal_basis": "  "}, "Personal data needs a legal basis"),
        (
            {"collection_start": "2024-07-01", "collection_end": "2024-06-30"},
            "starts after it ends",
        ),
        ({"collection_start": "1 May 2024"}, "“collection_start” must be a date"),
        ({"row_count": True}, "row count"),
        ({"row_count": 2**31}, "row count"),
        ({"columns": []}, "columns must be a non-empty list"),
        ({"name": "x" * 201}, "at most 200 characters"),
        ({"columns": [{"name": "age", "type": "numeric", "missing": 9}]}, "more missing values"),
        (
            {"columns": [{"name": "age", "type": "numeric", "missing": 0, "max": 10**400}]},
            "“age”: max must be a finite number",
        ),
    ],
)
def test_description_clean_refuses_inconsistent_values(changes, message):
    with pytest.raises(ValidationError) as excinfo:
        description_clean(good_description(label_column=None, **changes))

    assert message in messages(excinfo)


@pytest.mark.parametrize("data", [None, [], "{}", 3])
def test_description_clean_refuses_what_is_not_an_object(data):
    with pytest.raises(ValidationError, match="must be an object"):
        description_clean(data)


# --- description_mismatches --------------------------------------------------------------------

SCHEMA = feature_schema_clean(
    [
        {"name": "age", "type": "numeric", "min": 18, "max": 90},
        {"name": "ward", "type": "categorical", "categories": ["A", "B"]},
        {"name": "stage", "type": "categorical", "categories": ["1", "2", "3"]},
        {"name": "note", "type": "categorical", "categories": ["x"], "required": False},
        {"name": "outcome", "type": "categorical", "categories": ["0", "1"]},
    ],
    label_column="outcome",
    task_type="binary",
)


def data_column(name: str, column_type: str = "numeric", **fields: Any) -> dict[str, Any]:
    column = {
        "name": name,
        "type": column_type,
        "missing": 0,
        "min": None,
        "max": None,
        "categories": None,
        "distinct": None,
    }
    column.update(fields)
    return column


def fitting_columns() -> list[dict[str, Any]]:
    return [
        data_column("age", min=20.0, max=85.0),
        data_column("ward", "categorical", categories=["A", "B"], distinct=2),
        data_column("stage", min=1.0, max=3.0, categories=["1", "2", "3"], distinct=3),
        data_column("outcome", min=0.0, max=1.0, categories=["0", "1"], distinct=2),
        data_column("extra", "categorical"),
    ]


def mismatches(columns: list[dict[str, Any]], label_column: str | None = "outcome") -> list[str]:
    description = description_clean(
        good_description(columns=columns, label_column=label_column, row_count=100)
    )
    return description_mismatches(SCHEMA, label_column="outcome", description=description)


def replace(name: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        {**column, **fields} if column["name"] == name else column for column in fitting_columns()
    ]


def test_fitting_description_has_no_mismatches():
    # "note" is optional and absent; "extra" is not in the schema; "stage" is numeric with
    # categories, which a categorical schema column accepts.
    assert mismatches(fitting_columns()) == []


def test_mismatch_when_required_column_is_absent():
    columns = [column for column in fitting_columns() if column["name"] != "ward"]

    (message,) = mismatches(columns)

    assert "“ward”" in message
    assert "not in the dataset" in message


def test_mismatch_when_required_column_has_missing_values():
    (message,) = mismatches(replace("age", missing=7))

    assert "“age”" in message
    assert "7 missing values" in message


def test_missing_values_in_optional_column_are_no_mismatch():
    columns = [*fitting_columns(), data_column("note", "categorical", missing=5, categories=["x"])]

    assert mismatches(columns) == []


def test_mismatch_when_numeric_column_holds_text():
    (message,) = mismatches(replace("age", type="categorical", min=None, max=None))

    assert "“age”" in message
    assert "must be numeric" in message


def test_mismatch_when_categorical_column_lists_no_categories():
    (message,) = mismatches(replace("ward", categories=None, distinct=None))

    assert "“ward”" in message
    assert "must be categorical" in message


def test_mismatch_when_numeric_data_has_too_many_values_for_categorical_column():
    (message,) = mismatches(replace("stage", categories=None, distinct=30))

    assert "“stage”" in message
    assert "must be categorical" in message


def test_mismatch_lists_categories_not_allowed():
    (message,) = mismatches(replace("ward", categories=["A", "C", "D"], distinct=3))

    assert "“ward”" in message
    assert message.endswith("C, D.")


def test_mismatch_when_values_below_the_declared_minimum():
    (message,) = mismatches(replace("age", min=2.5))

    assert "“age”" in message
    assert "2.5" in message
    assert "minimum 18" in message


def test_mismatch_when_values_above_the_declared_maximum():
    (message,) = mismatches(replace("age", max=104.0))

    assert "“age”" in message
    assert "104" in message
    assert "maximum 90" in message


def test_mismatch_when_label_column_differs():
    (message,) = mismatches(fitting_columns(), label_column="ward")

    assert "“ward”" in message
    assert "“outcome”" in message


def test_dataset_without_label_column_is_no_mismatch():
    assert mismatches(fitting_columns(), label_column=None) == []


def test_every_mismatch_is_reported():
    columns = [
        data_column("age", "categorical", missing=3),
        data_column("outcome", min=0.0, max=2.0, categories=["0", "1", "2"], distinct=3),
    ]

    found = mismatches(columns)

    assert len(found) == 5  # age missing values and type, ward and stage absent, outcome "2"


@pytest.mark.parametrize(
    "counts",
    [{"0": 3, "1": 2}, {"0": 1, "2": 1}, {"0": -1}, {"0": 1.5}, ["0", "1"]],
    ids=["more than the rows", "an unlisted class", "negative", "not whole", "not a mapping"],
)
def test_a_label_class_balance_that_cannot_be_is_refused(counts):
    description = good_description()
    description["columns"][1]["counts"] = counts
    with pytest.raises(ValidationError) as refused:
        description_clean(description)
    assert "outcome" in " ".join(refused.value.messages)


def test_a_label_class_balance_is_kept():
    description = good_description()
    description["columns"][1]["counts"] = {"0": 2, "1": 2}
    assert description_clean(description)["columns"][1]["counts"] == {"0": 2, "1": 2}
