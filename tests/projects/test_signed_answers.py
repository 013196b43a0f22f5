"""A site's answer counts only when it is provably that site's own answer to that dispatch.

The coordinator's services, with answers delivered by hand: the genuine ones computed by the real
site code on the real files and signed with the demo site's own key; the forged ones made the way
an attacker with access to the broker (and perhaps another site's key) would make them.
"""

import base64
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from alliance.models import AuditEvent
from portal.common.errors import ApplicationError
from projects.demo import BREAST_CANCER_FILE
from projects.federation import encoding, signing
from projects.federation.protocol import SiteError
from projects.models import AgreementApproval, Problem, Round, SiteKey, SiteRound, TrainingRun
from projects.services import runs, sites
from projects.services.runs.store import round_start_bytes
from tests.projects.federation_setup import (
    SITES,
    answer,
    seed_medical,
    signed_reply,
    site_key,
)

User = get_user_model()
RESEARCHER = "kaohsiung-harbour-hospital-researcher"


@pytest.fixture
def medical(db, tmp_path: Path) -> Problem:
    return seed_medical(tmp_path)


def launch(problem: Problem, **config: object) -> TrainingRun:
    actor = User.objects.get(username=RESEARCHER)
    return runs.run_launch(actor=actor, problem=problem, config=runs.LaunchConfig(**config))


@pytest.fixture
def started(medical) -> TrainingRun:
    """A launched run with round 1 open (nothing is dispatched: no commit in these tests)."""
    run = launch(medical, rounds=2, min_contributors=2)
    runs.run_advance(run.pk)
    return run


def site_row(run: TrainingRun, slug: str, number: int = 1) -> SiteRound:
    return SiteRound.objects.get(round__run=run, round__number=number, institution__slug=slug)


def statuses(run: TrainingRun, number: int = 1) -> dict[str, str]:
    return dict(
        SiteRound.objects.filter(round__run=run, round__number=number).values_list(
            "institution__slug", "status"
        )
    )


# --- Genuine answers ------------------------------------------------------------------------


def test_a_duplicate_delivery_counts_once(started):
    first = answer(started, SITES[0])
    runs.update_receive(first)
    runs.update_receive(first)
    round_ = started.round_set.get(number=1)
    assert round_.sites.filter(status="contributed").count() == 1
    assert round_.status == Round.Status.RUNNING

    runs.update_receive(answer(started, SITES[1]))
    runs.update_receive(answer(started, SITES[2]))
    runs.update_receive(first)  # late, after the round closed: ignored
    round_.refresh_from_db()
    assert round_.status == Round.Status.SUCCEEDED
    assert round_.contributors == 3
    assert round_.forged == {}
    assert started.round_set.filter(number=2, status="running").exists()


def test_a_late_answer_leaves_every_field_of_a_closed_row_unchanged(started):
    late = answer(started, SITES[0])
    for slug in SITES[1:]:
        runs.update_receive(answer(started, slug))
    round_ = started.round_set.get(number=1)
    runs.round_deadline(started.pk, 1)  # not due yet: nothing happens
    Round.objects.filter(pk=round_.pk).update(deadline_at=timezone.now())
    runs.round_deadline(started.pk, 1)
    dropped = site_row(started, SITES[0])
    before = {f.name: getattr(dropped, f.name) for f in SiteRound._meta.fields}
    assert dropped.status == SiteRound.Status.DROPPED
    runs.update_receive(late)
    after = site_row(started, SITES[0])
    assert {f.name: getattr(after, f.name) for f in SiteRound._meta.fields} == before


def test_the_reply_carries_the_received_models_scores_and_the_updates(started):
    runs.update_receive(answer(started, SITES[0]))
    row = site_row(started, SITES[0])
    assert set(row.global_metrics) >= {"accuracy", "validation_rows"}
    assert set(row.metrics) >= {"accuracy", "validation_rows"}
    assert row.nonce and len(row.nonce) == 32
    assert row.sample_count == row.dataset.row_count - int(row.metrics["validation_rows"])


# --- Forgeries: none counts, none blocks the site's genuine answer ---------------------------


def _unsigned(run, slug):
    wire = answer(run, slug)
    del wire["signature"]
    return wire


def _wrong_key(run, slug):
    return signed_reply(run, slug, key=signing.generate())


def _another_sites_key(run, slug):
    other = next(s for s in SITES if s != slug)
    return signed_reply(run, slug, key=site_key(other))


def _altered_after_signing(run, slug):
    wire = answer(run, slug)
    params = encoding.decode_params(base64.b64decode(wire["attachment"]))
    params[0] = params[0] + 0.5
    wire["attachment"] = base64.b64encode(encoding.encode_params(params)).decode()
    return wire


def _claims_edited_after_signing(run, slug):
    wire = answer(run, slug)
    wire["body"]["sample_count"] = 2**31 - 1
    return wire


def _forged_error(run, slug):
    return signed_reply(
        run, slug, key=signing.generate(), error=SiteError("hash_mismatch", {"actual": "0" * 64})
    )


def _without_ticket(run, slug):
    wire = answer(run, slug)
    del wire["body"]["ticket"]
    return wire


FORGERIES = {
    "unsigned": _unsigned,
    "bad_signature": _wrong_key,
    "another_sites_key": _another_sites_key,
    "altered": _altered_after_signing,
    "edited_claims": _claims_edited_after_signing,
    "forged_error": _forged_error,
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_a_forged_answer_never_counts_and_the_genuine_one_still_does(started, name):
    forged = FORGERIES[name](started, SITES[0])
    runs.update_receive(forged)
    runs.update_receive(forged)
    row = site_row(started, SITES[0])
    assert row.status == SiteRound.Status.DISPATCHED  # neither counted nor rejected
    assert row.reason == "" and row.sample_count is None

    for slug in SITES:
        runs.update_receive(answer(started, slug))
    round_ = started.round_set.get(number=1)
    assert round_.status == Round.Status.SUCCEEDED
    assert statuses(started) == dict.fromkeys(SITES, "contributed")
    assert sum(round_.forged.values()) == 2
    reported = AuditEvent.objects.filter(action="round.forged_answers_dropped")
    assert reported.count() == 1  # once per round, however many arrived
    assert reported.get().payload["count"] == 2
    assert not AuditEvent.objects.filter(action="round.update_rejected").exists()


def test_an_answer_without_a_ticket_is_not_even_read(started):
    runs.update_receive(_without_ticket(started, SITES[0]))
    assert statuses(started) == dict.fromkeys(SITES, "dispatched")


def test_a_flood_of_forgeries_is_one_audit_event(started):
    forged = _wrong_key(started, SITES[1])
    for _ in range(40):
        runs.update_receive(forged)
    for slug in SITES:
        runs.update_receive(answer(started, slug))
    assert started.round_set.get(number=1).forged == {"bad_signature": 40}
    assert AuditEvent.objects.filter(action="round.forged_answers_dropped").count() == 1


def test_a_signed_answer_replayed_into_a_later_round_does_not_count(started):
    old = {slug: answer(started, slug) for slug in SITES}
    for wire in old.values():
        runs.update_receive(wire)
    assert started.round_set.get(number=2).status == Round.Status.RUNNING
    # The same signed bytes again, and the body edited to claim round 2 (signature broken).
    runs.update_receive(old[SITES[0]])
    moved = {**old[SITES[0]], "body": {**old[SITES[0]]["body"], "round": 2}}
    runs.update_receive(moved)
    assert statuses(started, 2) == dict.fromkeys(SITES, "dispatched")
    assert started.round_set.get(number=2).forged == {"unknown_dispatch": 1}
    runs.update_receive(answer(started, SITES[0], 2))
    assert site_row(started, SITES[0], 2).status == SiteRound.Status.CONTRIBUTED


def test_another_sites_signed_answer_cannot_take_a_row(started):
    mine = answer(started, SITES[0])
    theirs = site_row(started, SITES[1])
    runs.update_receive({**mine, "body": {**mine["body"], "ticket": theirs.pk}})
    assert statuses(started) == dict.fromkeys(SITES, "dispatched")


def test_a_revoked_key_cannot_contribute(started):
    staff = User.objects.get(username="staff")
    key = SiteKey.objects.get(institution__slug=SITES[0], status="active")
    sites.site_key_revoke(actor=staff, key=key, reason="The worker's machine was stolen.")
    runs.update_receive(answer(started, SITES[0]))
    assert site_row(started, SITES[0]).status == SiteRound.Status.DISPATCHED
    assert started.round_set.get(number=1).forged == {"no_active_key": 1}
    # And the next launch leaves the site out, naming why.
    decision = runs.run_launch(
        actor=User.objects.get(username=RESEARCHER),
        problem=started.problem,
        config=runs.LaunchConfig(rounds=1),
    )
    round_ = runs.run_advance(decision.pk)
    assert SITES[0] not in round_.sites.values_list("institution__slug", flat=True)
    assert any("no active site key" in e["reason"] for e in round_.excluded)


# --- Answers that are the site's own, but wrong: rejected with their reason -----------------


def _with(run, change) -> bytes:
    params = encoding.decode_params(round_start_bytes(run, 1))
    return encoding.encode_params(change(params))


REJECTED = [
    (lambda run: b"\x93NUMPY junk", "malformed"),
    (lambda run: encoding.encode_params([np.zeros((2, 2))]), "count"),
    (lambda run: _with(run, lambda p: [p[0][:-1], p[1]]), "shape"),
    (lambda run: _with(run, lambda p: [p[0] * np.nan, p[1]]), "not_finite"),
    (lambda run: _with(run, lambda p: [p[0] + 1e6, p[1]]), "norm"),
]


@pytest.mark.parametrize(("make", "code"), REJECTED, ids=[code for _, code in REJECTED])
def test_a_sites_own_unusable_update_is_rejected_with_its_reason(started, make, code):
    runs.update_receive(signed_reply(started, SITES[0], update=make(started)))
    row = site_row(started, SITES[0])
    assert row.status == SiteRound.Status.REJECTED
    assert row.reason_code == code
    assert row.reason
    assert AuditEvent.objects.filter(
        action="round.update_rejected", payload__code=code, payload__run=started.number
    ).exists()
    runs.update_receive(answer(started, SITES[1]))
    runs.update_receive(answer(started, SITES[2]))
    round_ = started.round_set.get(number=1)
    assert round_.status == Round.Status.SUCCEEDED
    assert round_.contributors == 2


@pytest.mark.parametrize("claim", [0, 10_000, 2**31 - 1])
def test_a_sample_count_beyond_the_registered_rows_is_refused_with_its_reason(started, claim):
    runs.update_receive(signed_reply(started, SITES[0], sample_count=claim))
    row = site_row(started, SITES[0])
    assert row.status == SiteRound.Status.REJECTED
    assert row.reason_code == "sample_count"
    assert "registered" in row.reason


def test_a_sample_count_that_does_not_fit_is_not_a_reply(started):
    wire = signed_reply(started, SITES[0])
    wire["body"]["sample_count"] = 2**31
    runs.update_receive(wire)
    assert site_row(started, SITES[0]).status == SiteRound.Status.DISPATCHED


def test_a_site_refuses_a_file_that_differs_from_the_registered_one(started):
    path = Path(settings.SITE_DATA_ROOT) / SITES[0] / BREAST_CANCER_FILE
    path.write_text(path.read_text() + path.read_text().splitlines()[-1] + "\n")
    reply = answer(started, SITES[0])
    assert reply["body"]["error"]["code"] == "hash_mismatch"
    assert "attachment" not in reply
    runs.update_receive(reply)
    row = site_row(started, SITES[0])
    assert row.status == SiteRound.Status.REJECTED
    assert "SHA-256" in row.reason


# --- The policy, before every round ---------------------------------------------------------


def test_the_policy_is_asked_before_every_round(started):
    for slug in SITES:
        runs.update_receive(answer(started, slug))
    # Before round 2 opens, one steward revokes and the agreement lapses.
    approval = AgreementApproval.objects.get(version=started.agreement, institution__slug=SITES[0])
    approval.revoked_at = timezone.now()
    approval.save()
    type(started.agreement).objects.filter(pk=started.agreement.pk).update(
        expires_on=timezone.localdate() - timezone.timedelta(days=1)
    )
    Round.objects.filter(run=started, number=2).delete()  # opened on receipt; ask again
    runs.run_advance(started.pk)
    started.refresh_from_db()
    assert started.status == TrainingRun.Status.FAILED
    assert any("expired" in reason for reason in started.reasons)
    assert AuditEvent.objects.filter(action="run.refused").exists()


def test_a_revoked_contributor_is_left_out_of_the_next_round(started):
    for slug in SITES:
        runs.update_receive(answer(started, slug))
    Round.objects.filter(run=started, number=2).delete()
    approval = AgreementApproval.objects.get(version=started.agreement, institution__slug=SITES[0])
    approval.revoked_at = timezone.now()
    approval.save()
    round_ = runs.run_advance(started.pk)
    assert sorted(round_.sites.values_list("institution__slug", flat=True)) == SITES[1:]
    assert [e["institution"] for e in round_.excluded] == [SITES[0]]


def test_launch_is_refused_with_every_reason(medical):
    with pytest.raises(ApplicationError) as refused:
        launch(medical, model_family="mlp", min_contributors=2)
    assert "does not permit the model family" in refused.value.message
    assert refused.value.extra["reasons"]
    assert not TrainingRun.objects.exists()


def test_launch_checks_its_settings(medical):
    with pytest.raises(ApplicationError) as refused:
        launch(medical, rounds=0, learning_rate=-1.0, strategy="nonsense", seed=2.5)
    assert set(refused.value.extra["errors"]) >= {"rounds", "learning_rate", "strategy", "seed"}


def test_only_researchers_of_contributing_institutions_launch(medical):
    viewer = User.objects.get(username="metro-taipei-viewer")
    with pytest.raises(PermissionDenied):
        runs.run_launch(actor=viewer, problem=medical, config=runs.LaunchConfig())


def test_the_same_configuration_gives_the_same_model_bit_for_bit(medical):
    first = launch(medical, rounds=1)
    second = launch(medical, rounds=1)
    other = launch(medical, rounds=1, seed=7)
    for run in (first, second, other):
        runs.run_advance(run.pk)
        for slug in SITES:
            runs.update_receive(answer(run, slug))
    sha = [run.models.get(round_number=1).sha256 for run in (first, second, other)]
    assert sha[0] == sha[1] != sha[2]


def test_fedprox_sends_its_proximal_term_to_the_sites(medical):
    run = launch(medical, rounds=1, strategy="fedprox", strategy_options={"mu": 0.5})
    runs.run_advance(run.pk)
    assert runs.round_task(run, 1, SITES[0]).proximal_mu == 0.5
    fedavg = launch(medical, rounds=1)
    assert runs.round_task(fedavg, 1, SITES[0]).proximal_mu == 0.0
    assert dataclasses.replace(runs.round_task(run, 1, ""), proximal_mu=0.1).proximal_mu == 0.1
