"""Verify and release through the services: the global model's own figures, validation where
the data lives, certification against the ratified bar, release, the model card and the bundle."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command

from alliance.models import AuditEvent
from portal.common.errors import ApplicationError, Conflict
from projects.demo import HOLDOUT_FILE, UNIVERSITY
from projects.federation.site import evaluate_on_file, site_rng, split
from projects.models import (
    Certification,
    ContributionStudy,
    Evaluation,
    Problem,
    ProblemRevision,
    Release,
    TrainingRun,
)
from projects.services import runs
from projects.services.bundle import bundle_bytes
from projects.services.model_card import model_card, model_card_markdown
from projects.services.release import model_release
from projects.services.verification import validation_request
from tests.projects.federation_setup import SITES, answer_evaluations, seed_medical, train

User = get_user_model()
RESEARCHER = "kaohsiung-harbour-hospital-researcher"
PROPOSER_ADMIN = "kaohsiung-harbour-hospital-admin"


@pytest.fixture
def medical(db, tmp_path: Path) -> Problem:
    return seed_medical(tmp_path)


def launch(problem: Problem, **config) -> TrainingRun:
    actor = User.objects.get(username=RESEARCHER)
    return runs.run_launch(actor=actor, problem=problem, config=runs.LaunchConfig(**config))


@pytest.fixture
def trained(medical) -> TrainingRun:
    run = launch(medical, rounds=4)
    train(run)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED
    return run


def holdout_scores(run: TrainingRun, params) -> dict[str, float]:
    spec = run.spec
    return evaluate_on_file(
        run.model_family,
        run.family_options,
        params,
        path=Path(settings.SITE_DATA_ROOT) / UNIVERSITY / HOLDOUT_FILE,
        features=spec["features"],
        label=spec["label"],
        classes=spec["classes"],
        feature_ranges=[tuple(r) for r in spec["feature_ranges"]],
    )


def test_each_round_scores_the_model_it_started_from_and_that_model_keeps_them(trained):
    rounds = list(trained.round_set.order_by("number"))
    models = {m.round_number: m for m in trained.models.all()}
    for r in rounds:
        assert set(r.global_metrics) >= {"accuracy", "roc_auc", "loss"}
        assert models[r.number - 1].metrics == r.global_metrics
    # The initial model's figures equal scoring it directly on each site's validation rows.
    task = runs.round_task(trained, 1, "")
    params = runs.model_params(models[0])
    scored, weights = [], []
    for slug in SITES:
        dataset = trained.problem.datasets.get(institution__slug=slug, purpose="training")
        path = Path(settings.SITE_DATA_ROOT) / slug / dataset.site_key
        from projects.federation.site import read_site_file

        X, y = read_site_file(
            path,
            features=task.features,
            label=task.label,
            classes=task.classes,
            feature_ranges=task.feature_ranges,
        )
        _train, rows = split(len(X), task.validation_share, site_rng(trained.seed, slug, "split"))
        from projects.federation.families import get_family

        family = get_family(trained.model_family, trained.family_options)
        scored.append(family.evaluate(params, X[rows], y[rows])["accuracy"])
        weights.append(len(rows))
    expected = float(np.average(scored, weights=weights))
    assert models[0].metrics["accuracy"] == pytest.approx(expected, abs=1e-12)


def test_the_final_model_is_scored_everywhere_and_certified_on_the_validators_figures(trained):
    final = trained.models.get(round_number=4)
    asked = Evaluation.objects.filter(model=final)
    assert sorted(asked.values_list("kind", flat=True)) == ["evaluate"] * 3 + ["validate"]
    answer_evaluations(final)
    final.refresh_from_db()
    assert set(final.metrics) >= {"roc_auc", "accuracy"} and final.evaluated_rows > 0
    validator = Evaluation.objects.get(model=final, kind="validate")
    assert validator.status == "done"
    direct = holdout_scores(trained, runs.model_params(final))
    assert validator.metrics["roc_auc"] == pytest.approx(direct["roc_auc"], abs=1e-12)
    assert validator.rows == direct["rows"]
    certification = Certification.objects.get(model=final)
    revision = ProblemRevision.objects.get(problem=trained.problem, number=trained.revision)
    assert certification.metric == revision.metric == "roc_auc"
    assert certification.certified is (direct["roc_auc"] >= revision.threshold)
    figures = certification.figures[UNIVERSITY]
    assert figures["value"] == validator.metrics["roc_auc"] and figures["rows"] == validator.rows
    event = AuditEvent.objects.get(action__in=["model.certified", "model.not_certified"])
    assert event.payload["figures"] == certification.figures


@pytest.mark.parametrize("bar", ["above", "below"])
def test_certified_exactly_when_the_threshold_is_met(trained, bar):
    final = trained.models.get(round_number=4)
    value = holdout_scores(trained, runs.model_params(final))["roc_auc"]
    threshold = value - 1e-9 if bar == "below" else value + 1e-9
    ProblemRevision.objects.filter(problem=trained.problem, number=trained.revision).update(
        threshold=threshold
    )
    answer_evaluations(final)
    certification = Certification.objects.get(model=final)
    assert certification.certified is (bar == "below")
    if bar == "above":
        assert "short of" in certification.reasons[0]
        assert AuditEvent.objects.filter(action="model.not_certified").exists()


def test_stages_move_forward_and_never_skip(medical):
    assert medical.stage == Problem.Stage.DATA_READY
    run = launch(medical, rounds=1)
    medical.refresh_from_db()
    assert medical.stage == Problem.Stage.TRAINING
    train(run)
    final = run.models.get(round_number=1)
    ProblemRevision.objects.filter(problem=medical, number=run.revision).update(threshold=0.0)
    answer_evaluations(final)
    medical.refresh_from_db()
    assert medical.stage == Problem.Stage.CERTIFIED
    model_release(actor=User.objects.get(username=PROPOSER_ADMIN), model=final)
    medical.refresh_from_db()
    assert medical.stage == Problem.Stage.RELEASED
    moves = [
        (e.payload["from"], e.payload["to"])
        for e in AuditEvent.objects.filter(
            action="problem.stage_changed", target_id=str(medical.pk)
        ).order_by("seq")
    ][-3:]
    assert moves == [
        ("data_ready", "training"),
        ("training", "certified"),
        ("certified", "released"),
    ]


def test_release_is_refused_when_not_certified_and_for_the_wrong_role(trained):
    final = trained.models.get(round_number=4)
    admin = User.objects.get(username=PROPOSER_ADMIN)
    with pytest.raises(ApplicationError):
        model_release(actor=admin, model=final)  # not scored yet
    ProblemRevision.objects.filter(problem=trained.problem, number=trained.revision).update(
        threshold=2.0
    )
    answer_evaluations(final)
    with pytest.raises(ApplicationError, match="not certified"):
        model_release(actor=admin, model=final)
    Certification.objects.filter(model=final).update(certified=True)
    for username in (RESEARCHER, "taipei-north-hospital-admin", "staff"):
        with pytest.raises(PermissionDenied):
            model_release(actor=User.objects.get(username=username), model=final)
    release = model_release(actor=admin, model=final, note="First release.")
    assert release.terms_sha256 == trained.agreement.terms_sha256
    assert AuditEvent.objects.get(action="model.released").payload["download_scope"] == (
        trained.agreement.download_scope
    )
    with pytest.raises(Conflict):
        model_release(actor=admin, model=final)
    assert Release.objects.count() == 1


def test_validation_on_demand_for_any_version(trained):
    earlier = trained.models.get(round_number=2)
    researcher = User.objects.get(username=RESEARCHER)
    (asked,) = validation_request(actor=researcher, model=earlier)
    assert asked.institution.slug == UNIVERSITY
    with pytest.raises(ApplicationError, match="already"):
        validation_request(actor=researcher, model=earlier)
    with pytest.raises(PermissionDenied):
        validation_request(actor=User.objects.get(username="metro-taipei-viewer"), model=earlier)
    answer_evaluations(earlier)
    assert Certification.objects.filter(model=earlier).exists()


def _certified_and_released(trained):
    final = trained.models.get(round_number=4)
    ProblemRevision.objects.filter(problem=trained.problem, number=trained.revision).update(
        threshold=0.5
    )
    answer_evaluations(final)
    model_release(actor=User.objects.get(username=PROPOSER_ADMIN), model=final)
    final.refresh_from_db()
    return final


def test_the_card_is_built_from_the_records(trained):
    final = _certified_and_released(trained)
    card = model_card(final)
    assert card["model_details"]["sha256"] == final.sha256
    assert card["training"]["terms_sha256"] == trained.agreement.terms_sha256
    assert [r["started_from"] for r in card["evaluation"]["per_round"]] == [
        r.global_metrics for r in trained.round_set.order_by("number")
    ]
    (validator,) = card["evaluation"]["validators"]
    assert validator["metrics"] == Evaluation.objects.get(model=final, kind="validate").metrics
    assert card["evaluation"]["certified"] is True
    assert card["release"]["terms_sha256"] == trained.agreement.terms_sha256
    assert next(iter(card["evaluation"]["final_model"])) == "roc_auc"  # the ratified metric first
    actions = [e["action"] for e in card["provenance"]["events"]]
    assert actions[0] == "run.launched" and "model.certified" in actions
    assert actions[-1] == "model.released"
    text = model_card_markdown(card)
    assert final.sha256 in text and "## Provenance" in text
    # The options it was trained with, and how its inputs are scaled to apply it.
    assert card["training"]["options"] == {
        "l2": 0.003,
        "validation_share": 0.2,
        "feature_scaling": "ranges",
    }
    inputs = card["model_details"]["inputs"]
    assert inputs["scaling"] == "ranges"
    assert inputs["feature_ranges"] == trained.spec["feature_ranges"]


def _bundle(trained, tmp_path) -> Path:
    final = _certified_and_released(trained)
    path = tmp_path / "bundle.zip"
    path.write_bytes(bundle_bytes(final))
    return path


def _rewrite(path: Path, name: str, change) -> None:
    with zipfile.ZipFile(path) as archive:
        files = {n: archive.read(n) for n in archive.namelist()}
    files[name] = change(files[name])
    if name != "manifest.json":
        import hashlib

        manifest = json.loads(files["manifest.json"])
        manifest["files"][name] = hashlib.sha256(files[name]).hexdigest()
        files["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for n, data in files.items():
            archive.writestr(n, data)


def test_verify_bundle_passes_an_intact_bundle(trained, tmp_path):
    path = _bundle(trained, tmp_path)
    out = io.StringIO()
    call_command("verify_bundle", str(path), stdout=out)
    assert "The bundle holds" in out.getvalue()


def _edit_event(data: bytes, action: str, change) -> bytes:
    lines = []
    for line in data.decode().splitlines():
        record = json.loads(line)
        if record.get("document", {}).get("action") == action:
            change(record)
        lines.append(json.dumps(record))
    return ("\n".join(lines) + "\n").encode()


TAMPERINGS = {
    "model": ("model.npy", lambda b: b[:-8] + b"\x00" * 8, "model.npy is not the model"),
    "card figure": (
        "card.json",
        lambda b: b.replace(b'"certified": true', b'"certified": false'),
        "verdict differs",
    ),
    "card options": (
        "card.json",
        lambda b: b.replace(b'"validation_share": 0.2', b'"validation_share": 0.3'),
        "training options are not what event",
    ),
    "event content": (
        "events.jsonl",
        lambda b: _edit_event(
            b, "model.certified", lambda r: r["document"]["payload"].update(threshold=0.1)
        ),
        "was altered",
    ),
    "event removed": (
        "events.jsonl",
        lambda b: b"\n".join(b.splitlines()[:2] + b.splitlines()[3:]) + b"\n",
        "missing from the chain",
    ),
}


@pytest.mark.parametrize("part", sorted(TAMPERINGS))
def test_verify_bundle_fails_each_tampered_part(trained, tmp_path, part):
    path = _bundle(trained, tmp_path)
    name, change, problem = TAMPERINGS[part]
    _rewrite(path, name, change)
    with pytest.raises(CommandError) as failed:
        call_command("verify_bundle", str(path))
    assert failed.value.returncode == 1
    assert problem in str(failed.value)


def test_a_researcher_reads_the_verdict_and_the_card_and_the_admin_releases(trained, client):
    final = trained.models.get(round_number=4)
    ProblemRevision.objects.filter(problem=trained.problem, number=trained.revision).update(
        threshold=0.5
    )
    answer_evaluations(final)
    slug, n = trained.problem.slug, trained.number
    client.force_login(User.objects.get(username=RESEARCHER))
    run_page = client.get(f"/problems/{slug}/runs/{n}/").content.decode()
    assert "Certified: ROC AUC" in run_page and "held-out rows at National Data Science" in run_page
    model_page = client.get(f"/problems/{slug}/runs/{n}/models/4/").content.decode()
    assert "Ask the validators to score this model" in model_page
    assert "Release this model" not in model_page  # the proposer's admin releases
    card = client.get(f"/problems/{slug}/runs/{n}/models/4/card.json").json()
    assert card["model_details"]["sha256"] == final.sha256
    markdown = client.get(f"/problems/{slug}/runs/{n}/models/4/card.md")
    assert markdown["Content-Type"].startswith("text/markdown")
    assert client.get(f"/problems/{slug}/runs/{n}/models/4/card.pdf").status_code == 404
    bundle = client.get(f"/problems/{slug}/runs/{n}/models/4/bundle.zip")
    assert bundle.status_code == 200 and bundle["Content-Type"] == "application/zip"
    assert client.get(f"/problems/{slug}/runs/{n}/models/4/release/").status_code == 403

    client.force_login(User.objects.get(username=PROPOSER_ADMIN))
    page = client.get(f"/problems/{slug}/runs/{n}/models/4/release/").content.decode()
    assert "The terms of agreement version 1 govern it" in page
    response = client.post(f"/problems/{slug}/runs/{n}/models/4/release/", {"note": "v1"})
    assert response.status_code == 302
    assert Release.objects.get().model == final
    validator_steward = User.objects.get(username=f"{UNIVERSITY}-steward")
    client.force_login(validator_steward)
    evaluation_page = client.get(f"/problems/{slug}/runs/{n}/models/4/").content.decode()
    assert "Held-out validation" in evaluation_page and "Scored" in evaluation_page


def test_the_api_asks_the_validators_and_releases(trained, api_as):
    slug, n = trained.problem.slug, trained.number
    base = f"/api/v1/problems/{slug}/runs/{n}/models/4/"
    researcher = User.objects.get(username=RESEARCHER)
    detail = api_as(researcher).get(base).json()
    assert [e["kind"] for e in detail["evaluations"]] == ["evaluate"] * 3 + ["validate"]
    assert (
        api_as(User.objects.get(username="metro-taipei-viewer"))
        .post(f"{base}validate/")
        .status_code
        == 403
    )
    assert api_as(researcher).post(f"{base}validate/").status_code == 400  # already scoring
    ProblemRevision.objects.filter(problem=trained.problem, number=trained.revision).update(
        threshold=0.5
    )
    answer_evaluations(trained.models.get(round_number=4))
    assert api_as(researcher).get(base).json()["certification"]["certified"] is True
    assert api_as(researcher).post(f"{base}release/", {}).status_code == 403
    admin = User.objects.get(username=PROPOSER_ADMIN)
    response = api_as(admin).post(f"{base}release/", {"note": "v1"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["release"]["agreement_version"] == trained.agreement.number
    assert api_as(admin).post(f"{base}release/", {}, format="json").status_code == 409
    card = api_as(researcher).get(f"{base}card/").json()
    assert card["release"]["terms_sha256"] == trained.agreement.terms_sha256


def test_the_comparison_page_puts_runs_side_by_side(medical, client):
    first, second = launch(medical, rounds=2), launch(medical, rounds=3, seed=7)
    for run in (first, second):
        train(run)
        answer_evaluations(run.models.get(round_number=run.rounds))
    client.force_login(User.objects.get(username=RESEARCHER))
    page = client.get(f"/problems/{medical.slug}/runs/compare/").content.decode()
    assert page.index("Run 2") < page.index("Run 1")
    chart = json.loads(page.split('id="compare-chart" type="application/json">')[1].split("<")[0])
    assert [d["label"] for d in chart["datasets"]] == ["Run 2", "Run 1"]
    assert chart["labels"] == ["1", "2", "3"] and chart["datasets"][1]["data"][2] is None
    assert "Certified" in page or "Not certified" in page
    only = client.get(f"/problems/{medical.slug}/runs/compare/?runs=1").content.decode()
    assert "Run 2</a>" not in only
    bad = client.get(f"/problems/{medical.slug}/runs/compare/?runs=x", follow=True)
    assert bad.status_code == 200 and "takes run numbers" in bad.content.decode()


def test_each_contributors_share_of_a_certified_model(trained):
    final = trained.models.get(round_number=4)
    ProblemRevision.objects.filter(problem=trained.problem, number=trained.revision).update(
        threshold=0.5
    )
    answer_evaluations(final)
    study = ContributionStudy.objects.get(model=final)
    assert study.status == "measured" and study.method.startswith("exact")
    assert len(study.plan["rounds"]) == 4
    assert all(len(r["coalitions"]) == 7 for r in study.plan["rounds"])  # 2^3 - 1 a round
    shares = {c.institution.slug: c for c in study.contributions.all()}
    assert set(shares) == set(SITES)
    # Efficiency: the shares add up to the rounds' gains, as the validator scored them.
    (scored,) = Evaluation.objects.filter(model=final, kind="score")
    gains = 0.0
    for r in study.plan["rounds"]:
        everyone = next(sha for sites, sha in r["coalitions"] if len(sites) == 3)
        gains += scored.metrics[everyone]["roc_auc"] - scored.metrics[r["start"]]["roc_auc"]
    assert sum(c.shapley for c in shares.values()) == pytest.approx(gains, abs=1e-9)
    assert all(c.leave_one_out is not None and c.rounds == 4 for c in shares.values())
    # The coalition of everyone is FedAvg of the real updates: the round's own model.
    last = study.plan["rounds"][-1]
    assert next(sha for sites, sha in last["coalitions"] if len(sites) == 3) == final.sha256
    event = AuditEvent.objects.get(action="model.contributions_measured")
    assert event.payload["shapley"] == {k: round(c.shapley, 6) for k, c in sorted(shares.items())}
    assert len(model_card(final)["contributions"]["shares"]) == 3


def test_the_shares_are_shown_and_exported_beside_the_revenue_terms(trained, client, api_as):
    final = trained.models.get(round_number=4)
    ProblemRevision.objects.filter(problem=trained.problem, number=trained.revision).update(
        threshold=0.5
    )
    answer_evaluations(final)
    researcher = User.objects.get(username=RESEARCHER)
    client.force_login(researcher)
    base = f"/problems/{trained.problem.slug}/runs/{trained.number}/models/4/"
    page = client.get(base).content.decode()
    assert "Each contributor's share" in page and "contributions.csv" in page
    rows = client.get(f"{base}contributions.csv").content.decode().splitlines()
    assert rows[0].startswith("institution,shapley,leave_one_out,share")
    assert len([r for r in rows[1:4] if r.split(",")[0] in SITES]) == 3
    assert any(r.startswith("revenue_sharing,") for r in rows)
    api = api_as(researcher).get(f"/api/v1{base.replace('/problems/', '/problems/', 1)}")
    assert len(api.json()["contributions"]) == 3


def test_no_share_is_measured_under_secure_aggregation(trained):
    final = trained.models.get(round_number=4)
    type(trained.agreement).objects.filter(pk=trained.agreement.pk).update(secure_aggregation=True)
    ProblemRevision.objects.filter(problem=trained.problem, number=trained.revision).update(
        threshold=0.5
    )
    answer_evaluations(final)
    study = ContributionStudy.objects.get(model=final)
    assert study.status == "not_measured" and "secure aggregation" in study.reason
    assert not Evaluation.objects.filter(model=final, kind="score").exists()
