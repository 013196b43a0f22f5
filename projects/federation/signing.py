"""Ed25519 signatures for what crosses between the portal and a site (RFC 8032).

Plain Python on the ``cryptography`` package, no Django: a site worker imports it. A key is
written as the standard base64 of its 32 raw bytes (the private key's seed, or the public key);
its fingerprint is the first 16 bytes of SHA-256 over the raw public key, in hex, which is what
an institution's admin compares by eye when registering a site's key.
"""

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "BadKey",
    "InvalidSignature",
    "fingerprint",
    "generate",
    "private_from_text",
    "private_to_text",
    "public_from_text",
    "public_to_text",
    "sign",
    "verify",
]


class BadKey(ValueError):
    """A key's text is not base64 of 32 bytes."""


def _raw(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadKey(f"The {what} is not base64.") from exc
    if len(raw) != 32:
        raise BadKey(f"The {what} must be 32 bytes (base64 of 44 characters).")
    return raw


def generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_from_text(text: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(_raw(text, "private key"))


def private_to_text(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.private_bytes_raw()).decode()


def public_from_text(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_raw(text, "public key"))


def public_to_text(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return base64.b64encode(key.public_bytes_raw()).decode()


def fingerprint(public_text: str) -> str:
    """32 hex digits: SHA-256 of the raw public key, first 16 bytes."""
    return hashlib.sha256(_raw(public_text, "public key")).hexdigest()[:32]


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    """The signature over ``message``, base64."""
    return base64.b64encode(key.sign(message)).decode()


def verify(public: Ed25519PublicKey, message: bytes, signature: object) -> bool:
    """Whether ``signature`` (base64 text, as sent) is ``public``'s signature over ``message``."""
    if not isinstance(signature, str) or len(signature) > 200:
        return False
    try:
        public.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
