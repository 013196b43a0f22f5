"""The coordinator's hot path: what one answer costs in round trips to the database.

An answer that does not end its round is one read (the dispatch it names), one conditional
update and one check for answers still awaited. The last answer closes the round and opens the
next one in the same transaction, with the model just stored taken from memory.
"""

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from projects.models import Round
from projects.services import runs
from projects.services.runs import dispatch
from tests.projects.federation_setup import SITES, answer, seed_medical

User = get_user_model()


@pytest.fixture
def running(db, tmp_path: Path):
    problem = seed_medical(tmp_path)
    actor = User.objects.get(username="kaohsiung-harbour-hospital-researcher")
    run = runs.run_launch(
        actor=actor, problem=problem, config=runs.LaunchConfig(rounds=3, min_contributors=2)
    )
    with dispatch.in_process():
        runs.run_advance(run.pk)
        # Round 1 warms the caches every round after it finds warm.
        for slug in SITES:
            runs.update_receive(answer(run, slug, 1))
        yield run


def test_an_answer_that_leaves_its_round_open_costs_three_statements(
    running, django_assert_num_queries
):
    wires = [answer(running, slug, 2) for slug in SITES]
    for wire in wires[:-1]:
        with django_assert_num_queries(3):
            runs.update_receive(wire)


def test_the_last_answer_closes_the_round_and_opens_the_next_in_one_transaction(
    running, django_assert_max_num_queries
):
    wires = [answer(running, slug, 2) for slug in SITES]
    for wire in wires[:-1]:
        runs.update_receive(wire)
    # Closing (aggregate, store, audit) and opening (policy, rows, audit) together: without the
    # shared transaction and the run taken with the round, it is two transactions and more reads.
    with django_assert_max_num_queries(24) as captured:
        runs.update_receive(wires[-1])
    statements = [q["sql"] for q in captured.captured_queries]
    assert sum(s.startswith("SAVEPOINT") for s in statements) == 1
    assert Round.objects.get(run=running, number=2).status == Round.Status.SUCCEEDED
    assert Round.objects.get(run=running, number=3).status == Round.Status.RUNNING
