"""The model store: every global model version, content-addressed, read back checked.

A model version is the global parameters after a round (round 0: the initial model), stored
once per SHA-256 whichever run produced it. The coordinator reads the same few models again and
again (the model a round started from, for every answer it checks), so they are kept in memory
by hash; a stored model never changes, and one read from storage is checked against its hash.
"""

import datetime
from typing import Protocol

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from projects.federation import encoding
from projects.models import ModelVersion, TrainingRun

_PARAMS_CACHE: dict[str, bytes] = {}
# (run id, run's launch time, round number) -> SHA-256 of the model after that round. The
# launch time keeps a reused id (a rolled-back launch) from matching.
_MODEL_SHA: dict[tuple[int, float, int], str] = {}
_CACHE_LIMIT = 64


class RunKey(Protocol):
    pk: int
    created_at: datetime.datetime


def _model_key(run: RunKey, round_number: int) -> tuple[int, float, int]:
    return (run.pk, run.created_at.timestamp(), round_number)


def model_store(*, run: TrainingRun, round_number: int, blob: bytes, metrics: dict) -> ModelVersion:
    """Record ``blob`` as the run's model after ``round_number`` (in the caller's transaction)."""
    sha = encoding.params_sha256(blob)
    name = f"models/{sha[:2]}/{sha}.npy"
    # Content-addressed: the same parameters are one file, whichever run produced them.
    if not default_storage.exists(name):
        name = default_storage.save(name, ContentFile(blob))
    _remember(sha, blob)
    # Only once committed: a rolled-back round must not leave its model in the map.
    key = _model_key(run, round_number)
    transaction.on_commit(lambda: _MODEL_SHA.__setitem__(key, sha))
    return ModelVersion.objects.create(
        run=run,
        round_number=round_number,
        file=name,
        sha256=sha,
        size=len(blob),
        metrics=metrics,
    )


def _remember(sha: str, blob: bytes) -> None:
    if len(_PARAMS_CACHE) >= _CACHE_LIMIT:
        _PARAMS_CACHE.clear()
    _PARAMS_CACHE[sha] = blob


def model_bytes(model: ModelVersion) -> bytes:
    """The stored parameters of a model version, checked against its SHA-256."""
    blob = _PARAMS_CACHE.get(model.sha256)
    if blob is None:
        with default_storage.open(model.file.name, "rb") as handle:
            blob = handle.read()
        if encoding.params_sha256(blob) != model.sha256:
            raise RuntimeError(f"Stored model {model.file.name} does not match its SHA-256.")
        _remember(model.sha256, blob)
    return blob


def model_params(model: ModelVersion) -> list[np.ndarray]:
    return encoding.decode_params(model_bytes(model))


def round_start_bytes(run: RunKey, number: int) -> bytes:
    """The global model round ``number`` started from (the model after round ``number - 1``).

    ``run`` needs only ``pk`` (the run's id) and ``created_at``.
    """
    key = _model_key(run, number - 1)
    sha = _MODEL_SHA.get(key)
    if sha is not None and sha in _PARAMS_CACHE:
        return _PARAMS_CACHE[sha]
    model = ModelVersion.objects.get(run_id=run.pk, round_number=number - 1)
    blob = model_bytes(model)
    if len(_MODEL_SHA) > 1024:
        _MODEL_SHA.clear()
    _MODEL_SHA[key] = model.sha256
    return blob


def blob_store(blob: bytes, folder: str = "updates") -> str:
    """Keep ``blob`` (a site's update, a coalition's model) by its SHA-256; the SHA-256."""
    sha = encoding.params_sha256(blob)
    name = f"{folder}/{sha[:2]}/{sha}.npy"
    if not default_storage.exists(name):
        default_storage.save(name, ContentFile(blob))
    return sha


def blob_read(sha: str, folder: str = "updates") -> bytes:
    """A kept blob, checked against its SHA-256."""
    with default_storage.open(f"{folder}/{sha[:2]}/{sha}.npy", "rb") as handle:
        blob = handle.read()
    if encoding.params_sha256(blob) != sha:
        raise RuntimeError(f"Stored {folder} blob {sha} does not match its SHA-256.")
    return blob
