"""seed_bench: a small bench alliance, its counts, permissions and a valid audit chain."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count

from alliance.models import AuditEvent, Institution, Membership
from alliance.services.audit import audit_record, audit_verify
from projects.models import Problem, Round, SiteRound, TrainingRun
from projects.permissions import access_problem

pytestmark = pytest.mark.django_db(transaction=False)


def seed(*extra: str) -> str:
    out = io.StringIO()
    call_command(
        "seed_bench", "--institutions", "6", "--rounds", "40", "--events", "300", *extra, stdout=out
    )
    return out.getvalue()


def test_seeds_the_requested_numbers_with_a_valid_chain():
    output = seed()

    assert Institution.objects.count() == 6
    assert Round.objects.count() == 40
    assert AuditEvent.objects.count() == 300
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(
        range(1, 301)
    )
    assert audit_verify().ok
    assert audit_verify().count == 300
    assert "seeded in" in output
    # Every lifecycle stage, and 3 to 6 sites in every round.
    assert set(Problem.objects.values_list("stage", flat=True)) == set(Problem.Stage.values)
    per_round = Round.objects.annotate(n=Count("sites")).values_list("n", flat=True)
    assert min(per_round) >= 3
    assert max(per_round) <= 6
    assert SiteRound.objects.filter(status=SiteRound.Status.CONTRIBUTED).exists()
    assert Membership.objects.filter(institution__slug="bench-001").count() == 4


def test_the_chain_goes_on_through_audit_record_after_the_seed():
    from django.db import transaction

    seed()
    with transaction.atomic():
        event = audit_record(actor=None, action="bench.checked")

    assert event.seq == 301
    assert audit_verify().ok


def test_people_see_what_their_participations_grant():
    seed()
    run = TrainingRun.objects.select_related("problem", "problem__proposer").first()
    researcher = Membership.objects.get(institution=run.problem.proposer, role="researcher").user

    assert researcher.check_password("bench-password")
    assert access_problem(researcher, run.problem.slug) == run.problem
    assert researcher.has_perm("projects.change_problem", run.problem)


def test_refuses_a_database_that_is_not_empty_unless_forced():
    seed()
    with pytest.raises(CommandError):
        seed()

    seed("--force", "--seed", "2")

    assert Institution.objects.count() == 12
    assert Institution.objects.filter(slug="bench2-001").exists()
    assert AuditEvent.objects.count() == 600
    assert audit_verify().ok
