"""A site's part in a securely aggregated round (``projects.federation.secagg``).

Each stage arrives as a ``SiteMessage`` whose ``secagg`` names the stage; the answer is a signed
``SiteReply`` whose ``secagg`` carries the site's part. The round's secrets (the two X25519
private keys, the self-mask seed, the shares received, which shares were revealed) live in the
site's private folder (``.site/secagg/``, mode 600), never in a message, so a stage sent again
gets the same answer and a coordinator asking again with other sets cannot obtain both shares of
one peer. In the masked stage the site trains as in a plain round and sends only its masked
vector: its change, weighted by its rows, clipped and quantised, with its row count inside.
"""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from projects.federation import encoding, secagg, signing
from projects.federation.loop import secagg_rng
from projects.federation.protocol import Envelope, ProtocolError, SiteMessage
from projects.federation.site import train_on_site
from projects.site.identity import PRIVATE_DIR, SiteIdentity

SECAGG_DIR = "secagg"


def _state_path(identity: SiteIdentity, message: SiteMessage) -> Path:
    return (
        identity.folder / PRIVATE_DIR / SECAGG_DIR / f"run{message.run}-round{message.round}.json"
    )


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = path.with_suffix(".tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle)
    os.replace(scratch, path)


def _advertisements(part: Any) -> dict[str, secagg.Advertisement]:
    if not isinstance(part, dict):
        raise secagg.SecAggFailure("malformed", {"field": "ads"})
    return {str(site): secagg.Advertisement.from_json(ad) for site, ad in part.items()}


def _public_keys(part: Any) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise secagg.SecAggFailure("malformed", {"field": "keys"})
    keys = {}
    for site, text in part.items():
        try:
            keys[str(site)] = signing.public_from_text(str(text))
        except signing.BadKey as exc:
            raise secagg.SecAggFailure("malformed", {"field": "keys"}) from exc
    return keys


def _sites(part: Any, field: str) -> list[str]:
    if not isinstance(part, list) or not all(isinstance(s, str) for s in part):
        raise secagg.SecAggFailure("malformed", {"field": field})
    return part


def secure_answer(
    identity: SiteIdentity, envelope: Envelope[SiteMessage], data_path: Path
) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """The site's part of the stage: ``(secagg answer, reply fields, attachment)``.

    Raises ``SecAggFailure`` (a refusal with its code) or ``ProtocolError``.
    """
    message = envelope.body
    part = message.secagg
    stage = message.stage
    config = secagg.SecAggConfig.from_json(part.get("config"))
    if (config.run, config.round_number) != (str(message.run), message.round):
        raise secagg.SecAggFailure("malformed", {"field": "config"})
    config.index(identity.slug)
    path = _state_path(identity, message)
    state = _load(path) or {}
    if stage in state.get("answers", {}):  # asked again: the same answer, nothing drawn anew
        answer = state["answers"][stage]
        return answer["secagg"], answer["fields"], encoding.from_text(answer["attachment"])
    if stage == "advertise":
        secrets_ = secagg.SiteSecrets.fresh(identity.slug)
    elif "s_sk" not in state.get("secrets", {}):
        raise secagg.SecAggFailure("out_of_order", {"stage": stage, "at": "none"})
    else:
        secrets_ = secagg.SiteSecrets.from_json(state["secrets"])
    fields: dict[str, Any] = {}
    attachment = b""
    if stage == "advertise":
        ad = secagg.advertise(secrets_, config, identity.key)
        answer: dict[str, Any] = {"stage": stage, "ad": ad.to_json()}
    elif stage == "share_keys":
        shares = secagg.share_keys(
            secrets_, config, _advertisements(part.get("ads")), _public_keys(part.get("keys"))
        )
        answer = {"stage": stage, "shares": shares}
    elif stage == "masked":
        inbox = part.get("inbox")
        if not isinstance(inbox, dict):
            raise secagg.SecAggFailure("malformed", {"field": "inbox"})
        blob = envelope.attachment_bytes(message.params_sha256, limit=message.max_update_bytes)
        start = encoding.decode_params(blob, max_bytes=message.max_update_bytes)
        result = train_on_site(
            message.task, start, data_path=data_path, expected_sha256=message.dataset.sha256
        )
        delta = [
            np.asarray(p, np.float64) - np.asarray(g, np.float64)
            for p, g in zip(result.params, start, strict=True)
        ]
        encoded = secagg.encode_update(
            delta,
            result.sample_count,
            config,
            secagg_rng(message.task.seed, identity.slug, message.round),
        )
        masked = secagg.masked_input(
            secrets_,
            config,
            _advertisements(part.get("ads")),
            _sites(part.get("u2"), "u2"),
            {str(k): v for k, v in inbox.items()},
            encoded.vector,
        )
        attachment = secagg.vector_to_bytes(masked)
        # The row count and the update's own scores stay inside the mask: only the received
        # model's scores (the same model for every site) are reported.
        fields = {
            "update_sha256": encoding.params_sha256(attachment),
            "global_metrics": result.global_metrics,
        }
        answer = {"stage": stage}
    elif stage == "unmask":
        answer = {
            "stage": stage,
            **secagg.unmask(
                secrets_,
                config,
                _sites(part.get("survivors"), "survivors"),
                _sites(part.get("dropped"), "dropped"),
            ),
        }
    else:  # the protocol's parser admits only the stages above
        raise ProtocolError("malformed", {"field": "secagg"})
    # After unmasking nothing secret is needed again (every stage's answer is kept): the keys,
    # the self-mask seed and the peers' shares are wiped; what was revealed stays on record.
    state["secrets"] = {"revealed": secrets_.revealed} if stage == "unmask" else secrets_.to_json()
    state.setdefault("answers", {})[stage] = {
        "secagg": answer,
        "fields": fields,
        "attachment": encoding.to_text(attachment),
    }
    _save(path, state)
    return answer, fields, attachment
