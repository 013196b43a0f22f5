"""A model version's provenance bundle: the model, its card and the run's stretch of the audit
chain, in one archive anyone can check offline (``manage.py verify_bundle``)."""

import io
import json
import zipfile

from alliance.models import AuditEvent
from projects.bundle_check import BUNDLE_SCHEMA, sha256
from projects.models import ModelVersion
from projects.services.model_card import model_card, run_events
from projects.services.runs.store import model_bytes


def _document(event: AuditEvent) -> dict:
    return json.loads(event.canonical_bytes())


def bundle_bytes(model: ModelVersion) -> bytes:
    """The zip archive of ``model``'s bundle."""
    card = model_card(model)
    cited = {e.seq for e in run_events(model)}
    first, last = (min(cited), max(cited)) if cited else (0, -1)
    lines = []
    for event in (
        AuditEvent.objects.filter(seq__gte=first, seq__lte=last).order_by("seq").iterator()
    ):
        if event.seq in cited:
            record = {"seq": event.seq, "hash": event.hash, "document": _document(event)}
        else:  # another's event: only what links the chain
            record = {"seq": event.seq, "hash": event.hash, "prev_hash": event.prev_hash}
        lines.append(json.dumps(record, sort_keys=True, separators=(",", ":")))
    files = {
        "model.npy": model_bytes(model),
        "card.json": json.dumps(card, sort_keys=True, indent=2, ensure_ascii=False).encode(),
        "events.jsonl": ("\n".join(lines) + "\n").encode(),
    }
    manifest = {
        "schema": BUNDLE_SCHEMA,
        "model_sha256": model.sha256,
        "files": {name: sha256(data) for name, data in files.items()},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, sort_keys=True, indent=2))
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()
