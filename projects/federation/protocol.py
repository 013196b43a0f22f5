"""The contract of a round between the portal and a site: one typed message each way.

Everything that crosses between the coordinator and a site worker is one of these frozen
dataclasses, built once by the sender and parsed once, strictly, by the receiver:

- ``LearningSpec``: how every site reads its data (features, label, classes, scaling ranges);
- ``RoundTask``: what a site trains in one round (family, hyperparameters, seed, round, site);
- ``SiteMessage``: the coordinator's signed instruction to one site for one round;
- ``SiteReply``: the site's signed answer (the update's SHA-256, sample count, metrics, or a
  refusal with a code);
- ``Heartbeat``: a site worker saying, signed, that it is alive and which version it runs.

Each has one canonical JSON form (``canonical()``: sorted keys, no spaces, ASCII, no NaN), and
those bytes are what gets signed (Ed25519, ``projects.federation.signing``). A ``domain`` field
inside the signed bytes keeps a signature on one kind of message from being passed off as
another. Bulky bytes (the global parameters, a site's update) travel beside the signed body in
an ``Envelope`` and are bound to it by their SHA-256 inside the body.

No Django here: a site worker imports this module and nothing of the coordinator.
"""

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from projects.federation import signing

PROTOCOL = 1
# The site worker's software version, reported in its heartbeats.
WORKER_VERSION = "1.1"

TASK_DOMAIN = "fl-portal/site-task/v1"
REPLY_DOMAIN = "fl-portal/site-reply/v1"
HEARTBEAT_DOMAIN = "fl-portal/heartbeat/v1"

# What a site is asked to do: train on its training rows ("train"), score a model on its
# validation rows ("evaluate", a contributor) or on every row of its held-out file ("validate",
# a validator), or score many candidate models there at once ("score": contribution
# measurement).
KINDS = ("train", "evaluate", "validate", "score")
MAX_CANDIDATES = 4096
TASKS = ("classification", "regression")
# A sample count is stored in a 32-bit column: a claim at or above this cannot be a row count.
MAX_COUNT = 2**31 - 1
MAX_TEXT = 200
MAX_ITEMS = 10_000  # features, classes or ranges of one problem
MAX_METRICS = 32
# The share of a contributor's rows it keeps aside to score models on (its seeded split).
VALIDATION_SHARE = 0.2


class ProtocolError(ValueError):
    """A message that does not fit the contract, or a refusal to act on one.

    ``code`` is a short identifier the portal translates; ``detail`` holds plain values that
    describe the problem and never a value read from a site's data file.
    """

    def __init__(self, code: str, detail: Mapping[str, Any] | None = None) -> None:
        self.code = code
        self.detail = dict(detail or {})
        super().__init__(f"{code}: {self.detail}" if self.detail else code)


def canonical(data: Mapping[str, Any]) -> bytes:
    """The signed bytes of a JSON object: sorted keys, no spaces, ASCII, finite numbers only."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- Strict readers: every field of a received message goes through one of these ------------


def _get(data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise ProtocolError("malformed", {"field": key, "problem": "missing"})
    return data[key]


def _int(data: Mapping[str, Any], key: str, low: int = 0, high: int = 2**63 - 1) -> int:
    value = _get(data, key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError("malformed", {"field": key, "problem": "not a whole number in range"})
    return value


def _float(data: Mapping[str, Any], key: str) -> float:
    value = _get(data, key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ProtocolError("malformed", {"field": key, "problem": "not a finite number"})
    return float(value)


def _text(data: Mapping[str, Any], key: str, limit: int = MAX_TEXT) -> str:
    value = _get(data, key)
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise ProtocolError("malformed", {"field": key, "problem": f"not text of at most {limit}"})
    return value


def _hex64(data: Mapping[str, Any], key: str, *, empty: bool = False) -> str:
    value = _text(data, key, 64)
    if (value or not empty) and (
        len(value) != 64 or any(c not in "0123456789abcdef" for c in value)
    ):
        raise ProtocolError("malformed", {"field": key, "problem": "not a SHA-256 in hex"})
    return value


def _object(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = _get(data, key)
    if not isinstance(value, dict):
        raise ProtocolError("malformed", {"field": key, "problem": "not an object"})
    return value


def _texts(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise ProtocolError("malformed", {"field": key, "problem": "not a list"})
    return tuple(_text({key: v}, key) for v in value)


def _numbers(data: Mapping[str, Any], key: str) -> dict[str, float]:
    """A flat object of finite numbers (metrics, timings)."""
    value = _object(data, key)
    if len(value) > MAX_METRICS:
        raise ProtocolError("malformed", {"field": key, "problem": "too many entries"})
    return {_text({key: k}, key, 40): _float(value, k) for k in value}


def _exact_keys(data: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    extra = set(data) - allowed
    if extra:
        raise ProtocolError("malformed", {"field": what, "problem": "unexpected fields"})


# --- What a problem asks every site to read -------------------------------------------------


@dataclass(frozen=True)
class DpSpec:
    """Record-level differential privacy for a run's local training (DP-SGD at every site).

    ``noise_multiplier`` z and ``clip_norm`` C drive the mechanism; ``epsilon`` is the run's
    budget per dataset it was calibrated for, ``delta`` the datasets' delta, and ``ceiling`` the
    agreement's epsilon ceiling per dataset across all runs, which a site holds its own ledger
    to (None: the agreement sets none).
    """

    noise_multiplier: float
    clip_norm: float
    epsilon: float
    delta: float
    ceiling: float | None = None

    def __post_init__(self) -> None:
        for name in ("noise_multiplier", "clip_norm", "epsilon", "delta"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ProtocolError("malformed", {"field": f"dp.{name}", "problem": "not positive"})
        if self.delta >= 1:
            raise ProtocolError("malformed", {"field": "dp.delta", "problem": "not below 1"})

    def to_json(self) -> dict[str, Any]:
        return {
            "noise_multiplier": float(self.noise_multiplier),
            "clip_norm": float(self.clip_norm),
            "epsilon": float(self.epsilon),
            "delta": float(self.delta),
            "ceiling": None if self.ceiling is None else float(self.ceiling),
        }

    @classmethod
    def from_json(cls, data: Any) -> "DpSpec":
        if not isinstance(data, dict):
            raise ProtocolError("malformed", {"field": "dp", "problem": "not an object"})
        _exact_keys(data, frozenset(cls.__dataclass_fields__), "dp")
        ceiling = _get(data, "ceiling")
        return cls(
            noise_multiplier=_float(data, "noise_multiplier"),
            clip_norm=_float(data, "clip_norm"),
            epsilon=_float(data, "epsilon"),
            delta=_float(data, "delta"),
            ceiling=None if ceiling is None else _float(data, "ceiling"),
        )


@dataclass(frozen=True)
class LearningSpec:
    """Features, label, classes and scaling ranges: how every site reads its file alike."""

    features: tuple[str, ...]
    label: str
    classes: tuple[str, ...] | None  # None for a regression
    feature_ranges: tuple[tuple[float, float], ...]
    task: str  # "classification" or "regression"
    metric: str = ""
    dp: DpSpec | None = None  # differential privacy at the sites; None: none

    def __post_init__(self) -> None:
        # Tuples whatever the caller passed: a spec is a value (hashable, comparable).
        object.__setattr__(self, "features", tuple(self.features))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(
            self, "feature_ranges", tuple((float(lo), float(hi)) for lo, hi in self.feature_ranges)
        )
        if self.task not in TASKS:
            raise ProtocolError("malformed", {"field": "task", "problem": "unknown task"})
        if len(self.feature_ranges) != len(self.features):
            raise ProtocolError(
                "malformed", {"field": "feature_ranges", "problem": "one range per feature"}
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "label": self.label,
            "classes": None if self.classes is None else list(self.classes),
            "feature_ranges": [[float(lo), float(hi)] for lo, hi in self.feature_ranges],
            "task": self.task,
            "metric": self.metric,
            # Only when set: a run without it keeps the bytes it always had.
            **({"dp": self.dp.to_json()} if self.dp is not None else {}),
        }

    @classmethod
    def from_json(cls, data: Any) -> "LearningSpec":
        if not isinstance(data, dict):
            raise ProtocolError("malformed", {"field": "spec", "problem": "not an object"})
        classes = _get(data, "classes")
        ranges = _get(data, "feature_ranges")
        if not isinstance(ranges, list) or len(ranges) > MAX_ITEMS:
            raise ProtocolError("malformed", {"field": "feature_ranges", "problem": "not a list"})
        pairs = []
        for pair in ranges:
            if not isinstance(pair, list) or len(pair) != 2:
                raise ProtocolError(
                    "malformed", {"field": "feature_ranges", "problem": "not [low, high] pairs"}
                )
            pairs.append((_float({"r": pair[0]}, "r"), _float({"r": pair[1]}, "r")))
        return cls(
            features=_texts(_get(data, "features"), "features"),
            label=_text(data, "label"),
            classes=None if classes is None else _texts(classes, "classes"),
            feature_ranges=tuple(pairs),
            task=_text(data, "task"),
            metric=_text(data, "metric") if "metric" in data else "",
            dp=DpSpec.from_json(data["dp"]) if data.get("dp") is not None else None,
        )


# --- One round's work at one site -----------------------------------------------------------


@dataclass(frozen=True)
class RoundTask:
    """What a site trains in one round: the engine's whole input besides the data and model."""

    family: str
    family_options: Mapping[str, Any]
    spec: LearningSpec
    epochs: int
    batch_size: int
    learning_rate: float
    proximal_mu: float
    seed: int
    round_number: int
    site: str  # the institution's slug
    validation_share: float = VALIDATION_SHARE

    @property
    def features(self) -> tuple[str, ...]:
        return self.spec.features

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def classes(self) -> tuple[str, ...] | None:
        return self.spec.classes

    @property
    def feature_ranges(self) -> tuple[tuple[float, float], ...]:
        return self.spec.feature_ranges

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "family_options": dict(self.family_options),
            "spec": self.spec.to_json(),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": float(self.learning_rate),
            "proximal_mu": float(self.proximal_mu),
            "seed": self.seed,
            "round_number": self.round_number,
            "site": self.site,
            "validation_share": float(self.validation_share),
        }

    @classmethod
    def from_json(cls, data: Any) -> "RoundTask":
        if not isinstance(data, dict):
            raise ProtocolError("malformed", {"field": "task", "problem": "not an object"})
        options = _object(data, "family_options")
        # Options are checked by the engine's family; here only their size is bounded.
        if len(canonical(options)) > 4096:
            raise ProtocolError("malformed", {"field": "family_options", "problem": "too large"})
        return cls(
            family=_text(data, "family", 40),
            family_options=dict(options),
            spec=LearningSpec.from_json(_get(data, "spec")),
            epochs=_int(data, "epochs", 1, 10_000),
            batch_size=_int(data, "batch_size", 1, MAX_COUNT),
            learning_rate=_float(data, "learning_rate"),
            proximal_mu=_float(data, "proximal_mu"),
            seed=_int(data, "seed", 0, MAX_COUNT),
            round_number=_int(data, "round_number", 0, MAX_COUNT),
            site=_text(data, "site", 100),
            validation_share=_float(data, "validation_share"),
        )


@dataclass(frozen=True)
class DatasetRef:
    """The registered file a site trains on: its name in the site's folder, hash and rows."""

    site_key: str
    sha256: str
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {"site_key": self.site_key, "sha256": self.sha256, "rows": self.rows}

    @classmethod
    def from_json(cls, data: Any) -> "DatasetRef":
        if not isinstance(data, dict):
            raise ProtocolError("malformed", {"field": "dataset", "problem": "not an object"})
        return cls(
            site_key=_text(data, "site_key"),
            sha256=_hex64(data, "sha256"),
            rows=_int(data, "rows", 1, MAX_COUNT),
        )


@dataclass(frozen=True)
class SiteMessage:
    """The coordinator's instruction to one site for one round; signed with the portal's key.

    ``ticket`` names the site's row for the round and ``nonce`` is drawn fresh for it, so an
    answer can only ever count for the one dispatch it answers. ``deadline`` (Unix seconds) lets
    a site refuse an instruction that can no longer count. ``params_sha256`` binds the global
    parameters that travel beside the body.
    """

    domain: ClassVar[str] = TASK_DOMAIN

    kind: str
    run: int
    launched: str  # the run's launch time (ISO 8601): a reused run id cannot match
    round: int
    site: str
    ticket: int
    nonce: str
    deadline: int
    dataset: DatasetRef
    task: RoundTask
    params_sha256: str
    max_update_bytes: int
    # "score": the size in bytes of each candidate model, one after the other in the attachment.
    candidates: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "protocol": PROTOCOL,
            "candidates": list(self.candidates),
            "kind": self.kind,
            "run": self.run,
            "launched": self.launched,
            "round": self.round,
            "site": self.site,
            "ticket": self.ticket,
            "nonce": self.nonce,
            "deadline": self.deadline,
            "dataset": self.dataset.to_json(),
            "task": self.task.to_json(),
            "params_sha256": self.params_sha256,
            "max_update_bytes": self.max_update_bytes,
        }

    def canonical(self) -> bytes:
        return canonical(self.to_json())

    @classmethod
    def from_json(cls, data: Any) -> "SiteMessage":
        body = _body(data, cls.domain)
        return cls(
            **_dispatch_fields(body),
            deadline=_int(body, "deadline", 0),
            dataset=DatasetRef.from_json(_get(body, "dataset")),
            task=RoundTask.from_json(_get(body, "task")),
            params_sha256=_hex64(body, "params_sha256"),
            max_update_bytes=_int(body, "max_update_bytes", 1, MAX_COUNT),
            candidates=_sizes(body),
        )


def _sizes(body: Mapping[str, Any]) -> tuple[int, ...]:
    value = body.get("candidates", [])
    if not isinstance(value, list) or len(value) > MAX_CANDIDATES:
        raise ProtocolError("malformed", {"field": "candidates", "problem": "not a list"})
    return tuple(_int({"c": v}, "c", 1, MAX_COUNT) for v in value)


@dataclass(frozen=True)
class SiteError:
    """Why a site did not train: a code the portal translates, and plain non-data details."""

    code: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    # Only these keys cross back: names, positions and hashes, never a value from the file.
    SAFE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"column", "columns", "line", "row", "reason", "file", "expected", "actual", "field"}
    )

    def __post_init__(self) -> None:
        # Filtered when made, so no copy of a data value exists to leak later.
        object.__setattr__(self, "detail", safe_detail(self.detail))

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "detail": dict(self.detail)}

    @classmethod
    def from_json(cls, data: Any) -> "SiteError":
        if not isinstance(data, dict):
            raise ProtocolError("malformed", {"field": "error", "problem": "not an object"})
        detail = _object(data, "detail")
        if len(canonical(detail)) > 2000:
            raise ProtocolError("malformed", {"field": "error", "problem": "too large"})
        return cls(code=_text(data, "code", 32), detail=detail)


def safe_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a refusal's detail that may leave a site, with short plain values."""
    out: dict[str, Any] = {}
    for key, value in detail.items():
        if key not in SiteError.SAFE_KEYS:
            continue
        if isinstance(value, bool) or not isinstance(value, int | str | list):
            continue
        if isinstance(value, list):
            value = [str(v)[:80] for v in value[:20]]
        elif isinstance(value, str):
            value = value[:80]
        out[key] = value
    return out


@dataclass(frozen=True)
class SiteReply:
    """A site's answer to one ``SiteMessage``; signed with the site's registered key.

    Either an update (``update_sha256`` of the bytes beside the body, the training rows it was
    computed on, and metrics) or ``error``. ``global_metrics`` score the model the site
    received on its validation rows before training; ``metrics`` score its own update there.
    An evaluation's answer carries no update: ``metrics`` score the model it was sent, and
    ``sample_count`` is the number of rows they were measured on.
    """

    domain: ClassVar[str] = REPLY_DOMAIN

    kind: str  # the message's, echoed: which record the ticket names
    run: int
    launched: str
    round: int
    site: str
    ticket: int
    nonce: str
    kid: str  # the fingerprint of the key that signs it
    update_sha256: str = ""
    sample_count: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    global_metrics: Mapping[str, float] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)
    error: SiteError | None = None
    # "score": each candidate model's scores, in the order the message listed them.
    scores: tuple[Mapping[str, float], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "protocol": PROTOCOL,
            "scores": [dict(s) for s in self.scores],
            "kind": self.kind,
            "run": self.run,
            "launched": self.launched,
            "round": self.round,
            "site": self.site,
            "ticket": self.ticket,
            "nonce": self.nonce,
            "kid": self.kid,
            "update_sha256": self.update_sha256,
            "sample_count": self.sample_count,
            "metrics": dict(self.metrics),
            "global_metrics": dict(self.global_metrics),
            "timings": dict(self.timings),
            "error": None if self.error is None else self.error.to_json(),
        }

    def canonical(self) -> bytes:
        return canonical(self.to_json())

    @classmethod
    def answering(cls, message: SiteMessage, kid: str, **fields: Any) -> "SiteReply":
        """The reply to ``message``: its run, round, site, ticket and nonce, echoed."""
        return cls(
            kind=message.kind,
            run=message.run,
            launched=message.launched,
            round=message.round,
            site=message.site,
            ticket=message.ticket,
            nonce=message.nonce,
            kid=kid,
            **fields,
        )

    @classmethod
    def from_json(cls, data: Any) -> "SiteReply":
        body = _body(data, cls.domain)
        error = _get(body, "error")
        return cls(
            **_dispatch_fields(body),
            kid=_text(body, "kid", 64),
            update_sha256=_hex64(body, "update_sha256", empty=True),
            # Range-checked as a count here; against the registered rows by the coordinator.
            sample_count=_int(body, "sample_count", 0, MAX_COUNT),
            metrics=_numbers(body, "metrics"),
            global_metrics=_numbers(body, "global_metrics"),
            timings=_numbers(body, "timings"),
            error=None if error is None else SiteError.from_json(error),
            scores=_scores(body),
        )


def _scores(body: Mapping[str, Any]) -> tuple[dict[str, float], ...]:
    value = body.get("scores", [])
    if not isinstance(value, list) or len(value) > MAX_CANDIDATES:
        raise ProtocolError("malformed", {"field": "scores", "problem": "not a list"})
    return tuple(_numbers({"scores": item}, "scores") for item in value)


@dataclass(frozen=True)
class Heartbeat:
    """A site worker, alive at ``sent_at`` (Unix seconds), running ``version``."""

    domain: ClassVar[str] = HEARTBEAT_DOMAIN

    site: str
    kid: str
    sent_at: float
    version: str = WORKER_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "protocol": PROTOCOL,
            "site": self.site,
            "kid": self.kid,
            "sent_at": float(self.sent_at),
            "version": self.version,
        }

    def canonical(self) -> bytes:
        return canonical(self.to_json())

    @classmethod
    def from_json(cls, data: Any) -> "Heartbeat":
        body = _body(data, cls.domain)
        return cls(
            site=_text(body, "site", 100),
            kid=_text(body, "kid", 64),
            sent_at=_float(body, "sent_at"),
            version=_text(body, "version", 40),
        )


def _dispatch_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """What names one dispatch, read the same way from a task and from its answer."""
    kind = _text(body, "kind", 20)
    if kind not in KINDS:
        raise ProtocolError("malformed", {"field": "kind", "problem": "unknown kind"})
    return {
        "kind": kind,
        "run": _int(body, "run", 1),
        "launched": _text(body, "launched", 40),
        "round": _int(body, "round", 0, MAX_COUNT),
        "site": _text(body, "site", 100),
        "ticket": _int(body, "ticket", 1),
        "nonce": _text(body, "nonce", 64),
    }


def _body(data: Any, domain: str) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise ProtocolError("malformed", {"field": "body", "problem": "not an object"})
    if data.get("domain") != domain:
        raise ProtocolError("malformed", {"field": "domain", "problem": "another kind of message"})
    if data.get("protocol") != PROTOCOL:
        raise ProtocolError("malformed", {"field": "protocol", "problem": "unknown version"})
    return data


# --- Envelopes: a signed body, and the bytes it names by hash -------------------------------

Body = TypeVar("Body", SiteMessage, SiteReply, Heartbeat)


@dataclass(frozen=True)
class Envelope(Generic[Body]):
    """A body, its signature (base64) and, beside them, the bytes the body names by SHA-256.

    ``sent_at`` is a transport annotation for timings, outside the signature: nothing that
    decides anything is read from it.
    """

    body: Body
    signature: str
    attachment: str = ""  # base64
    sent_at: float | None = None

    @classmethod
    def seal(cls, body: Body, key: Ed25519PrivateKey, attachment: bytes = b"") -> "Envelope[Body]":
        return cls(
            body=body,
            signature=signing.sign(key, body.canonical()),
            attachment=base64.b64encode(attachment).decode("ascii") if attachment else "",
        )

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"body": self.body.to_json(), "signature": self.signature}
        if self.attachment:
            wire["attachment"] = self.attachment
        if self.sent_at is not None:
            wire["sent_at"] = self.sent_at
        return wire

    def signed_by(self, public: Ed25519PublicKey) -> bool:
        return bool(self.signature) and signing.verify(
            public, self.body.canonical(), self.signature
        )

    def attachment_bytes(self, sha256: str, *, limit: int) -> bytes:
        """The attached bytes, checked against ``sha256`` and at most ``limit`` long."""
        if len(self.attachment) > limit * 4 // 3 + 8:
            raise ProtocolError("too_large", {"limit": limit})
        try:
            blob = base64.b64decode(self.attachment, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError("malformed", {"field": "attachment", "problem": "base64"}) from exc
        if len(blob) > limit:
            raise ProtocolError("too_large", {"limit": limit})
        if sha256_hex(blob) != sha256:
            raise ProtocolError("attachment_mismatch", {"field": "attachment"})
        return blob


def open_wire(wire: Any, body_type: type[Body]) -> Envelope[Body]:
    """The envelope a wire message holds, parsed strictly; its signature is not checked here.

    A message without a signature parses with ``signature == ""``, so that the receiver can
    still say which round an unsigned message claimed before dropping it.
    """
    if not isinstance(wire, dict):
        raise ProtocolError("malformed", {"field": "message", "problem": "not an object"})
    body = body_type.from_json(wire.get("body"))
    signature = wire.get("signature", "")
    attachment = wire.get("attachment", "")
    sent_at = wire.get("sent_at")
    if not isinstance(signature, str) or len(signature) > 200:
        raise ProtocolError("malformed", {"field": "signature", "problem": "not a signature"})
    if not isinstance(attachment, str):
        raise ProtocolError("malformed", {"field": "attachment", "problem": "not text"})
    numeric = isinstance(sent_at, int | float) and not isinstance(sent_at, bool)
    if not numeric or not math.isfinite(sent_at):
        sent_at = None
    return Envelope(body=body, signature=signature, attachment=attachment, sent_at=sent_at)


__all__ = [
    "HEARTBEAT_DOMAIN",
    "MAX_COUNT",
    "PROTOCOL",
    "REPLY_DOMAIN",
    "TASK_DOMAIN",
    "WORKER_VERSION",
    "DatasetRef",
    "Envelope",
    "Heartbeat",
    "LearningSpec",
    "ProtocolError",
    "RoundTask",
    "SiteError",
    "SiteMessage",
    "SiteReply",
    "canonical",
    "open_wire",
    "safe_detail",
    "sha256_hex",
]
