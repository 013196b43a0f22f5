"""The portal's own Ed25519 keys: from the environment in production, generated when embedded.

``PORTAL_SIGNING_KEY`` signs every task the coordinator sends a site; ``AUDIT_LOG_KEY`` signs the
audit log's checkpoints. Each is the base64 of a 32-byte Ed25519 seed (``manage.py
portal_keygen`` prints a fresh one). Behind TLS (``PORTAL_HTTPS=1``, production) a missing key is
a configuration error; on the embedded default a key is generated once into ``var/`` (mode 600),
and the portal says so on standard error, as it does for the secret key.
"""

import base64
import binascii
import functools
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# setting name -> file under VAR_DIR on the embedded default
KEYS = {"PORTAL_SIGNING_KEY": "portal_signing_key", "AUDIT_LOG_KEY": "audit_log_key"}


def key_from_text(text: str) -> Ed25519PrivateKey:
    """A private key from the base64 of its 32-byte seed; ValueError when it is not one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64") from exc
    if len(raw) != 32:
        raise ValueError("not 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(raw)


def key_to_text(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.private_bytes_raw()).decode()


def public_text(key: Ed25519PrivateKey) -> str:
    """The public half, base64 of its 32 raw bytes."""
    return base64.b64encode(key.public_key().public_bytes_raw()).decode()


def _load(setting: str) -> Ed25519PrivateKey:
    text = getattr(settings, setting, "") or ""
    if text:
        try:
            return key_from_text(text)
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"{setting} must be the base64 of a 32-byte Ed25519 seed ({exc})."
            ) from exc
    if settings.PORTAL_HTTPS:
        raise ImproperlyConfigured(
            f"{setting} is required in production (PORTAL_HTTPS=1): "
            "run `manage.py portal_keygen` and set it in the environment."
        )
    path = Path(settings.VAR_DIR) / KEYS[setting]
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(key_to_text(Ed25519PrivateKey.generate()))
        print(
            f"Generated a new {setting} into {path} (set {setting} to use your own).",
            file=sys.stderr,
        )
    return key_from_text(path.read_text())


def portal_key(setting: str = "PORTAL_SIGNING_KEY") -> Ed25519PrivateKey:
    """The portal's private key for ``setting`` (read once per process)."""
    if setting not in KEYS:
        raise ValueError(f"unknown portal key {setting}")
    return _cached(setting)


@functools.cache
def _cached(setting: str) -> Ed25519PrivateKey:
    return _load(setting)


def portal_public_text(setting: str = "PORTAL_SIGNING_KEY") -> str:
    """The public half, base64: what a site worker is started with."""
    return public_text(portal_key(setting))
