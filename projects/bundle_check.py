"""Checking a provenance bundle offline: the standard library only, no database, no portal.

A bundle (``bundle.zip``) holds ``model.npy``, ``card.json``, ``events.jsonl`` and
``manifest.json``. ``events.jsonl`` is the stretch of the audit chain from the run's launch to
the last event its card cites: the run's own events in full (their canonical documents), every
other event as its sequence number, hash and predecessor's hash only, so the links can be
followed without seeing what others did. ``check_bundle`` recomputes every hash it can, follows
every link, and compares the card's figures with what the events recorded; the first mismatch
is the answer.
"""

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUNDLE_SCHEMA = "fl-portal/provenance-bundle/v1"
FILES = ("manifest.json", "model.npy", "card.json", "events.jsonl")


@dataclass(frozen=True)
class BundleCheck:
    ok: bool
    problem: str = ""
    events: int = 0


def canonical_event(document: dict[str, Any]) -> bytes:
    """The bytes an audit event's hash covers (``AuditEvent.canonical_bytes``)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Mismatch(Exception):
    pass


def _events(text: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    previous: dict[str, Any] | None = None
    for record in records:
        seq, claimed = record.get("seq"), record.get("hash")
        document = record.get("document")
        if document is not None:
            if document.get("seq") != seq:
                raise Mismatch(f"event {seq}: its document names another sequence number")
            if sha256(canonical_event(document)) != claimed:
                raise Mismatch(f"event {seq} was altered: its hash does not match its content")
            prev = document.get("prev_hash")
        else:
            prev = record.get("prev_hash")
        if previous is not None:
            if seq != previous["seq"] + 1:
                raise Mismatch(f"event {previous['seq'] + 1} is missing from the chain")
            if prev != previous["hash"]:
                raise Mismatch(f"event {seq} does not follow event {previous['seq']}")
        previous = record
    return records


def _payloads(records: list[dict[str, Any]]) -> list[tuple[int, str, dict[str, Any]]]:
    return [
        (r["seq"], r["document"]["action"], r["document"]["payload"])
        for r in records
        if r.get("document") is not None
    ]


def _compare(card: dict[str, Any], records: list[dict[str, Any]]) -> None:
    full = {r["seq"]: r for r in records if r.get("document") is not None}
    for cited in card["provenance"]["events"]:
        record = full.get(cited["seq"])
        if record is None or record["hash"] != cited["hash"]:
            raise Mismatch(f"the card cites event {cited['seq']}, which the bundle does not hold")
        if record["document"]["action"] != cited["action"]:
            raise Mismatch(f"the card names event {cited['seq']} by another action")
    sha = card["model_details"]["sha256"]
    round_number = card["model_details"]["round"]
    training = card["training"]
    evaluation = card["evaluation"]
    seen = set()
    for seq, action, payload in _payloads(records):
        if action == "run.launched":
            seen.add(action)
            for key in ("strategy", "rounds", "seed", "terms_sha256"):
                if payload.get(key) != training.get(key):
                    raise Mismatch(f"the card's training {key} is not what event {seq} recorded")
            # Runs launched before the options were recorded have none to compare.
            if "options" in payload and payload["options"] != training.get("options"):
                raise Mismatch(f"the card's training options are not what event {seq} recorded")
        elif action == "round.closed":
            rows = [r for r in evaluation["per_round"] if r["round"] == payload.get("round")]
            if rows and rows[0]["started_from"] != payload.get("started_from_metrics", {}):
                raise Mismatch(
                    f"the card's figures of round {payload.get('round')} differ from event {seq}"
                )
            if payload.get("round") == round_number:
                seen.add(action)
                if payload.get("model_sha256") != sha:
                    raise Mismatch(f"event {seq} recorded another model for round {round_number}")
        elif action in ("model.certified", "model.not_certified"):
            if payload.get("model_sha256") != sha:
                continue
            certification = evaluation.get("certification") or {}
            if payload.get("figures") != certification.get("figures"):
                raise Mismatch(f"the card's validator figures differ from event {seq}")
            if (action == "model.certified") != bool(evaluation.get("certified")):
                raise Mismatch(f"the card's verdict differs from event {seq}")
            seen.add("certification")
        elif action == "model.released" and payload.get("model_sha256") == sha:
            release = card.get("release") or {}
            if payload.get("terms_sha256") != release.get("terms_sha256"):
                raise Mismatch(f"the card's release terms differ from event {seq}")
            seen.add(action)
    for needed in ("run.launched", "round.closed"):
        if needed not in seen:
            raise Mismatch(f"the bundle holds no {needed} event for this model")
    if evaluation.get("certified") is not None and "certification" not in seen:
        raise Mismatch("the bundle holds no certification event for this model")
    if card.get("release") and "model.released" not in seen:
        raise Mismatch("the bundle holds no release event for this model")


def check_bundle(path: Path) -> BundleCheck:
    """Check the bundle at ``path``; ``problem`` names the first mismatch."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [name for name in FILES if name not in names]
            if missing:
                raise Mismatch(f"the bundle lacks {', '.join(missing)}")
            manifest = json.loads(archive.read("manifest.json"))
            files = {name: archive.read(name) for name in FILES if name != "manifest.json"}
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        return BundleCheck(False, f"not a readable bundle ({exc})")
    except Mismatch as exc:
        return BundleCheck(False, str(exc))
    try:
        if manifest.get("schema") != BUNDLE_SCHEMA:
            raise Mismatch("the manifest names another kind of bundle")
        for name, data in files.items():
            if manifest.get("files", {}).get(name) != sha256(data):
                raise Mismatch(f"{name} does not match the manifest's SHA-256")
        card = json.loads(files["card.json"])
        model_sha = sha256(files["model.npy"])
        if model_sha != card["model_details"]["sha256"]:
            raise Mismatch("model.npy is not the model the card describes (SHA-256 differs)")
        if card["provenance"]["model_sha256"] != model_sha:
            raise Mismatch("the card's provenance names another model")
        records = _events(files["events.jsonl"].decode())
        _compare(card, records)
    except Mismatch as exc:
        return BundleCheck(False, str(exc))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return BundleCheck(False, f"the bundle is malformed ({type(exc).__name__}: {exc})")
    return BundleCheck(True, events=len(records))
