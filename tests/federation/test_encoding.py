"""Parameters as bytes: round trips, deterministic bytes, and refusals of anything unsafe."""

import hashlib
import io

import numpy as np
import pytest

from projects.federation.encoding import (
    EncodingError,
    decode_params,
    encode_params,
    from_text,
    params_sha256,
    to_text,
)


def sample():
    return [
        np.arange(6, dtype=np.float64).reshape(3, 2) / 7,
        np.array([-1.5]),
        np.zeros((0, 4)),
        np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        np.array(3.25),
        np.array([1, 2, 3], dtype=np.int64),
    ]


def test_round_trip_keeps_values_shapes_and_dtypes():
    params = sample()
    decoded = decode_params(encode_params(params))
    assert len(decoded) == len(params)
    for a, b in zip(params, decoded, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
        assert b.flags.writeable


def test_encoding_is_deterministic():
    assert encode_params(sample()) == encode_params(sample())
    blob = encode_params(sample())
    assert params_sha256(blob) == hashlib.sha256(blob).hexdigest()
    assert encode_params(decode_params(blob)) == blob
    assert encode_params([]) == b"" and decode_params(b"") == []


def test_text_round_trip():
    blob = encode_params(sample())
    text = to_text(blob)
    assert text.isascii()
    assert from_text(text) == blob
    with pytest.raises(EncodingError) as caught:
        from_text("not base64!")
    assert caught.value.code == "malformed"


def test_refuses_pickled_object_arrays():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"run": "os.system"}], dtype=object), allow_pickle=True)
    blob = encode_params([np.ones(2)]) + buffer.getvalue()
    with pytest.raises(EncodingError) as caught:
        decode_params(blob)
    assert caught.value.code == "malformed"
    assert caught.value.detail == {"array": 1, "reason": "dtype", "dtype": "object"}


@pytest.mark.parametrize(
    "array", [np.array(["a", "b"]), np.zeros(2, dtype=[("x", "<f8"), ("y", "<f8")])]
)
def test_refuses_non_numeric_dtypes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    with pytest.raises(EncodingError) as caught:
        decode_params(buffer.getvalue())
    assert caught.value.code == "malformed"
    with pytest.raises(EncodingError):
        encode_params([array])


def test_refuses_truncated_bytes():
    blob = encode_params([np.ones((4, 4)), np.ones(3)])
    for cut in (len(blob) - 1, len(blob) - 30, 5, 20):
        with pytest.raises(EncodingError) as caught:
            decode_params(blob[:cut])
        assert caught.value.code == "malformed"
    with pytest.raises(EncodingError):
        decode_params(b"definitely not numpy")


def test_refuses_too_many_bytes_or_arrays():
    blob = encode_params([np.ones(100)])
    assert len(decode_params(blob, max_bytes=len(blob))) == 1
    with pytest.raises(EncodingError) as caught:
        decode_params(blob, max_bytes=len(blob) - 1)
    assert caught.value.code == "too_large"
    assert caught.value.detail == {"size": len(blob), "limit": len(blob) - 1}
    with pytest.raises(EncodingError) as caught:
        decode_params(encode_params([np.ones(1)] * 3), max_arrays=2)
    assert caught.value.code == "too_large"
