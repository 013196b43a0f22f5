"""Every reason a site's update is rejected."""

import numpy as np
import pytest

from projects.federation.encoding import encode_params
from projects.federation.validation import UpdateRejected, decode_update, validate_update

REFERENCE = [np.zeros((2, 2)), np.zeros(2)]


def rejected(update, max_norm=10.0):
    with pytest.raises(UpdateRejected) as caught:
        validate_update(update, REFERENCE, max_norm=max_norm)
    return caught.value.rejection


def test_accepts_an_update_within_the_bound():
    validate_update([np.ones((2, 2)), np.ones(2)], REFERENCE, max_norm=np.sqrt(6))


def test_count():
    rejection = rejected([np.zeros((2, 2))])
    assert rejection.code == "count"
    assert rejection.detail == {"count": 1, "expected": 2}
    assert "1 arrays" in rejection.message


def test_shape():
    rejection = rejected([np.zeros((2, 3)), np.zeros(2)])
    assert rejection.code == "shape"
    assert rejection.detail == {"array": 0, "shape": [2, 3], "expected": [2, 2]}


def test_dtype():
    rejection = rejected([np.zeros((2, 2)), np.zeros(2, dtype=np.float32)])
    assert rejection.code == "dtype"
    assert rejection.detail == {"array": 1, "dtype": "float32", "expected": "float64"}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_not_finite(bad):
    rejection = rejected([np.zeros((2, 2)), np.array([0.0, bad])])
    assert rejection.code == "not_finite"
    assert rejection.detail == {"array": 1}


def test_norm():
    # Differences 3 and 4 in two different arrays: the L2 norm over all arrays is 5.
    rejection = rejected([np.array([[3.0, 0.0], [0.0, 0.0]]), np.array([0.0, 4.0])], max_norm=4.9)
    assert rejection.code == "norm"
    assert rejection.detail == {"norm": 5.0, "bound": 4.9}


def test_decode_update_maps_encoding_errors():
    blob = encode_params([np.ones((2, 2)), np.ones(2)])
    assert len(decode_update(blob, REFERENCE, max_norm=10.0)) == 2
    with pytest.raises(UpdateRejected) as caught:
        decode_update(blob, REFERENCE, max_norm=10.0, max_bytes=10)
    assert caught.value.rejection.code == "too_large"
    with pytest.raises(UpdateRejected) as caught:
        decode_update(blob[:-1], REFERENCE, max_norm=10.0)
    assert caught.value.rejection.code == "malformed"
    with pytest.raises(UpdateRejected) as caught:
        decode_update(blob, REFERENCE, max_norm=1.0)
    assert caught.value.rejection.code == "norm"
