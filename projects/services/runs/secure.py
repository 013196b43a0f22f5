"""Securely aggregated rounds: the coordinator relays four stages and only ever holds sums.

A secure run's round (``TrainingRun.secure_aggregation``) opens like any other, with one site
row per contributor, and then goes through the stages of ``projects.federation.secagg``, each a
signed ``SiteMessage`` to the sites still in and a signed answer back on the usual path:

1. ``advertise``: each site's two public keys for the round, signed with its registered key;
2. ``share_keys``: every advertisement and the sites' registered keys go to every site, which
   answers with its encrypted shares, one per peer;
3. ``masked``: each site receives the shares addressed to it and the round's model, trains,
   and answers with its masked vector (kept on its row, masked, until the round closes);
4. ``unmask``: the survivors reveal the shares that remove the masks.

A stage moves on when every site asked has answered it, or at the stage's deadline with at
least ``t`` answers; with fewer the round fails with that reason. The round's ``secagg`` holds
its stage and parameters, then what the coordinator saw: the public keys, each masked vector's
SHA-256, the masked sum's SHA-256, survivors and dropped sites. The masked vectors are cleared
when the round closes; the sites' row counts and updates were never sent in the clear.

Trust: a site checks its peers' advertisements against the keys the portal says are registered
(sent in the portal-signed message), which keeps a broker or relay from substituting keys.
"""

import dataclasses
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from projects.federation import encoding, secagg
from projects.federation.protocol import Envelope, SiteMessage, SiteReply, sha256_hex
from projects.models import Round, SiteKey, SiteRound, TrainingRun
from projects.services.runs.dispatch import new_nonce, publish_safely, seal, site_message
from projects.services.runs.store import round_start_bytes
from projects.services.runs.watch import run_changed

# Each coordinate of a site's change is clipped to this before weighting and quantisation; the
# 64-bit ring leaves about 1e-12 resolution at 100 sites even so (``secagg.scale_for``).
CLIP = 100.0
STAGES = ("advertise", "share_keys", "masked", "unmask")


def stage_text(code: str, detail: dict[str, Any]) -> str:
    """Why a secure round could not go on."""
    names = {
        "advertise": _("key advertisement"),
        "share_keys": _("key sharing"),
        "masked": _("masked input"),
        "unmask": _("unmasking"),
    }
    if code == "too_few_sites":
        return _(
            "Secure aggregation needs at least %(t)s of the round's sites at every stage; only "
            "%(n)s answered the %(stage)s stage."
        ) % {
            "t": detail.get("threshold"),
            "n": detail.get("sites"),
            "stage": names.get(str(detail.get("stage")), detail.get("stage")),
        }
    if code == "cohort_size":
        return _(
            "Secure aggregation needs at least %(min)s sites in a round; %(n)s were asked."
        ) % {
            "min": detail.get("min"),
            "n": detail.get("sites"),
        }
    return _("Secure aggregation failed (%(code)s).") % {"code": code}


def round_config(run: TrainingRun, round_: Round, sites: list[SiteRound]) -> secagg.SecAggConfig:
    """The round's parameters: cohort, threshold, clip, weighting, fixed-point scale."""
    params = encoding.decode_params(round_start_bytes(run, round_.number))
    return secagg.SecAggConfig(
        run=str(run.pk),
        round_number=round_.number,
        nonce=new_nonce(),
        cohort=tuple(sorted(s.institution.slug for s in sites)),
        dim=sum(int(p.size) for p in params),
        clip=CLIP,
        max_weight=float(max(s.dataset.row_count for s in sites)),
    )


def _registered_keys(sites: list[SiteRound]) -> dict[str, str]:
    rows = SiteKey.objects.filter(
        institution__in=[s.institution_id for s in sites], status=SiteKey.Status.ACTIVE
    ).values_list("institution__slug", "public_key")
    return dict(rows)


def _stage_part(round_: Round, stage: str, site: SiteRound, rows: list[SiteRound]) -> dict:
    """What the stage's message to ``site`` carries (read from the rows' answers)."""
    state = round_.secagg
    part: dict[str, Any] = {"stage": stage, "config": state["config"]}
    if stage == "advertise":
        return part
    ads = {s.institution.slug: s.secagg["advertise"]["ad"] for s in rows if "advertise" in s.secagg}
    ads = {slug: ad for slug, ad in ads.items() if slug in state["advertised"]}
    part["ads"] = ads
    if stage == "share_keys":
        part["keys"] = _registered_keys([s for s in rows if s.institution.slug in ads])
    elif stage == "masked":
        me = site.institution.slug
        part["u2"] = state["u2"]
        part["inbox"] = {
            s.institution.slug: s.secagg["share_keys"]["shares"][me]
            for s in rows
            if s.institution.slug in state["u2"]
            and me in s.secagg.get("share_keys", {}).get("shares", {})
        }
    elif stage == "unmask":
        part["survivors"] = state["u3"]
        part["dropped"] = sorted(set(state["u2"]) - set(state["u3"]))
    return part


def stage_envelopes(
    run: TrainingRun, round_: Round, to: list[SiteRound], rows: list[SiteRound]
) -> list[Envelope[SiteMessage]]:
    """The current stage's signed message to each of ``to`` (``rows``: all the round's)."""
    stage = round_.secagg["stage"]
    params = round_start_bytes(run, round_.number)
    sha = sha256_hex(params)
    messages = []
    for s in to:
        message = site_message(run, round_, s, sha)
        messages.append(dataclasses.replace(message, secagg=_stage_part(round_, stage, s, rows)))
    # Only the masked stage trains: the model rides with that stage alone.
    return seal(messages, params if stage == "masked" else b"")


def round_open(run: TrainingRun, round_: Round, sites: list[SiteRound]) -> list[Envelope]:
    """Start a secure round at its first stage (caller's transaction); its messages."""
    config = round_config(run, round_, sites)
    members = list(config.cohort)
    round_.secagg = {"config": config.to_json(), "stage": "advertise", "members": members}
    round_.save(update_fields=["secagg"])
    return stage_envelopes(run, round_, sites, sites)


def round_rows(round_: Round) -> list[SiteRound]:
    return list(round_.sites.select_related("institution", "dataset").order_by("institution__slug"))


def waiting(round_: Round, rows: list[SiteRound]) -> list[SiteRound]:
    """The sites asked at the current stage that have not answered it."""
    state = round_.secagg
    return [
        s
        for s in rows
        if s.institution.slug in state.get("members", [])
        and s.status == SiteRound.Status.DISPATCHED
        and state.get("stage") not in s.secagg
    ]


def answer_record(dispatch: Any, envelope: Envelope[SiteReply]) -> int | None:
    """A site's answer to a stage (signature checked by the caller): recorded if it answers the
    round's current stage; the stage moves on when complete. The run's id when the round
    closed and the run goes on."""
    from projects.services.runs.answers import rejection_text

    reply = envelope.body
    with transaction.atomic():
        round_ = (
            Round.objects.select_for_update(of=("self",))
            .select_related("run__problem", "run__institution", "run__agreement")
            .filter(run_id=dispatch.run_id, number=dispatch.round_number)
            .order_by()
            .first()
        )
        if round_ is None or round_.status != Round.Status.RUNNING:
            return None
        if reply.stage != round_.secagg.get("stage"):
            return None  # a late or repeated answer to an earlier stage
        site = SiteRound.objects.select_related("institution").get(pk=dispatch.pk)
        if site.status != SiteRound.Status.DISPATCHED or reply.stage in site.secagg:
            return None
        if reply.error is not None:
            site.status = SiteRound.Status.REJECTED
            site.reason_code = reply.error.code[:32]
            site.reason = rejection_text(reply.error.code, dict(reply.error.detail))[:2000]
            site.save(update_fields=["status", "reason_code", "reason"])
        else:
            answer = dict(reply.secagg)
            answer.pop("stage", None)
            if reply.stage == "masked":
                config = secagg.SecAggConfig.from_json(round_.secagg["config"])
                blob = envelope.attachment_bytes(reply.update_sha256, limit=(config.dim + 1) * 8)
                try:
                    secagg.vector_from_bytes(blob, config)
                except secagg.SecAggFailure:
                    return None
                site.update = encoding.to_text(blob)  # masked: uniform noise to the reader
                site.update_sha256 = reply.update_sha256
                site.update_bytes = len(blob)
                site.global_metrics = dict(reply.global_metrics)
                # the training stage's timings, as a plain round records them
                site.timings = {k: v for k, v in reply.timings.items() if k != "replied_at"}
                answer = {"sha256": reply.update_sha256}
            site.secagg = {**site.secagg, reply.stage: answer}
            site.answered_at = timezone.now()
            site.save(
                update_fields=[
                    "secagg",
                    "answered_at",
                    "update",
                    "update_sha256",
                    "update_bytes",
                    "global_metrics",
                    "timings",
                ]
            )
        rows = round_rows(round_)
        if waiting(round_, rows):
            return None
        goes_on = stage_advance(round_, rows)
    return dispatch.run_id if goes_on else None


def stage_advance(round_: Round, rows: list[SiteRound], *, at_deadline: bool = False) -> bool:
    """Move the round (locked, caller's transaction) to its next stage, or close it after
    the last; True when the round closed and the run goes on."""
    from projects.services.runs.closing import close_round, fail_round

    state = dict(round_.secagg)
    stage = state["stage"]
    config = secagg.SecAggConfig.from_json(state["config"])
    answered = sorted(
        s.institution.slug
        for s in rows
        if stage in s.secagg and s.status == SiteRound.Status.DISPATCHED
    )
    if len(answered) < config.threshold:
        detail = {"stage": stage, "sites": len(answered), "threshold": config.threshold}
        fail_round(round_, rows, stage_text("too_few_sites", detail), secure=state)
        return False
    now = timezone.now()
    if stage == "unmask":
        # The survivors' vectors are in the sum: they contributed, whoever answered last.
        for s in rows:
            if s.institution.slug in state["u3"]:
                s.status = SiteRound.Status.CONTRIBUTED
        SiteRound.objects.bulk_update(rows, ["status"])
        return close_round(round_, at_deadline=at_deadline, sites=rows)
    following = STAGES[STAGES.index(stage) + 1]
    key = {"advertise": "advertised", "share_keys": "u2", "masked": "u3"}[stage]
    state[key] = answered
    state["stage"] = following
    state["members"] = state["u3"] if following == "unmask" else answered
    round_.secagg = state
    round_.deadline_at = now + timedelta(seconds=round_.run.round_deadline)
    round_.save(update_fields=["secagg", "deadline_at"])
    # A site that did not answer in time is out of the round (its masks are recovered).
    late = [
        s
        for s in rows
        if s.status == SiteRound.Status.DISPATCHED and s.institution.slug not in state["members"]
    ]
    for s in late:
        s.status = SiteRound.Status.DROPPED
        s.reason = _("No answer to the %(stage)s stage of secure aggregation.") % {"stage": stage}
    if late:
        SiteRound.objects.bulk_update(late, ["status", "reason"])
    to = [s for s in rows if s.institution.slug in state["members"]]
    SiteRound.objects.filter(pk__in=[s.pk for s in to]).update(resent_at=None, resends=0)
    envelopes = stage_envelopes(round_.run, round_, to, rows)
    transaction.on_commit(lambda: publish_safely(envelopes))
    run_changed(round_.run_id)  # sites may have dropped out: the run page follows
    return False


def unmasked_params(round_: Round, contributed: list[SiteRound], rows: list[SiteRound]) -> tuple:
    """The weighted mean parameters the survivors' masked vectors add up to, the total row
    count, and what the coordinator saw. Raises SecAggFailure."""
    state = round_.secagg
    config = secagg.SecAggConfig.from_json(state["config"])
    ads = {
        s.institution.slug: secagg.Advertisement.from_json(s.secagg["advertise"]["ad"])
        for s in rows
        if "advertise" in s.secagg and s.institution.slug in state["advertised"]
    }
    masked = {
        s.institution.slug: secagg.vector_from_bytes(encoding.from_text(s.update), config)
        for s in contributed
    }
    responses = {
        s.institution.slug: s.secagg["unmask"]
        for s in rows
        if "unmask" in s.secagg and s.institution.slug in state["u3"]
    }
    result = secagg.unmask_sum(config, ads, state["u2"], masked, responses)
    global_params = encoding.decode_params(round_start_bytes(round_.run, round_.number))
    mean, total = secagg.decode_sum(result.total, config, [p.shape for p in global_params])
    params = [g.astype("float64") + m for g, m in zip(global_params, mean, strict=True)]
    seen = {
        "threshold": config.threshold,
        "cohort": list(config.cohort),
        "survivors": list(result.survivors),
        "dropped": list(result.dropped),
        "masked_sha256": {s.institution.slug: s.update_sha256 for s in contributed},
        "masked_sum_sha256": result.masked_sum_sha256,
        "total_rows": total,
        "scale": config.scale,
        "clip": config.clip,
        "dim": config.dim,
    }
    return params, total, seen
