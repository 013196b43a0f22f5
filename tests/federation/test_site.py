"""A site's file: reading, labels, scaling, splitting, and the refusals of a site worker."""

import json

import numpy as np
import pytest

from projects.federation.data import (
    DataError,
    encode_labels,
    file_sha256,
    load_csv,
    scale,
    split,
)
from projects.federation.encoding import encode_params
from projects.federation.loop import initial_params
from projects.federation.protocol import LearningSpec
from projects.federation.site import (
    RoundTask,
    SiteRefusal,
    evaluate_on_file,
    site_rng,
    train_on_site,
)

HEADER = "id,age,dose,outcome,note"


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def site_file(tmp_path):
    rng = np.random.default_rng(0)
    lines = [HEADER]
    for i in range(40):
        age, dose = rng.uniform(20, 80), rng.uniform(0, 10)
        lines.append(f"{i},{age:.3f},{dose:.3f},{'yes' if age + 5 * dose > 75 else 'no'},x")
    return write(tmp_path / "site.csv", lines)


SPEC = {
    "features": ("dose", "age"),
    "label": "outcome",
    "classes": ("no", "yes"),
    "feature_ranges": ((0.0, 10.0), (0.0, 100.0)),
    "task": "classification",
}


def task(**changes):
    spec = {key: changes.pop(key) for key in list(changes) if key in SPEC}
    values = {
        "family": "logistic_regression",
        "family_options": {},
        "spec": LearningSpec(**{**SPEC, **spec}),
        "epochs": 3,
        "batch_size": 8,
        "learning_rate": 0.5,
        "proximal_mu": 0.0,
        "seed": 11,
        "round_number": 1,
        "site": "taipei-north-hospital",
    }
    return RoundTask(**{**values, **changes})


def start(t):
    return initial_params(t.family, t.family_options, len(t.features), len(t.classes), t.seed)


def test_load_csv_reads_the_features_in_the_given_order(site_file):
    X, y = load_csv(site_file, features=["dose", "age"], label="outcome")
    assert X.shape == (40, 2) and X.dtype == np.float64
    first = site_file.read_text().splitlines()[1].split(",")
    assert X[0].tolist() == [float(first[2]), float(first[1])]
    assert set(y) == {"yes", "no"}
    X_only, none = load_csv(site_file, features=["age"], label=None)
    assert X_only.shape == (40, 1) and none is None


def test_load_csv_errors(tmp_path, site_file):
    with pytest.raises(DataError) as caught:
        load_csv(site_file, features=["age", "weight"], label="diagnosis")
    assert caught.value.code == "missing_column"
    assert caught.value.detail == {"columns": ["weight", "diagnosis"]}
    bad = write(tmp_path / "bad.csv", [HEADER, "1,42,3,yes,x", "2,forty,3,no,x"])
    with pytest.raises(DataError) as caught:
        load_csv(bad, features=["age"], label="outcome")
    assert caught.value.code == "not_numeric"
    assert caught.value.detail == {"column": "age", "line": 3, "value": "forty"}
    nan = write(tmp_path / "nan.csv", [HEADER, "1,nan,3,yes,x"])
    with pytest.raises(DataError) as caught:
        load_csv(nan, features=["age"], label=None)
    assert caught.value.code == "not_numeric"
    for lines in ([], [HEADER], [HEADER, ""]):
        empty = write(tmp_path / "empty.csv", lines)
        with pytest.raises(DataError) as caught:
            load_csv(empty, features=["age"], label=None)
        assert caught.value.code == "empty"


def test_encode_labels():
    np.testing.assert_array_equal(encode_labels(["b", "a", " b "], ["a", "b"]), [1, 0, 1])
    with pytest.raises(DataError) as caught:
        encode_labels(["a", "c"], ["a", "b"])
    assert caught.value.code == "unknown_label"
    assert caught.value.detail["label"] == "c" and caught.value.detail["row"] == 2
    values = encode_labels(["1.5", "-2"], None)
    assert values.dtype == np.float64 and values.tolist() == [1.5, -2.0]


def test_scale_uses_the_agreed_ranges():
    X = np.array([[5.0, 10.0, 3.0], [15.0, 20.0, 3.0]])
    scaled = scale(X, [(5.0, 15.0), (0.0, 40.0), (3.0, 3.0)])
    np.testing.assert_array_equal(scaled, [[0.0, 0.25, 0.0], [1.0, 0.5, 0.0]])
    with pytest.raises(ValueError):
        scale(X, [(0.0, 1.0)])


def test_split_is_a_seeded_permutation_with_a_training_row():
    train, validation = split(10, 0.2, np.random.default_rng(1))
    assert len(train) == 8 and len(validation) == 2
    assert sorted([*train, *validation]) == list(range(10))
    again = split(10, 0.2, np.random.default_rng(1))
    assert np.array_equal(train, again[0]) and np.array_equal(validation, again[1])
    train, validation = split(1, 0.9, np.random.default_rng(1))
    assert len(train) == 1 and len(validation) == 0


def test_site_rng_is_stable_and_separates_purposes():
    draw = lambda *args: site_rng(*args).integers(0, 2**62, size=3).tolist()  # noqa: E731
    assert draw(1, "a", "train", 2) == draw(1, "a", "train", 2)
    assert draw(1, "a", "train", 2) != draw(1, "a", "train", 3)
    assert draw(1, "a", "train", 2) != draw(1, "b", "train", 2)
    assert draw(1, "a", "train", 2) != draw(1, "a", "split", 2)
    assert draw(1, "a", "train", 2) != draw(2, "a", "train", 2)


def test_round_task_survives_json():
    t = task(family_options={"l2": 0.1})
    assert RoundTask.from_json(json.loads(json.dumps(t.to_json()))) == t


def test_train_on_site(site_file):
    t = task()
    result = train_on_site(t, start(t), data_path=site_file, expected_sha256=file_sha256(site_file))
    assert result.sample_count == 32  # 40 rows, 20 % kept for validation
    assert result.metrics["validation_rows"] == 8.0
    assert {"loss", "accuracy", "f1"} <= set(result.metrics)
    assert set(result.timings) == {"load", "train", "evaluate"}
    assert all(p.dtype == np.float64 for p in result.params)


def test_a_round_is_reproducible_to_the_bit(site_file):
    sha = file_sha256(site_file)
    blobs = [
        encode_params(train_on_site(t, start(t), data_path=site_file, expected_sha256=sha).params)
        for t in (task(), task(), task(seed=12), task(round_number=2))
    ]
    assert blobs[0] == blobs[1]
    assert blobs[0] != blobs[2]
    assert blobs[0] != blobs[3]  # each round shuffles differently


def test_refuses_a_file_that_changed(site_file):
    with pytest.raises(SiteRefusal) as caught:
        train_on_site(task(), start(task()), data_path=site_file, expected_sha256="0" * 64)
    assert caught.value.code == "hash_mismatch"
    assert caught.value.detail == {"expected": "0" * 64, "actual": file_sha256(site_file)}


def test_refuses_a_missing_file(tmp_path):
    with pytest.raises(SiteRefusal) as caught:
        train_on_site(
            task(), start(task()), data_path=tmp_path / "gone.csv", expected_sha256="0" * 64
        )
    assert caught.value.code == "missing_file"
    assert caught.value.detail == {"file": "gone.csv"}


def test_refuses_a_missing_column(site_file):
    t = task(features=["dose", "weight"])
    with pytest.raises(SiteRefusal) as caught:
        train_on_site(t, start(t), data_path=site_file, expected_sha256=file_sha256(site_file))
    assert caught.value.code == "missing_column"
    assert caught.value.detail == {"columns": ["weight"]}


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"classes": ["no", "maybe"]}, "unknown_label"),
        ({"family": "mlp", "family_options": {"hidden_layers": [0]}}, "invalid_task"),
        ({"classes": None}, "invalid_task"),
        (
            {
                "learning_rate": 1e6,
                "epochs": 20,
                "family": "linear_regression",
                "label": "id",
                "classes": None,
            },
            "diverged",
        ),
    ],
)
def test_other_refusals(site_file, changes, code):
    t = task(**changes)
    params = [np.zeros((2, 1)), np.zeros(1)]
    with pytest.raises(SiteRefusal) as caught:
        train_on_site(t, params, data_path=site_file, expected_sha256=file_sha256(site_file))
    assert caught.value.code == code


def test_refuses_global_parameters_of_the_wrong_shape(site_file):
    with pytest.raises(SiteRefusal) as caught:
        train_on_site(
            task(),
            [np.zeros((3, 1)), np.zeros(1)],
            data_path=site_file,
            expected_sha256=file_sha256(site_file),
        )
    assert caught.value.code == "invalid_task"


def test_evaluate_on_file(site_file):
    t = task()
    metrics = evaluate_on_file(
        t.family,
        t.family_options,
        start(t),
        path=site_file,
        features=t.features,
        label=t.label,
        classes=t.classes,
        feature_ranges=t.feature_ranges,
    )
    assert metrics["rows"] == 40.0
    assert metrics["loss"] == pytest.approx(np.log(2))  # the zero model says 50 % everywhere


def test_a_site_keeps_what_it_verified_until_the_file_changes(site_file):
    from projects.federation.site import VerifiedData

    cache = VerifiedData()
    t = task()
    sha = file_sha256(site_file)
    first = cache.load(site_file, sha, t)
    second = cache.load(site_file, sha, t)
    assert cache.hits == 1 and second[0] is first[0]
    # Another spec of the same file is read again, not confused with the first.
    other = task(features=["age"], feature_ranges=[(0.0, 100.0)])
    assert cache.load(site_file, sha, other)[0].shape == (40, 1)
    assert cache.hits == 1
    # Any change to the file is hashed again, and refused when it no longer matches.
    site_file.write_text(site_file.read_text().replace("yes", "no", 1))
    with pytest.raises(SiteRefusal) as refused:
        cache.load(site_file, sha, t)
    assert refused.value.code == "hash_mismatch"
    assert cache.hits == 1


def test_what_a_site_keeps_is_bounded(site_file, tmp_path):
    from projects.federation.site import VerifiedData

    cache = VerifiedData(max_entries=2)
    for i in range(4):
        copy = tmp_path / f"copy{i}.csv"
        copy.write_bytes(site_file.read_bytes())
        cache.load(copy, file_sha256(copy), task())
    assert len(cache._entries) == 2
    small = VerifiedData(max_bytes=10)  # smaller than any file's arrays: nothing is kept
    small.load(site_file, file_sha256(site_file), task())
    assert not small._entries
