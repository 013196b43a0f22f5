#!/usr/bin/env python3
"""Check, offline, that an audit event is in the portal's signed audit log.

Needs only Python 3.11+ and the ``cryptography`` package. Inputs:

* the answer of ``GET /api/v1/audit-events/<seq>/inclusion-proof/`` saved to a file (or ``-`` for
  standard input): the event's canonical JSON, its RFC 6962 audit path and the signed checkpoint;
* the log's verifier key (``GET /api/v1/audit-checkpoints/key/`` or ``manage.py audit_checkpoint
  --key``), which you pinned once.

It checks the checkpoint's Ed25519 signature (C2SP signed note), that the entry's leaf hash is
SHA-256(0x00 ‖ entry), and that the audit path leads from that leaf to the signed root (RFC 9162
§2.1.3.2). With ``--checkpoint FILE`` it also checks that the proof's checkpoint is the one you
kept. Exit 0 when everything holds, 1 naming the first thing that does not.

    python scripts/verify_inclusion.py proof.json --key 'alliance-portal/audit-log+1a2b3c4d+AX...'
"""

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class Failed(Exception):
    pass


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_path(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    if not 0 <= index < size:
        raise Failed("the leaf index is outside the tree")
    fn, sn, node = index, size - 1, leaf
    for sibling in path:
        if len(sibling) != 32:
            raise Failed("a proof hash is not 32 bytes")
        if sn == 0:
            raise Failed("the proof is too long")
        if fn & 1 or fn == sn:
            node = _node(sibling, node)
            while (fn & 1) == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            node = _node(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Failed("the proof is too short")
    return node


def open_checkpoint(note: str, verifier_key: str) -> tuple[int, bytes]:
    """(size, root) of a C2SP checkpoint once its signature by ``verifier_key`` verifies."""
    name, key_hex, key_b64 = verifier_key.strip().split("+", 2)
    raw = base64.b64decode(key_b64)
    if len(raw) != 33 or raw[0] != 1:
        raise Failed("the verifier key is not an Ed25519 signed-note key")
    public = Ed25519PublicKey.from_public_bytes(raw[1:])
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if key_id.hex() != key_hex:
        raise Failed("the verifier key's id does not match its key")
    text, sep, signatures = note.rpartition("\n\n")
    if not sep:
        raise Failed("the checkpoint is not a signed note")
    text += "\n"
    for line in signatures.splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == "\u2014" and parts[1] == name:
            blob = base64.b64decode(parts[2])
            if blob[:4] == key_id:
                try:
                    public.verify(blob[4:], text.encode())
                except InvalidSignature as exc:
                    raise Failed("the checkpoint's signature does not verify") from exc
                origin, size, root = text.split("\n")[:3]
                if origin != name:
                    raise Failed("the checkpoint is of another log")
                return int(size), base64.b64decode(root)
    raise Failed("the checkpoint is not signed by this key")


def verify(answer: dict, verifier_key: str, kept_note: str | None = None) -> str:
    note = answer["checkpoint"]["note"]
    if kept_note is not None and kept_note.strip() != note.strip():
        raise Failed("the proof is against another checkpoint than the one you kept")
    size, root = open_checkpoint(note, verifier_key)
    if size != answer["tree_size"]:
        raise Failed("the proof's tree size is not the checkpoint's")
    entry = answer["entry"].encode()
    if json.loads(entry)["seq"] != answer["seq"] or answer["leaf_index"] != answer["seq"] - 1:
        raise Failed("the entry is not the event asked for")
    leaf = hashlib.sha256(b"\x00" + entry).digest()
    if leaf.hex() != answer["leaf_hash"]:
        raise Failed("the leaf hash is not SHA-256(0x00 + entry)")
    path = [bytes.fromhex(h) for h in answer["proof"]]
    if root_from_path(answer["leaf_index"], size, leaf, path) != root:
        raise Failed("the audit path does not lead to the signed root")
    return f"event {answer['seq']} is in the signed log of {size} events"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("proof", help="the inclusion-proof answer (JSON file, or - for stdin)")
    parser.add_argument("--key", required=True, help="the log's signed-note verifier key")
    parser.add_argument("--checkpoint", help="a checkpoint note you kept, to compare with")
    args = parser.parse_args(argv)
    try:
        text = sys.stdin.read() if args.proof == "-" else Path(args.proof).read_text("utf-8")
        kept = Path(args.checkpoint).read_text("utf-8") if args.checkpoint else None
        print("OK:", verify(json.loads(text), args.key, kept))
        return 0
    except (Failed, OSError, ValueError, KeyError, TypeError) as exc:
        print("FAILED:", exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
