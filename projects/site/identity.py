"""A site worker's identities: which institutions it serves, their folders, keys and logs.

A worker started with ``manage.py run_site_worker --institution SLUG`` serves that institution
alone (``SITE_DATA_DIRS``). The embedded demo and the tests serve every folder under
``SITE_DATA_ROOT`` that holds a site key, each strictly on its own: its own queue, folder, key
and log. A site's private key is ``<folder>/.site/<slug>.key`` unless ``SITE_KEY_FILES`` names
another file; its log is ``<folder>/.site/site-log.jsonl``. Files whose names start with a dot
are never data, so no task can ask for the key or the log.
"""

import functools
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings

from projects.federation import signing
from projects.federation.sitelog import SiteLog

PRIVATE_DIR = ".site"
LOG_NAME = "site-log.jsonl"


class Answers:
    """The signed answers a site sent lately, by (ticket, nonce), to send again unchanged.

    The coordinator sends a task again when it has not heard back (the broker may have lost the
    task or the answer): the site then repeats its answer rather than training again. Bounded:
    the oldest are forgotten first.
    """

    def __init__(self, limit: int = 512) -> None:
        self.limit = limit
        self._items: OrderedDict[tuple[int, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, str]) -> Any:
        with self._lock:
            return self._items.get(key)

    def put(self, key: tuple[int, str], envelope: Any) -> None:
        with self._lock:
            self._items[key] = envelope
            while len(self._items) > self.limit:
                self._items.popitem(last=False)


@dataclass(frozen=True)
class SiteIdentity:
    slug: str
    folder: Path
    key: Ed25519PrivateKey
    kid: str  # the public key's fingerprint
    log: SiteLog
    answers: Answers = field(default_factory=Answers, compare=False)


def default_key_path(folder: Path, slug: str) -> Path:
    return Path(folder) / PRIVATE_DIR / f"{slug}.key"


def write_key_pair(out: Path, slug: str) -> tuple[Path, str, str]:
    """A new Ed25519 key pair: the private key in ``out/<slug>.key`` (mode 600), the public key
    in ``out/<slug>.pub``. Returns the private key's path, the public key and its fingerprint.
    An existing private key is never overwritten."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    private_path = out / f"{slug}.key"
    key = signing.generate()
    # O_EXCL: never replace a key a worker may be using; 0o600 from the first byte.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(signing.private_to_text(key) + "\n")
    public = signing.public_to_text(key)
    (out / f"{slug}.pub").write_text(public + "\n")
    return private_path, public, signing.fingerprint(public)


@functools.lru_cache(maxsize=64)
def _identity(slug: str, folder: str, key_path: str, mtime_ns: int) -> SiteIdentity:
    key = signing.private_from_text(Path(key_path).read_text())
    log = SiteLog(Path(folder) / PRIVATE_DIR / LOG_NAME)
    return SiteIdentity(
        slug, Path(folder), key, signing.fingerprint(signing.public_to_text(key)), log
    )


def _load(slug: str, folder: Path) -> SiteIdentity | None:
    key_path = Path(settings.SITE_KEY_FILES.get(slug) or default_key_path(folder, slug))
    try:
        mtime = key_path.stat().st_mtime_ns
        return _identity(slug, str(Path(folder).resolve()), str(key_path), mtime)
    except (OSError, signing.BadKey):
        return None


def site_identities() -> dict[str, SiteIdentity]:
    """The institutions this worker serves, by slug (those whose key it can read)."""
    if settings.SITE_DATA_DIRS:
        folders = dict(settings.SITE_DATA_DIRS)
    else:
        root = Path(settings.SITE_DATA_ROOT)
        folders = {p.name: p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
    found = {slug: _load(slug, Path(folder)) for slug, folder in sorted(folders.items())}
    return {slug: identity for slug, identity in found.items() if identity is not None}


def portal_public_key() -> Ed25519PublicKey | None:
    """The portal key this worker obeys (``PORTAL_PUBLIC_KEY``); None: it obeys nothing."""
    text = settings.PORTAL_PUBLIC_KEY
    if not text:
        return None
    try:
        return signing.public_from_text(text)
    except signing.BadKey:
        return None


def data_file(identity: SiteIdentity, site_key: str) -> Path | None:
    """The registered file ``site_key`` names in the site's folder; None when it would be
    anything else: a path, a hidden file (the key, the log), or a name leaving the folder."""
    if (
        not site_key
        or site_key.startswith(".")
        or any(c in site_key for c in "/\\:\x00")
        or site_key.strip() != site_key
    ):
        return None
    folder = identity.folder.resolve()
    path = (folder / site_key).resolve()
    if path.parent != folder:
        return None
    return path
