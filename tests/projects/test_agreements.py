"""Data-use agreements: drafting, every contributor's approval, amendment, decline, revocation."""

import datetime
import hashlib
import json

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from alliance.models import AuditEvent
from alliance.tasks import email_send_task
from portal.common.errors import ApplicationError, Conflict
from projects import services
from projects.models import AgreementApproval, AgreementVersion, Problem
from projects.services import RunConfig
from tests.projects.scenario import description, make_site, terms

pytestmark = pytest.mark.django_db

RUN = RunConfig(model_family="logistic_regression", min_contributors=2)


def emails(callbacks: list) -> list[tuple[str, str, list[str]]]:
    """(subject, body, recipients) of every email a block scheduled for after its commit."""
    return [
        callback.args
        for callback in callbacks
        if getattr(callback, "func", None) == email_send_task.delay
    ]


def recipients(callbacks: list) -> set[str]:
    return {address for _subject, _body, to in emails(callbacks) for address in to}


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def approve(scenario, site, version: AgreementVersion) -> AgreementApproval:
    return services.agreement_approve(
        actor=site.steward, version=version, terms_sha256=version.terms_sha256
    )


# --- Drafting ----------------------------------------------------------------------------------


def test_draft_reports_every_invalid_term_at_once(registered):
    with pytest.raises(ValidationError) as info:
        services.agreement_draft(
            actor=registered.a.researcher,
            problem=registered.problem,
            **terms(
                min_contributors=1,
                model_families=["logistic_regression", "random_forest"],
                expires_on=timezone.localdate() - datetime.timedelta(days=1),
                commercial_use=True,
                revenue_sharing="  ",
            ),
        )
    errors = info.value.message_dict
    assert errors == {
        "min_contributors": ["At least 2 contributors per round."],
        "model_families": [
            "Unknown model families: random_forest; choose from "
            "logistic_regression, linear_regression, mlp."
        ],
        "expires_on": ["The expiry date must be in the future."],
        "revenue_sharing": ["Say how revenue is shared when commercial use is allowed."],
    }
    assert not AgreementVersion.objects.exists()
    assert not events("agreement.drafted")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"purpose": " "}, "purpose"),
        ({"model_families": []}, "model_families"),
        ({"min_contributors": "two"}, "min_contributors"),
        ({"dp_max_epsilon": -1}, "dp_max_epsilon"),
        ({"download_scope": "everyone"}, "download_scope"),
        ({"expires_on": "next year"}, "expires_on"),
        ({"expires_on": timezone.localdate()}, "expires_on"),
        ({"royalties": "10%"}, "non_field_errors"),
    ],
)
def test_draft_refuses_each_invalid_term(registered, overrides, field):
    with pytest.raises(ValidationError) as info:
        services.agreement_draft(
            actor=registered.a.researcher, problem=registered.problem, **terms(**overrides)
        )
    assert set(info.value.message_dict) == {field}


def test_commercial_use_with_a_revenue_note_is_accepted(registered):
    version = registered.draft(commercial_use=True, revenue_sharing="Pro rata by rows.")
    assert version.commercial_use
    assert version.revenue_sharing == "Pro rata by rows."


def test_terms_hash_is_the_sha256_of_the_canonical_terms(
    registered, django_capture_on_commit_callbacks
):
    expires = timezone.localdate() + datetime.timedelta(days=200)
    with django_capture_on_commit_callbacks() as callbacks:
        version = registered.draft(
            model_families=["mlp", "logistic_regression"],
            dp_max_epsilon=3,
            expires_on=expires.isoformat(),
            purpose="Screening research — 腫瘤",
        )
    canonical = {
        "problem": "tumour-malignancy",
        "version": 1,
        "terms": {
            "purpose": "Screening research — 腫瘤",
            "model_families": ["logistic_regression", "mlp"],
            "min_contributors": 2,
            "secure_aggregation": False,
            "dp_max_epsilon": 3.0,
            "download_scope": "participants",
            "commercial_use": False,
            "revenue_sharing": "",
            "expires_on": expires.isoformat(),
            "clauses": "Results are published jointly.",
        },
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert version.terms_sha256 == expected
    version.refresh_from_db()
    assert version.compute_terms_sha256() == expected  # and it holds as stored
    assert version.number == 1
    assert version.status == AgreementVersion.Status.PENDING
    assert version.created_by == registered.a.researcher
    (event,) = events("agreement.drafted")
    assert event.actor == registered.a.researcher
    assert event.target_id == str(version.pk)
    assert event.payload == {
        "problem": "tumour-malignancy",
        "version": 1,
        "terms_sha256": expected,
        "supersedes": None,
    }
    # Each contributor's data stewards are asked; nobody else.
    assert recipients(callbacks) == {
        "north-hospital-steward@example.org",
        "harbour-hospital-steward@example.org",
    }


@pytest.mark.parametrize("who", ["b.researcher", "a.steward", "c.admin"])
def test_only_the_proposer_drafts(registered, who):
    site, role = who.split(".")
    with pytest.raises(PermissionDenied):
        services.agreement_draft(
            actor=getattr(getattr(registered, site), role), problem=registered.problem, **terms()
        )
    assert not AgreementVersion.objects.exists()


# --- Approving ---------------------------------------------------------------------------------


def test_effective_only_after_every_contributor_approved(
    registered, django_capture_on_commit_callbacks
):
    version = registered.draft()
    first = approve(registered, registered.a, version)
    assert first.decision == AgreementApproval.Decision.APPROVED
    assert first.terms_sha256 == version.terms_sha256
    assert first.decided_by == registered.a.steward
    version.refresh_from_db()
    assert version.status == AgreementVersion.Status.PENDING
    assert registered.refresh().stage == Problem.Stage.RATIFIED
    assert not events("agreement.effective")

    with django_capture_on_commit_callbacks() as callbacks:
        approve(registered, registered.b, version)
    version.refresh_from_db()
    assert version.status == AgreementVersion.Status.EFFECTIVE
    assert version.effective_at is not None
    assert registered.refresh().stage == Problem.Stage.DATA_READY

    approved = events("agreement.approved")
    assert [(e.actor, e.subject_institution) for e in approved] == [
        (registered.a.steward, registered.a.institution),
        (registered.b.steward, registered.b.institution),
    ]
    assert approved[0].payload == {
        "problem": "tumour-malignancy",
        "version": 1,
        "terms_sha256": version.terms_sha256,
    }
    (effective,) = events("agreement.effective")
    assert effective.actor == registered.b.steward
    assert effective.payload == {
        "problem": "tumour-malignancy",
        "version": 1,
        "terms_sha256": version.terms_sha256,
        "supersedes": None,
    }
    assert events("problem.stage_changed")[-1].payload == {"from": "ratified", "to": "data_ready"}
    told = recipients(callbacks)
    assert "data-university-admin@example.org" in told  # validators are told too
    assert "north-hospital-steward@example.org" in told


def test_approval_with_a_stale_hash_is_refused(registered):
    version = registered.draft()
    with pytest.raises(ApplicationError, match="terms changed since you read them"):
        services.agreement_approve(
            actor=registered.a.steward, version=version, terms_sha256="0" * 64
        )
    assert not AgreementApproval.objects.exists()
    assert not events("agreement.approved")


def test_approval_of_an_amendment_with_the_previous_versions_hash_is_refused(ready):
    v1 = ready.agreement
    v2 = ready.draft(dp_max_epsilon=2.0)
    with pytest.raises(ApplicationError, match="reload version 2"):
        services.agreement_approve(actor=ready.a.steward, version=v2, terms_sha256=v1.terms_sha256)


def test_an_institution_approves_a_version_once(registered):
    version = registered.draft()
    approve(registered, registered.a, version)
    with pytest.raises(Conflict, match="North Hospital has already approved version 1"):
        approve(registered, registered.a, version)


@pytest.mark.parametrize("who", ["c.steward", "a.researcher", "a.admin", "b.viewer"])
def test_only_contributors_stewards_approve(registered, who):
    version = registered.draft()
    site, role = who.split(".")
    with pytest.raises(PermissionDenied):
        services.agreement_approve(
            actor=getattr(getattr(registered, site), role),
            version=version,
            terms_sha256=version.terms_sha256,
        )
    assert not AgreementApproval.objects.exists()


# --- Amending ----------------------------------------------------------------------------------


def test_amendment_supersedes_only_once_every_contributor_approved(ready):
    v1 = ready.agreement
    assert v1.status == AgreementVersion.Status.EFFECTIVE
    v2 = services.agreement_draft(
        actor=ready.a.admin,
        problem=ready.problem,
        change_note="Add differential privacy.",
        **terms(dp_max_epsilon=2.0),
    )
    assert v2.number == 2
    assert v2.status == AgreementVersion.Status.PENDING
    assert v2.change_note == "Add differential privacy."
    (amended,) = events("agreement.amended")
    assert amended.actor == ready.a.admin
    assert amended.payload["supersedes"] == 1
    assert amended.payload["version"] == 2

    approve(ready, ready.a, v2)
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert v1.status == AgreementVersion.Status.EFFECTIVE  # v1 still governs
    assert v2.status == AgreementVersion.Status.PENDING
    decision = services.run_policy_check(problem=ready.refresh(), config=RUN)
    assert decision.allowed
    assert decision.agreement == v1

    approve(ready, ready.b, v2)
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert v1.status == AgreementVersion.Status.SUPERSEDED
    assert v1.ended_at is not None
    assert v2.status == AgreementVersion.Status.EFFECTIVE
    assert events("agreement.effective")[-1].payload["supersedes"] == 1
    assert events("agreement.effective")[-1].payload["version"] == 2
    # v2 now governs: its privacy ceiling applies.
    decision = services.run_policy_check(problem=ready.refresh(), config=RUN)
    assert decision.agreement == v2
    assert not decision.allowed
    with pytest.raises(Conflict, match="superseded"):
        approve(ready, ready.a, v1)


def test_an_amendment_repeating_the_effective_terms_is_refused(ready):
    with pytest.raises(ApplicationError, match="terms of version 1, already in effect"):
        ready.draft()
    assert AgreementVersion.objects.count() == 1


def test_a_new_pending_draft_withdraws_the_earlier_one(ready):
    v2 = ready.draft(dp_max_epsilon=2.0)
    approve(ready, ready.a, v2)
    v3 = ready.draft(dp_max_epsilon=4.0)
    v2.refresh_from_db()
    assert v2.status == AgreementVersion.Status.WITHDRAWN
    assert v2.ended_at is not None
    assert v3.number == 3
    assert v3.status == AgreementVersion.Status.PENDING
    (withdrawn,) = events("agreement.withdrawn")
    assert withdrawn.actor == ready.a.researcher
    assert withdrawn.target_id == str(v2.pk)
    assert withdrawn.payload == {"problem": "tumour-malignancy", "version": 2}
    with pytest.raises(Conflict, match="Version 2 is withdrawn"):
        approve(ready, ready.b, v2)
    assert AgreementVersion.objects.get(number=1).status == AgreementVersion.Status.EFFECTIVE


# --- Declining ---------------------------------------------------------------------------------


def test_decline_needs_a_reason(registered, django_capture_on_commit_callbacks):
    version = registered.draft()
    with pytest.raises(ValidationError) as info:
        services.agreement_decline(actor=registered.b.steward, version=version, reason="  ")
    assert set(info.value.message_dict) == {"reason"}
    assert not AgreementApproval.objects.exists()

    with django_capture_on_commit_callbacks() as callbacks:
        declined = services.agreement_decline(
            actor=registered.b.steward, version=version, reason="Expiry is too far away."
        )
    assert declined.decision == AgreementApproval.Decision.DECLINED
    assert declined.reason == "Expiry is too far away."
    (event,) = events("agreement.declined")
    assert event.actor == registered.b.steward
    assert event.subject_institution == registered.b.institution
    assert event.payload == {
        "problem": "tumour-malignancy",
        "version": 1,
        "reason": "Expiry is too far away.",
    }
    # The proposer's admins and researchers hear why.
    assert recipients(callbacks) == {
        "north-hospital-admin@example.org",
        "north-hospital-researcher@example.org",
    }
    approve(registered, registered.a, version)
    version.refresh_from_db()
    assert version.status == AgreementVersion.Status.PENDING  # a decline holds it back
    # Changing one's mind: approving after declining makes it effective.
    approve(registered, registered.b, version)
    version.refresh_from_db()
    assert version.status == AgreementVersion.Status.EFFECTIVE


def test_an_effective_version_is_revoked_not_declined(ready):
    with pytest.raises(Conflict, match="revoke your approval instead"):
        services.agreement_decline(actor=ready.b.steward, version=ready.agreement, reason="No.")


# --- Revoking ----------------------------------------------------------------------------------


def test_revocation_excludes_the_party_and_tells_everyone(
    ready, django_capture_on_commit_callbacks
):
    assert services.run_policy_check(problem=ready.problem, config=RUN).allowed
    with django_capture_on_commit_callbacks() as callbacks:
        approval = services.agreement_revoke(
            actor=ready.b.steward, version=ready.agreement, reason="The ethics board objected."
        )
    assert approval.revoked_at is not None
    assert approval.revoked_by == ready.b.steward
    assert approval.revoke_reason == "The ethics board objected."
    assert not approval.is_standing_approval
    (event,) = events("agreement.revoked")
    assert event.actor == ready.b.steward
    assert event.subject_institution == ready.b.institution
    assert event.payload == {
        "problem": "tumour-malignancy",
        "version": 1,
        "reason": "The ethics board objected.",
    }
    # Admins, stewards and researchers of every active participant are told.
    told = recipients(callbacks)
    for site in ("north-hospital", "harbour-hospital", "data-university"):
        for role in ("admin", "steward", "researcher"):
            assert f"{site}-{role}@example.org" in told
    assert not any("viewer" in address for address in told)
    subjects = {subject for subject, _b, _t in emails(callbacks)}
    assert subjects == {
        "Harbour Hospital revoked its approval for Tumour malignancy from biopsy features"
    }

    # The version stays in force for the others, without B's data.
    ready.agreement.refresh_from_db()
    assert ready.agreement.status == AgreementVersion.Status.EFFECTIVE
    decision = services.run_policy_check(problem=ready.refresh(), config=RUN)
    assert [c.institution for c in decision.contributors] == [ready.a.institution]
    assert [(e.institution, e.reason) for e in decision.excluded] == [
        (ready.b.institution, "Harbour Hospital revoked its approval of agreement version 1.")
    ]
    assert not decision.allowed
    # Fewer than the minimum remain: the problem is no longer data ready.
    assert ready.problem.stage == Problem.Stage.RATIFIED
    assert events("problem.stage_changed")[-1].payload == {"from": "data_ready", "to": "ratified"}


def test_revocation_keeps_data_ready_while_enough_contributors_remain(ready):
    third = make_site("east-clinic", "East Clinic")
    services.participation_request(actor=third.admin, problem=ready.problem, role="contributor")
    services.participation_accept(
        actor=ready.a.admin,
        participation=ready.problem.participations.get(institution=third.institution),
    )
    services.problem_ratify(actor=third.researcher, problem=ready.refresh(), revision=1)
    services.dataset_register(
        actor=third.steward, problem=ready.refresh(), **description("east.csv")
    )
    approve(ready, third, ready.agreement)  # a late contributor approves the effective version
    ready.keys(third)
    services.agreement_revoke(actor=ready.b.steward, version=ready.agreement, reason="Paused.")
    problem = ready.refresh()
    assert problem.stage == Problem.Stage.DATA_READY
    decision = services.run_policy_check(problem=problem, config=RUN)
    assert decision.allowed
    assert {c.institution for c in decision.contributors} == {
        ready.a.institution,
        third.institution,
    }


def test_revocation_needs_a_reason_and_a_standing_approval(ready):
    with pytest.raises(ValidationError):
        services.agreement_revoke(actor=ready.b.steward, version=ready.agreement, reason="")
    services.agreement_revoke(actor=ready.b.steward, version=ready.agreement, reason="Paused.")
    with pytest.raises(Conflict, match="no standing approval of version 1"):
        services.agreement_revoke(actor=ready.b.steward, version=ready.agreement, reason="Again.")
    with pytest.raises(PermissionDenied):
        services.agreement_revoke(actor=ready.c.steward, version=ready.agreement, reason="Me?")
    assert len(events("agreement.revoked")) == 1


def test_a_revoking_party_may_approve_again(ready):
    services.agreement_revoke(actor=ready.b.steward, version=ready.agreement, reason="Paused.")
    assert ready.refresh().stage == Problem.Stage.RATIFIED
    approve(ready, ready.b, ready.agreement)
    assert ready.refresh().stage == Problem.Stage.DATA_READY
    assert services.run_policy_check(problem=ready.problem, config=RUN).allowed


def test_a_pending_version_takes_effect_when_the_last_holdout_leaves(registered):
    version = registered.draft()
    approve(registered, registered.a, version)
    services.participation_leave(actor=registered.b.admin, problem=registered.problem)
    version.refresh_from_db()
    assert version.status == AgreementVersion.Status.EFFECTIVE
    (event,) = events("agreement.effective")
    assert event.actor == registered.b.admin
    # One contributor is not enough to train: ratified, not data ready.
    assert registered.refresh().stage == Problem.Stage.RATIFIED
