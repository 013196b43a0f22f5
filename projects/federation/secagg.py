"""Secure aggregation: the coordinator learns the sum of a round's updates and nothing else.

The protocol of Bonawitz et al. ("Practical Secure Aggregation for Privacy-Preserving Machine
Learning", CCS 2017) over the complete graph of a round's contributors, in four stages relayed
by the coordinator:

1. **advertise**: each site draws two X25519 key pairs for this round (``c`` to encrypt the
   shares it sends its peers, ``s`` to agree pairwise masks) and a 32-byte self-mask seed; it
   signs its two public keys with its registered Ed25519 key, so the coordinator cannot slip in
   keys of its own and impersonate a site to the others.
2. **share keys**: every site checks every peer's signature, then splits its ``s`` private key
   and its self-mask seed into Shamir shares (over the prime 2^521 - 1, so a 32-byte secret is
   one field element), one pair per peer, each encrypted with AES-256-GCM under a key agreed
   with that peer's ``c`` key. The coordinator relays ciphertexts it cannot read.
3. **masked input**: a site sends ``y = x + PRG(b) + sum_{v > u} PRG(s_uv) - sum_{v < u}
   PRG(s_uv)`` in the ring Z_(2^64). Each pairwise seed ``s_uv`` is HKDF-SHA256 of the X25519
   shared secret, bound to the session and the ordered pair; PRG is the ChaCha20 keystream keyed
   with the full 256-bit seed (never squeezed into a small integer). The pairwise masks cancel
   in the sum; the self mask hides ``x`` even from a coordinator that later learns ``s``.
4. **unmasking**: for each survivor a site reveals its share of the self-mask seed, for each
   site that dropped after sharing its keys its share of the ``s`` private key, and never both
   for the same peer. With ``t`` shares the coordinator removes the survivors' self masks and
   the dropped sites' dangling pairwise masks, and holds the sum of the survivors' inputs.

``t = max(floor(n / 2) + 1, 2)``: up to ``n - t`` sites may drop, and a round with fewer than
``t`` survivors at any stage fails with that reason (``SecAggFailure``).

What is summed: a site's change ``delta = trained - global``, each coordinate clipped to
``[-clip, clip]``, multiplied by its weight ``w = samples / max_weight`` and quantised with
unbiased stochastic rounding at ``scale`` steps per unit, followed by the sample count itself as
one more (integer) coordinate. The sum therefore carries ``sum_i n_i delta_i / max_weight`` and
``sum_i n_i``: the sample-weighted mean change, that is FedAvg, with no individual weight or
update ever seen by the coordinator. Decoding is exact in the ring and within
``n / scale`` per coordinate (times ``max_weight / sum n_i``) after it.

Plain Python on numpy and ``cryptography``; no Django. Secrets (private keys, seeds, received
shares) live in ``SiteSecrets``, which the site keeps in its own storage, never in a message.
"""

import base64
import binascii
import hashlib
import json
import math
import secrets
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from projects.federation import signing

ADVERTISE_DOMAIN = "fl-portal/secagg-advertise/v1"
PAIR_INFO = b"fl-portal/secagg/v1/pair-mask"
SELF_INFO = b"fl-portal/secagg/v1/self-mask"
SHARE_INFO = b"fl-portal/secagg/v1/share-key"
PRIME = (1 << 521) - 1  # Mersenne prime: a 32-byte secret is one element of the field
BITS = 64  # the ring Z_(2^64): uniform masks straight from keystream bytes
RING_DTYPE = np.dtype("<u8")
SECRET_BYTES = 32
SHARE_BYTES = 66  # an element of the field, big-endian
# Two sites still hide each update from the coordinator (each learns the other's from the
# model, as in any federation of two); t = 2 then tolerates no dropout.
MIN_SITES = 2
MAX_SITES = 100
# The sum of every quantised coordinate must stay below 2^52 in magnitude so that float64 holds
# it exactly; the scale is chosen from this and the cohort's size.
EXACT_BITS = 52


class SecAggFailure(Exception):
    """A round that cannot produce a sum, or a site's refusal to go on.

    ``code`` is a short identifier the portal translates; ``detail`` holds plain values.
    """

    def __init__(self, code: str, detail: Mapping[str, Any] | None = None) -> None:
        self.code = code
        self.detail = dict(detail or {})
        super().__init__(f"{code}: {self.detail}" if self.detail else code)


def threshold(n: int) -> int:
    """How many sites must survive every stage: ``max(floor(n / 2) + 1, 2)``."""
    return max(n // 2 + 1, 2)


def scale_for(n: int, clip: float) -> int:
    """Quantisation steps per unit such that ``n`` coordinates of magnitude ``clip`` add up
    exactly in float64 (and far inside the signed ring)."""
    return max(1, math.floor(2**EXACT_BITS / (n * clip)))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: object, size: int | None = None, what: str = "value") -> bytes:
    if not isinstance(text, str) or len(text) > 1_000:
        raise SecAggFailure("malformed", {"field": what})
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise SecAggFailure("malformed", {"field": what}) from exc
    if size is not None and len(raw) != size:
        raise SecAggFailure("malformed", {"field": what})
    return raw


# --- The round's parameters ------------------------------------------------------------------


@dataclass(frozen=True)
class SecAggConfig:
    """What every site of one secure round agrees on, sent with each stage.

    ``cohort`` is the sorted list of the sites asked to contribute (their slugs); a site's
    Shamir x-coordinate is its position in it plus one. ``dim`` counts the model's coordinates
    (the ring vector has one more, the sample count).
    """

    run: str
    round_number: int
    nonce: str
    cohort: tuple[str, ...]
    dim: int
    clip: float
    max_weight: float
    threshold: int = 0
    scale: int = 0

    def __post_init__(self) -> None:
        n = len(self.cohort)
        if list(self.cohort) != sorted(set(self.cohort)):
            raise SecAggFailure("malformed", {"field": "cohort"})
        if not MIN_SITES <= n <= MAX_SITES:
            raise SecAggFailure("cohort_size", {"sites": n, "min": MIN_SITES, "max": MAX_SITES})
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise SecAggFailure("malformed", {"field": "clip"})
        if not (self.max_weight >= 1 and math.isfinite(self.max_weight)):
            raise SecAggFailure("malformed", {"field": "max_weight"})
        if not 1 <= self.dim <= 50_000_000:
            raise SecAggFailure("malformed", {"field": "dim"})
        if self.threshold == 0:
            object.__setattr__(self, "threshold", threshold(n))
        if self.scale == 0:
            object.__setattr__(self, "scale", scale_for(n, self.clip))
        if self.threshold != threshold(n):
            raise SecAggFailure("malformed", {"field": "threshold"})
        if self.scale != scale_for(n, self.clip):
            raise SecAggFailure("malformed", {"field": "scale"})

    @property
    def n(self) -> int:
        return len(self.cohort)

    def index(self, site: str) -> int:
        """The site's Shamir x-coordinate (1-based)."""
        try:
            return self.cohort.index(site) + 1
        except ValueError as exc:
            raise SecAggFailure("not_in_cohort", {"site": site}) from exc

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "round": self.round_number,
            "nonce": self.nonce,
            "cohort": list(self.cohort),
            "dim": self.dim,
            "clip": self.clip,
            "max_weight": self.max_weight,
            "threshold": self.threshold,
            "scale": self.scale,
        }

    @classmethod
    def from_json(cls, data: Any) -> "SecAggConfig":
        if not isinstance(data, Mapping):
            raise SecAggFailure("malformed", {"field": "secagg"})
        try:
            cohort = data["cohort"]
            if not isinstance(cohort, list) or not all(isinstance(s, str) for s in cohort):
                raise SecAggFailure("malformed", {"field": "cohort"})
            values = (data["run"], data["round"], data["nonce"], data["dim"])
            if not (
                isinstance(values[0], str)
                and isinstance(values[2], str)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in values[1::2])
            ):
                raise SecAggFailure("malformed", {"field": "secagg"})
            return cls(
                run=data["run"],
                round_number=data["round"],
                nonce=data["nonce"],
                cohort=tuple(cohort),
                dim=data["dim"],
                clip=float(data["clip"]),
                max_weight=float(data["max_weight"]),
                threshold=int(data["threshold"]),
                scale=int(data["scale"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SecAggFailure):
                raise
            raise SecAggFailure("malformed", {"field": "secagg"}) from exc


# --- Primitives --------------------------------------------------------------------------------


def prg(seed: bytes, length: int) -> np.ndarray:
    """``length`` uniform elements of Z_(2^64): the ChaCha20 keystream under the 256-bit seed."""
    if len(seed) != SECRET_BYTES:
        raise ValueError("A mask seed is 32 bytes.")
    encryptor = Cipher(algorithms.ChaCha20(seed, b"\x00" * 16), mode=None).encryptor()
    return np.frombuffer(encryptor.update(bytes(length * 8)), dtype=RING_DTYPE)


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


def _pair_info(tag: bytes, a: int, b: int) -> bytes:
    return tag + struct.pack(">II", min(a, b), max(a, b))


def pair_seed(
    own: X25519PrivateKey, peer_public: bytes, session: bytes, own_index: int, peer_index: int
) -> bytes:
    """The 256-bit seed of the mask between two sites, bound to the session and the pair."""
    shared = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return _hkdf(shared, session, _pair_info(PAIR_INFO, own_index, peer_index))


def self_seed(b: bytes, session: bytes, index: int) -> bytes:
    return _hkdf(b, session, SELF_INFO + struct.pack(">I", index))


def _share_key(own: X25519PrivateKey, peer_public: bytes, session: bytes, a: int, b: int) -> bytes:
    shared = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return _hkdf(shared, session, _pair_info(SHARE_INFO, a, b))


def shamir_split(secret: bytes, n: int, t: int) -> list[tuple[int, int]]:
    """``n`` shares ``(x, y)`` (x = 1..n) of which any ``t`` rebuild ``secret``."""
    value = int.from_bytes(secret, "big")
    if value >= PRIME:
        raise ValueError("The secret does not fit the field.")
    coefficients = [value] + [secrets.randbelow(PRIME) for _ in range(t - 1)]
    shares = []
    for x in range(1, n + 1):
        y = 0
        for coefficient in reversed(coefficients):
            y = (y * x + coefficient) % PRIME
        shares.append((x, y))
    return shares


def shamir_combine(shares: Sequence[tuple[int, int]], t: int, size: int = SECRET_BYTES) -> bytes:
    """The secret behind ``shares`` (Lagrange at 0); SecAggFailure with fewer than ``t``."""
    distinct = dict(shares)
    if len(distinct) < t:
        raise SecAggFailure("too_few_shares", {"shares": len(distinct), "threshold": t})
    points = sorted(distinct.items())[:t]
    secret = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * size):
        raise SecAggFailure("bad_shares", {})
    return secret.to_bytes(size, "big")


# --- Fixed-point encoding ----------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """A site's input to the ring and how many coordinates its clip saturated."""

    vector: np.ndarray
    saturated: int


def encode_update(
    delta: Sequence[np.ndarray],
    samples: int,
    config: SecAggConfig,
    rng: np.random.Generator,
) -> Encoded:
    """``delta`` clipped, weighted by ``samples / max_weight`` and quantised; then ``samples``."""
    flat = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in delta])
    if flat.size != config.dim:
        raise SecAggFailure("wrong_size", {"expected": config.dim, "got": int(flat.size)})
    if not np.all(np.isfinite(flat)):
        raise SecAggFailure("not_finite", {})
    if not 0 < samples <= config.max_weight:
        raise SecAggFailure("weight", {"samples": int(samples), "max": config.max_weight})
    saturated = int(np.count_nonzero(np.abs(flat) > config.clip))
    weighted = np.clip(flat, -config.clip, config.clip) * (samples / config.max_weight)
    value = weighted * config.scale
    floor = np.floor(value)
    rounded = (floor + (rng.random(value.shape) < value - floor)).astype(np.int64)
    vector = np.empty(config.dim + 1, dtype=RING_DTYPE)
    vector[:-1] = rounded.view(RING_DTYPE)  # two's complement: the ring's signed embedding
    vector[-1] = samples
    return Encoded(vector=vector, saturated=saturated)


def decode_sum(
    total: np.ndarray, config: SecAggConfig, shapes: Sequence[tuple[int, ...]]
) -> tuple[list[np.ndarray], int]:
    """The sample-weighted mean change (as arrays of ``shapes``) and the total sample count."""
    samples = int(total[-1])
    if samples <= 0:
        raise SecAggFailure("no_weight", {})
    signed = np.asarray(total[:-1], dtype=RING_DTYPE).view(np.int64).astype(np.float64)
    mean = signed / config.scale * (config.max_weight / samples)
    arrays, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        arrays.append(mean[start : start + size].reshape(shape))
        start += size
    return arrays, samples


def quantisation_bound(config: SecAggConfig, survivors: int, samples: int) -> float:
    """The largest error per coordinate of ``decode_sum``'s mean, against the exact mean."""
    return survivors / config.scale * (config.max_weight / samples)


# --- Messages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Advertisement:
    """A site's public keys for one round, signed with its registered key."""

    site: str
    c_pk: str
    s_pk: str
    signature: str

    @staticmethod
    def signed_bytes(config: SecAggConfig, site: str, c_pk: str, s_pk: str) -> bytes:
        body = {
            "domain": ADVERTISE_DOMAIN,
            "run": config.run,
            "round": config.round_number,
            "nonce": config.nonce,
            "site": site,
            "c_pk": c_pk,
            "s_pk": s_pk,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")

    def verify(self, config: SecAggConfig, public: Ed25519PublicKey) -> bool:
        return signing.verify(
            public, self.signed_bytes(config, self.site, self.c_pk, self.s_pk), self.signature
        )

    def to_json(self) -> dict[str, str]:
        return {"site": self.site, "c_pk": self.c_pk, "s_pk": self.s_pk, "sig": self.signature}

    @classmethod
    def from_json(cls, data: Any) -> "Advertisement":
        if not isinstance(data, Mapping):
            raise SecAggFailure("malformed", {"field": "advertisement"})
        fields = [data.get(k) for k in ("site", "c_pk", "s_pk", "sig")]
        if not all(isinstance(v, str) and len(v) <= 200 for v in fields):
            raise SecAggFailure("malformed", {"field": "advertisement"})
        _unb64(fields[1], 32, "c_pk")
        _unb64(fields[2], 32, "s_pk")
        return cls(*fields)


def session_id(advertisements: Iterable[Advertisement]) -> bytes:
    """SHA-256 over every advertised key pair in cohort order: binds all keys to one session."""
    digest = hashlib.sha256()
    for ad in sorted(advertisements, key=lambda a: a.site):
        for part in (ad.site.encode(), _unb64(ad.c_pk, 32), _unb64(ad.s_pk, 32)):
            digest.update(struct.pack(">I", len(part)) + part)
    return digest.digest()


def check_advertisements(
    config: SecAggConfig,
    advertisements: Mapping[str, Advertisement],
    public_keys: Mapping[str, Ed25519PublicKey],
) -> dict[str, Advertisement]:
    """The advertisements that are signed by their site's registered key, keyed by site.

    A bad or missing signature, a site outside the cohort or keys seen twice are refused
    (``bad_advertisement``): whoever relays them has tampered with them. Fewer than ``t``
    valid advertisements fail the round (``too_few_sites``).
    """
    seen: set[str] = set()
    checked: dict[str, Advertisement] = {}
    for site, ad in sorted(advertisements.items()):
        if site != ad.site or site not in config.cohort:
            raise SecAggFailure("bad_advertisement", {"site": site, "problem": "not in cohort"})
        public = public_keys.get(site)
        if public is None or not ad.verify(config, public):
            raise SecAggFailure("bad_advertisement", {"site": site, "problem": "signature"})
        if ad.c_pk in seen or ad.s_pk in seen or ad.c_pk == ad.s_pk:
            raise SecAggFailure("bad_advertisement", {"site": site, "problem": "repeated key"})
        seen.update((ad.c_pk, ad.s_pk))
        checked[site] = ad
    if len(checked) < config.threshold:
        raise SecAggFailure(
            "too_few_sites",
            {"stage": "advertise", "sites": len(checked), "threshold": config.threshold},
        )
    return checked


# --- The site's side ---------------------------------------------------------------------------


@dataclass
class SiteSecrets:
    """What one site keeps to itself for one round (in its own storage, never sent).

    ``shares`` holds the shares it received, per source site: ``(b_share, sk_share)``.
    ``revealed`` records, per peer, which kind of share it has given away ("b" or "sk"), so
    that no retry of the unmasking stage ever yields both for one peer.
    """

    site: str
    c_sk: bytes
    s_sk: bytes
    b: bytes
    stage: str = "advertised"
    session: str = ""
    u2: list[str] = field(default_factory=list)
    shares: dict[str, tuple[int, int]] = field(default_factory=dict)
    revealed: dict[str, str] = field(default_factory=dict)
    _keys: tuple[X25519PrivateKey, X25519PrivateKey] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @classmethod
    def fresh(cls, site: str) -> "SiteSecrets":
        return cls(
            site=site,
            c_sk=X25519PrivateKey.generate().private_bytes_raw(),
            s_sk=X25519PrivateKey.generate().private_bytes_raw(),
            b=secrets.token_bytes(SECRET_BYTES),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "c_sk": _b64(self.c_sk),
            "s_sk": _b64(self.s_sk),
            "b": _b64(self.b),
            "stage": self.stage,
            "session": self.session,
            "u2": self.u2,
            "shares": {k: [str(b), str(s)] for k, (b, s) in self.shares.items()},
            "revealed": self.revealed,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SiteSecrets":
        return cls(
            site=data["site"],
            c_sk=_unb64(data["c_sk"], 32),
            s_sk=_unb64(data["s_sk"], 32),
            b=_unb64(data["b"], 32),
            stage=data["stage"],
            session=data["session"],
            u2=list(data["u2"]),
            shares={k: (int(b), int(s)) for k, (b, s) in data["shares"].items()},
            revealed=dict(data["revealed"]),
        )

    def _c(self) -> X25519PrivateKey:
        if self._keys is None:
            self._keys = (
                X25519PrivateKey.from_private_bytes(self.c_sk),
                X25519PrivateKey.from_private_bytes(self.s_sk),
            )
        return self._keys[0]

    def _s(self) -> X25519PrivateKey:
        self._c()
        assert self._keys is not None
        return self._keys[1]


def advertise(
    secrets_: SiteSecrets, config: SecAggConfig, signing_key: Ed25519PrivateKey
) -> Advertisement:
    """Stage 1: the site's two public keys, signed with its registered key."""
    config.index(secrets_.site)
    c_pk = _b64(secrets_._c().public_key().public_bytes_raw())
    s_pk = _b64(secrets_._s().public_key().public_bytes_raw())
    signature = signing.sign(
        signing_key, Advertisement.signed_bytes(config, secrets_.site, c_pk, s_pk)
    )
    return Advertisement(site=secrets_.site, c_pk=c_pk, s_pk=s_pk, signature=signature)


def _share_aad(session: bytes, source: str, target: str) -> bytes:
    return session + b"\x00" + source.encode() + b"\x00" + target.encode()


def share_keys(
    secrets_: SiteSecrets,
    config: SecAggConfig,
    advertisements: Mapping[str, Advertisement],
    public_keys: Mapping[str, Ed25519PublicKey],
) -> dict[str, str]:
    """Stage 2: every peer's signature checked, then one encrypted pair of shares per peer.

    The site's own advertisement must come back unchanged (the coordinator cannot swap it).
    """
    checked = check_advertisements(config, advertisements, public_keys)
    me = secrets_.site
    own = checked.get(me)
    c_pk = _b64(secrets_._c().public_key().public_bytes_raw())
    s_pk = _b64(secrets_._s().public_key().public_bytes_raw())
    if own is None or own.c_pk != c_pk or own.s_pk != s_pk:
        raise SecAggFailure("bad_advertisement", {"site": me, "problem": "own keys changed"})
    session = session_id(checked.values())
    n, t = config.n, config.threshold
    b_shares = dict(shamir_split(secrets_.b, n, t))
    sk_shares = dict(shamir_split(secrets_.s_sk, n, t))
    my_index = config.index(me)
    out: dict[str, str] = {}
    for peer, ad in checked.items():
        index = config.index(peer)
        plain = b_shares[index].to_bytes(SHARE_BYTES, "big") + sk_shares[index].to_bytes(
            SHARE_BYTES, "big"
        )
        if peer == me:
            secrets_.shares[me] = (b_shares[index], sk_shares[index])
            continue
        key = _share_key(secrets_._c(), _unb64(ad.c_pk, 32), session, my_index, index)
        nonce = secrets.token_bytes(12)
        out[peer] = _b64(nonce + AESGCM(key).encrypt(nonce, plain, _share_aad(session, me, peer)))
    secrets_.session = _b64(session)
    secrets_.stage = "shared"
    return out


def masked_input(
    secrets_: SiteSecrets,
    config: SecAggConfig,
    advertisements: Mapping[str, Advertisement],
    u2: Sequence[str],
    inbox: Mapping[str, str],
    vector: np.ndarray,
) -> np.ndarray:
    """Stage 3: the site's encoded input under its self mask and one mask per peer in U2.

    U2, announced by the coordinator, is the set of sites whose shares it relayed; this site
    must be in it, it must hold at least ``t`` sites, and every peer's share must decrypt and
    authenticate (otherwise the relay tampered with it and the site refuses). The
    advertisements were checked in stage 2; they must be the same ones (same session).
    """
    checked = dict(advertisements)
    session = session_id(checked.values())
    if secrets_.stage != "shared" or _b64(session) != secrets_.session:
        raise SecAggFailure("out_of_order", {"stage": "masked", "at": secrets_.stage})
    me = secrets_.site
    my_index = config.index(me)
    peers = sorted(set(u2))
    if me not in peers or not set(peers) <= set(checked):
        raise SecAggFailure("inconsistent_sets", {})
    if len(peers) < config.threshold:
        raise SecAggFailure(
            "too_few_sites",
            {"stage": "share_keys", "sites": len(peers), "threshold": config.threshold},
        )
    for source in peers:
        if source == me:
            continue
        raw = _unb64(inbox.get(source), None, "share")
        key = _share_key(
            secrets_._c(), _unb64(checked[source].c_pk, 32), session, my_index, config.index(source)
        )
        try:
            plain = AESGCM(key).decrypt(raw[:12], raw[12:], _share_aad(session, source, me))
        except (InvalidTag, ValueError) as exc:
            raise SecAggFailure("bad_share", {"site": source}) from exc
        if len(plain) != 2 * SHARE_BYTES:
            raise SecAggFailure("bad_share", {"site": source})
        secrets_.shares[source] = (
            int.from_bytes(plain[:SHARE_BYTES], "big"),
            int.from_bytes(plain[SHARE_BYTES:], "big"),
        )
    if vector.dtype != RING_DTYPE or vector.shape != (config.dim + 1,):
        raise SecAggFailure("wrong_size", {"expected": config.dim + 1})
    with np.errstate(over="ignore"):
        masked = vector + prg(self_seed(secrets_.b, session, my_index), vector.size)
        for peer in peers:
            if peer == me:
                continue
            index = config.index(peer)
            mask = prg(
                pair_seed(secrets_._s(), _unb64(checked[peer].s_pk, 32), session, my_index, index),
                vector.size,
            )
            masked = masked + mask if my_index < index else masked - mask
    secrets_.u2 = peers
    secrets_.stage = "masked"
    return masked


def unmask(
    secrets_: SiteSecrets, config: SecAggConfig, survivors: Sequence[str], dropped: Sequence[str]
) -> dict[str, dict[str, str]]:
    """Stage 4: self-mask shares of the survivors, key shares of the dropped; never both.

    Survivors and dropped must be disjoint, inside U2, and the survivors at least ``t``;
    asking for the other kind of share of a peer already answered is refused, across retries.
    """
    if secrets_.stage not in ("masked", "unmasked"):
        raise SecAggFailure("out_of_order", {"stage": "unmask", "at": secrets_.stage})
    alive, gone = set(survivors), set(dropped)
    if alive & gone or not (alive | gone) <= set(secrets_.u2) or secrets_.site not in alive:
        raise SecAggFailure("inconsistent_sets", {})
    if len(alive) < config.threshold:
        raise SecAggFailure(
            "too_few_sites",
            {"stage": "masked", "sites": len(alive), "threshold": config.threshold},
        )
    for peer in alive:
        if secrets_.revealed.get(peer, "b") != "b":
            raise SecAggFailure("both_shares", {"site": peer})
    for peer in gone:
        if secrets_.revealed.get(peer, "sk") != "sk":
            raise SecAggFailure("both_shares", {"site": peer})
    b_shares, sk_shares = {}, {}
    for peer in sorted(alive):
        if peer in secrets_.shares:
            b_shares[peer] = str(secrets_.shares[peer][0])
            secrets_.revealed[peer] = "b"
    for peer in sorted(gone):
        if peer in secrets_.shares:
            sk_shares[peer] = str(secrets_.shares[peer][1])
            secrets_.revealed[peer] = "sk"
    secrets_.stage = "unmasked"
    return {"b": b_shares, "sk": sk_shares}


# --- The coordinator's side ---------------------------------------------------------------------


@dataclass(frozen=True)
class Unmasked:
    """The result of a secure round: the sum of the survivors' inputs and who they were."""

    total: np.ndarray
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    masked_sum_sha256: str


def _share_value(text: object) -> int:
    if not isinstance(text, str) or not text.isdigit() or len(text) > 200:
        raise SecAggFailure("malformed", {"field": "share"})
    value = int(text)
    if value >= PRIME:
        raise SecAggFailure("malformed", {"field": "share"})
    return value


def unmask_sum(
    config: SecAggConfig,
    advertisements: Mapping[str, Advertisement],
    u2: Sequence[str],
    masked: Mapping[str, np.ndarray],
    responses: Mapping[str, Mapping[str, Mapping[str, str]]],
) -> Unmasked:
    """The sum of the inputs of the sites in ``masked`` (U3), from their masked vectors and
    the unmasking responses (``{site: {"b": {peer: share}, "sk": {peer: share}}}``).

    Needs ``t`` survivors and, for every mask to remove, ``t`` shares; fails otherwise.
    """
    t = config.threshold
    survivors = tuple(sorted(masked))
    dropped = tuple(sorted(set(u2) - set(survivors)))
    if not set(survivors) <= set(u2) or not set(u2) <= set(advertisements):
        raise SecAggFailure("inconsistent_sets", {})
    if len(survivors) < t:
        raise SecAggFailure(
            "too_few_sites", {"stage": "masked", "sites": len(survivors), "threshold": t}
        )
    if len(responses) < t:
        raise SecAggFailure(
            "too_few_sites", {"stage": "unmask", "sites": len(responses), "threshold": t}
        )
    session = session_id(advertisements[s] for s in sorted(advertisements))
    length = config.dim + 1
    total = np.zeros(length, dtype=RING_DTYPE)
    with np.errstate(over="ignore"):
        for site in survivors:
            vector = masked[site]
            if vector.dtype != RING_DTYPE or vector.shape != (length,):
                raise SecAggFailure("wrong_size", {"site": site})
            total = total + vector
        masked_sum = total.copy()

        def shares_of(kind: str, peer: str) -> list[tuple[int, int]]:
            found = []
            for responder, answer in responses.items():
                value = answer.get(kind, {}).get(peer)
                if value is not None:
                    found.append((config.index(responder), _share_value(value)))
            return found

        for site in survivors:
            b = shamir_combine(shares_of("b", site), t)
            total = total - prg(self_seed(b, session, config.index(site)), length)
        for site in dropped:
            s_sk = X25519PrivateKey.from_private_bytes(shamir_combine(shares_of("sk", site), t))
            gone = config.index(site)
            for peer in survivors:
                index = config.index(peer)
                mask = prg(
                    pair_seed(s_sk, _unb64(advertisements[peer].s_pk, 32), session, gone, index),
                    length,
                )
                # the survivor added the mask when its index is below the dropped site's
                total = total - mask if index < gone else total + mask
    return Unmasked(
        total=total,
        survivors=survivors,
        dropped=dropped,
        masked_sum_sha256=hashlib.sha256(masked_sum.tobytes()).hexdigest(),
    )


# --- Ring vectors as bytes -----------------------------------------------------------------------


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=RING_DTYPE).tobytes()


def vector_from_bytes(blob: bytes, config: SecAggConfig) -> np.ndarray:
    if len(blob) != (config.dim + 1) * 8:
        raise SecAggFailure("wrong_size", {"expected": (config.dim + 1) * 8, "got": len(blob)})
    return np.frombuffer(blob, dtype=RING_DTYPE).copy()


# --- The whole protocol in one process (tests, benchmark, the in-process loop) ------------------


def round_in_process(
    config: SecAggConfig,
    inputs: Mapping[str, np.ndarray],
    signing_keys: Mapping[str, Ed25519PrivateKey],
    *,
    drop_after_share_keys: Iterable[str] = (),
    drop_after_masked: Iterable[str] = (),
    observed: dict[str, Any] | None = None,
    timings: dict[str, float] | None = None,
) -> Unmasked:
    """Every stage of a secure round for the sites of ``inputs``, relayed in memory.

    Sites in ``drop_after_share_keys`` vanish once their shares are out (they never send a
    masked input); those in ``drop_after_masked`` send it and then stop answering. When given,
    ``observed`` receives what the coordinator saw: advertisements, U2, masked vectors; and
    ``timings`` the seconds of each stage: ``<stage>_max_site`` (the slowest site, as sites
    run in parallel), ``<stage>_all_sites`` (their sum) and ``coordinator``.
    """
    clock: dict[str, list[float]] = {}

    def timed(stage: str, call: Any, *args: Any) -> Any:
        started = time.perf_counter()
        value = call(*args)
        clock.setdefault(stage, []).append(time.perf_counter() - started)
        return value

    public_keys = {site: key.public_key() for site, key in signing_keys.items()}
    state = {site: SiteSecrets.fresh(site) for site in sorted(inputs)}
    ads = {s: timed("advertise", advertise, state[s], config, signing_keys[s]) for s in state}
    outboxes = {
        s: timed("share_keys", share_keys, state[s], config, ads, public_keys) for s in state
    }
    early = set(drop_after_share_keys)
    u2 = sorted(outboxes)
    masked = {}
    for site in u2:
        if site in early:
            continue
        inbox = {source: box[site] for source, box in outboxes.items() if site in box}
        masked[site] = timed(
            "masked", masked_input, state[site], config, ads, u2, inbox, inputs[site]
        )
    late = set(drop_after_masked)
    survivors = sorted(masked)
    dropped = sorted(set(u2) - set(survivors))
    responses = {
        site: timed("unmask", unmask, state[site], config, survivors, dropped)
        for site in survivors
        if site not in late
    }
    if observed is not None:
        observed.update(advertisements=ads, u2=u2, masked=masked)
    result = timed("coordinator", unmask_sum, config, ads, u2, masked, responses)
    if timings is not None:
        for stage, seconds in clock.items():
            if stage == "coordinator":
                timings[stage] = seconds[0]
            else:
                timings[f"{stage}_max_site"] = max(seconds)
                timings[f"{stage}_all_sites"] = sum(seconds)
    return result
