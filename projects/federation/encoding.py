"""Model parameters as bytes: concatenated ``.npy`` records, never pickles.

An update arrives from a member's machine, so it is data to check, not code to run: decoding
reads each record's header with numpy's own parser (a literal, not an expression), accepts only
plain numeric dtypes, refuses anything that would need ``allow_pickle`` and checks every length
before touching the bytes. Encoding is deterministic (same arrays, same bytes), which makes
``params_sha256`` a fingerprint of a model version.
"""

import base64
import binascii
import hashlib
import io
from typing import Any

import numpy as np

# bool, signed and unsigned integers, floats: what a model's parameters can be.
NUMERIC_KINDS = frozenset("biuf")


class EncodingError(ValueError):
    """Bytes that are not an acceptable list of arrays.

    ``code`` is ``"too_large"`` or ``"malformed"``; ``detail`` holds plain values for a message.
    """

    def __init__(self, code: str, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail or {}


def encode_params(params: list[np.ndarray]) -> bytes:
    """The arrays as one ``.npy`` record after another (C order, their own dtype)."""
    buffer = io.BytesIO()
    for array in params:
        array = np.asarray(array, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        if array.dtype.hasobject or array.dtype.kind not in NUMERIC_KINDS:
            raise EncodingError(
                "malformed",
                f"Cannot encode an array of dtype {array.dtype}.",
                {"dtype": str(array.dtype)},
            )
        np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def decode_params(
    blob: bytes, *, max_bytes: int | None = None, max_arrays: int = 64
) -> list[np.ndarray]:
    """The arrays in ``blob``, each a fresh writable array; EncodingError when unacceptable."""
    if max_bytes is not None and len(blob) > max_bytes:
        raise EncodingError(
            "too_large",
            f"The parameters take {len(blob)} bytes; at most {max_bytes} are accepted.",
            {"size": len(blob), "limit": max_bytes},
        )
    stream = io.BytesIO(blob)
    arrays: list[np.ndarray] = []
    while stream.tell() < len(blob):
        if len(arrays) >= max_arrays:
            raise EncodingError(
                "too_large",
                f"The parameters hold more than {max_arrays} arrays.",
                {"arrays": len(arrays) + 1, "limit": max_arrays},
            )
        index = len(arrays)
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, EOFError, SyntaxError, TypeError) as exc:
            raise EncodingError(
                "malformed",
                f"Array {index} has an unreadable header: {exc}",
                {"array": index, "reason": "header"},
            ) from exc
        if dtype.hasobject or dtype.kind not in NUMERIC_KINDS or dtype.fields is not None:
            raise EncodingError(
                "malformed",
                f"Array {index} has dtype {dtype}; only numbers are accepted.",
                {"array": index, "reason": "dtype", "dtype": str(dtype)},
            )
        if any(int(size) < 0 for size in shape):
            raise EncodingError(
                "malformed",
                f"Array {index} announces a negative size.",
                {"array": index, "reason": "header"},
            )
        count = 1
        for size in shape:
            count *= int(size)
        nbytes = count * dtype.itemsize
        offset = stream.tell()
        if nbytes > len(blob) - offset:
            raise EncodingError(
                "malformed",
                f"Array {index} is truncated: {nbytes} bytes announced, {len(blob) - offset} left.",
                {"array": index, "reason": "truncated"},
            )
        flat = np.frombuffer(blob, dtype=dtype, count=count, offset=offset)
        arrays.append(flat.reshape(shape, order="F" if fortran_order else "C").copy())
        stream.seek(offset + nbytes)
    return arrays


def to_text(blob: bytes) -> str:
    """Base64 (ASCII), for JSON messages."""
    return base64.b64encode(blob).decode("ascii")


def from_text(text: str) -> bytes:
    """The bytes ``to_text`` encoded; EncodingError("malformed") for anything else."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError) as exc:
        raise EncodingError(
            "malformed", "The parameters are not valid base64 text.", {"reason": "base64"}
        ) from exc


def params_sha256(blob: bytes) -> str:
    """Hex SHA-256 of the encoded parameters: the fingerprint of a model version."""
    return hashlib.sha256(blob).hexdigest()
