"""``seed_demo``: problems in every state, built through the services; a second run is a no-op."""

import csv
import hashlib
import io
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse

from alliance.models import AuditEvent
from alliance.services import audit_verify
from projects.demo import BREAST_CANCER, CROWDING, DIABETES, SPINDLE
from projects.models import (
    AgreementVersion,
    Dataset,
    Participation,
    PrivacySpend,
    Problem,
    ProblemRevision,
    SiteKey,
    SiteRound,
    TrainingRun,
)
from projects.permissions import problem_visible_to
from projects.run_views import run_url
from projects.selectors import inbox_for
from projects.services.privacy import privacy_ledger

pytestmark = pytest.mark.django_db

User = get_user_model()
HOSPITALS = ("taipei-north-hospital", "kaohsiung-harbour-hospital", "taichung-medical-centre")
UNIVERSITY = "national-data-science-university"


def _seed(settings, var_dir: Path) -> str:
    settings.VAR_DIR = var_dir
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def _user(username: str):
    return User.objects.get(username=username)


def _inbox(username: str) -> list[tuple[str, str]]:
    return [(item.kind, item.text) for item in inbox_for(_user(username))]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(var_dir: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(var_dir)): path.read_bytes()
        for path in sorted((var_dir / "sites").glob("*/*.csv"))
    }


def test_seed_demo_builds_problems_in_every_state(settings, tmp_path):
    output = _seed(settings, tmp_path)

    problems = {p.slug: p for p in Problem.objects.all()}
    assert set(problems) == {BREAST_CANCER, DIABETES, SPINDLE, CROWDING}
    medical, spindle, crowding = problems[BREAST_CANCER], problems[SPINDLE], problems[CROWDING]
    # Its first run trained, was certified on the university's held-out rows and released.
    assert medical.stage == Problem.Stage.RELEASED
    (run,) = medical.runs.all()
    final = run.models.get(round_number=run.rounds)
    assert run.status == "succeeded" and final.certification.certified
    assert final.certification.figures[UNIVERSITY]["rows"] > 0
    assert final.release.released_by.username == "kaohsiung-harbour-hospital-admin"
    assert (medical.current_revision, medical.ratified_revision) == (2, 2)
    assert spindle.stage == Problem.Stage.PROPOSED
    assert (spindle.current_revision, spindle.ratified_revision) == (2, 1)
    assert crowding.stage == Problem.Stage.RATIFIED
    assert crowding.visibility == Problem.Visibility.INVITATION
    for problem in problems.values():
        assert problem.title in output

    # The medical problem: three hospitals, a validator, revision 2 discussed and ratified by all.
    roles = {
        p.institution.slug: (p.role, p.status)
        for p in Participation.objects.filter(problem=medical).select_related("institution")
    }
    assert roles == {
        **{slug: ("contributor", "active") for slug in HOSPITALS},
        UNIVERSITY: ("validator", "active"),
    }
    second = ProblemRevision.objects.get(problem=medical, number=2)
    assert second.threshold == 0.95
    assert second.metric == "roc_auc"
    assert second.change_note
    assert 2 <= second.comments.count() <= 3
    assert second.ratifications.count() == 4
    features = [f for f in second.features if f["name"] != "diagnosis"]
    assert len(features) == 30
    assert all(f["type"] == "numeric" and f["unit"] == "" and f["min"] == 0 for f in features)
    assert (features[0]["name"], features[0]["max"]) == ("mean radius", 30.0)
    label = next(f for f in second.features if f["name"] == "diagnosis")
    assert (label["type"], label["categories"]) == ("categorical", ["0", "1"])
    assert "1 - target" in medical.summary

    # Agreements: medical v1 effective; manufacturing v1 effective with v2 pending.
    statuses = {
        (v.problem.slug, v.number): v.status
        for v in AgreementVersion.objects.select_related("problem")
    }
    assert statuses == {
        (BREAST_CANCER, 1): AgreementVersion.Status.EFFECTIVE,
        (DIABETES, 1): AgreementVersion.Status.EFFECTIVE,
        (SPINDLE, 1): AgreementVersion.Status.EFFECTIVE,
        (SPINDLE, 2): AgreementVersion.Status.PENDING,
    }
    terms = AgreementVersion.objects.get(problem=medical)
    assert terms.model_families == ["logistic_regression"]
    assert terms.min_contributors >= 2
    assert (terms.download_scope, terms.commercial_use) == ("participants", False)
    assert terms.approvals.filter(decision="approved").count() == 3
    amendment = AgreementVersion.objects.get(problem=spindle, number=2)
    assert "mlp" in amendment.model_families
    assert [a.institution.slug for a in amendment.approvals.all()] == ["hsinchu-precision-works"]

    # Datasets: the hashes are the files' hashes; the held-out set stays at the university,
    # registered by its steward for validation only.
    datasets = Dataset.objects.select_related("institution", "problem")
    training = [d for d in datasets if d.problem == medical and d.purpose == "training"]
    assert sorted(d.institution.slug for d in training) == sorted(HOSPITALS)
    (held_out,) = [d for d in datasets if d.problem == medical and d.purpose == "holdout"]
    assert held_out.institution.slug == UNIVERSITY
    assert datasets.filter(problem=spindle).count() == 2
    sizes = set()
    for dataset in datasets:
        path = tmp_path / "sites" / dataset.institution.slug / dataset.site_key
        assert dataset.sha256 == _sha256(path), path
        if dataset.problem == medical and dataset.purpose == "training":
            assert dataset.personal_data and dataset.legal_basis
            assert dataset.revision == 2
            sizes.add(dataset.row_count)
    assert len(sizes) == 3  # uneven shards
    files = [tmp_path / "sites" / slug / "breast_cancer.csv" for slug in HOSPITALS]
    files.append(tmp_path / "sites" / UNIVERSITY / "breast_cancer_holdout.csv")
    malignant = 0
    for path in files:
        with path.open(newline="") as handle:
            malignant += sum(row["diagnosis"] == "1" for row in csv.DictReader(handle))
    assert malignant == 212  # scikit-learn's malignant cases, now diagnosis 1

    # Invitation only: invisible to a non-participant, visible to the invited university.
    for username, sees in (
        ("island-commercial-bank-admin", False),
        ("taipei-north-hospital-researcher", False),
        (f"{UNIVERSITY}-admin", True),
        ("metro-taipei-viewer", True),
    ):
        visible = problem_visible_to(_user(username)).filter(slug=CROWDING).exists()
        assert visible is sees, username

    # The inboxes tell each person what waits for them.
    assert _inbox("tainan-assembly-company-steward") == [
        ("agreement", "Approve agreement version 2 of Spindle failure within seven days")
    ]
    for role in ("admin", "researcher"):
        assert _inbox(f"tainan-assembly-company-{role}") == [
            ("ratify", "Ratify revision 2 of Spindle failure within seven days")
        ]
    (request,) = _inbox("hsinchu-precision-works-admin")
    assert request[0] == "request" and "National Data Science University" in request[1]
    (invitation,) = _inbox(f"{UNIVERSITY}-admin")
    assert invitation[0] == "invitation"
    assert "Platform crowding in the next 15 minutes" in invitation[1]
    for slug in ("kaohsiung-harbour-hospital", "taichung-medical-centre"):
        for role in ("admin", "steward", "researcher", "viewer"):
            assert _inbox(f"{slug}-{role}") == [], f"{slug}-{role}"

    assert audit_verify().ok


def test_seed_demo_has_a_secure_and_differentially_private_run_with_its_ledger(
    settings, tmp_path, client
):
    """The second medical problem: its agreement requires secure aggregation and sets an
    epsilon ceiling; its one run was both, and every hospital's ledger has its spends."""
    _seed(settings, tmp_path)
    diabetes = Problem.objects.get(slug=DIABETES)
    assert diabetes.sector == "medicine"
    terms = AgreementVersion.objects.get(problem=diabetes, status="effective")
    assert terms.secure_aggregation and terms.dp_max_epsilon == 8.0
    assert sorted(a.institution.slug for a in terms.approvals.all()) == sorted(HOSPITALS)
    datasets = list(Dataset.objects.filter(problem=diabetes).select_related("institution"))
    assert sorted(d.institution.slug for d in datasets) == sorted(HOSPITALS)
    for dataset in datasets:
        path = tmp_path / "sites" / dataset.institution.slug / dataset.site_key
        assert dataset.sha256 == _sha256(path) and dataset.personal_data

    (run,) = diabetes.runs.all()
    assert run.status == TrainingRun.Status.SUCCEEDED
    assert run.secure_aggregation
    dp = run.spec["dp"]
    assert (dp["epsilon"], dp["ceiling"]) == (3.0, 8.0)
    rounds = list(run.round_set.order_by("number"))
    assert len(rounds) == run.rounds
    for round_ in rounds:
        seen = round_.secagg["seen"]
        assert seen["survivors"] == sorted(HOSPITALS) and seen["masked_sum_sha256"]
    # The coordinator kept no individual update: masked vectors' hashes and the sum only.
    for site in SiteRound.objects.filter(round__run=run):
        assert site.update == "" and site.sample_count is None and site.metrics == {}
        assert set(site.secagg) == {"advertise", "masked"}

    # One spend per dataset per round, each composed onto the ones before, within the run's
    # epsilon; the ledger reads the same.
    spends = PrivacySpend.objects.filter(run=run)
    assert spends.count() == run.rounds * len(HOSPITALS)
    for dataset in datasets:
        own = list(spends.filter(dataset=dataset).order_by("round_number"))
        assert [s.round_number for s in own] == list(range(1, run.rounds + 1))
        assert own[0].epsilon_total < own[-1].epsilon_total <= 3.0
        (row,) = [r for r in privacy_ledger(dataset.institution) if r.dataset == dataset]
        assert row.spent == own[-1].epsilon_total and row.ceiling == 8.0
        assert row.spends == row.secure_spends == run.rounds

    # Audited: the launch (secure and private), each round's close (what the coordinator
    # saw), each spend (secure, resting on the masked input's hash).
    launched = AuditEvent.objects.get(action="run.launched", payload__problem=DIABETES)
    assert launched.payload["secure_aggregation"] is True
    assert launched.payload["differential_privacy"]["epsilon"] == 3.0
    closed = AuditEvent.objects.filter(action="round.closed", payload__problem=DIABETES)
    assert closed.count() == run.rounds
    assert all("updates" not in e.payload and e.payload["secure_aggregation"] for e in closed)
    spent = AuditEvent.objects.filter(action="privacy.spent", payload__problem=DIABETES)
    assert spent.count() == run.rounds * len(HOSPITALS)
    assert all(e.payload["secure_aggregation"] is True for e in spent)
    assert audit_verify().ok

    # A newcomer finds both on the pages.
    client.force_login(_user("taichung-medical-centre-steward"))
    page = client.get(run_url(run)).content.decode()
    assert "Securely aggregated and differentially private." in page
    assert "Differential privacy: epsilon spent per dataset" in page
    ledger_page = client.get(reverse("privacy-ledger")).content.decode()
    assert "Diabetes follow-up, Taichung Medical Centre" in ledger_page


def test_seed_demo_twice_changes_nothing(settings, tmp_path):
    first_output = _seed(settings, tmp_path / "one")
    events = AuditEvent.objects.count()
    rows = {
        model: model.objects.count()
        for model in (
            Problem,
            ProblemRevision,
            Participation,
            Dataset,
            AgreementVersion,
            SiteKey,
            TrainingRun,
            PrivacySpend,
        )
    }
    keys = {p: p.read_text() for p in (tmp_path / "one" / "sites").glob("*/.site/*.key")}
    assert len(keys) == rows[SiteKey] > 0  # every demo site has its key, registered
    second_output = _seed(settings, tmp_path / "one")
    assert AuditEvent.objects.count() == events
    assert {model: model.objects.count() for model in rows} == rows
    assert second_output == first_output
    assert {p: p.read_text() for p in keys} == keys
    # Seeded on another machine, the sites make new keys (private keys never travel) and
    # register them; the data files are the same bytes wherever and whenever they are written.
    _seed(settings, tmp_path / "two")
    assert SiteKey.objects.filter(status="active").count() == rows[SiteKey]
    assert SiteKey.objects.filter(status="retired").count() == rows[SiteKey]
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    for dataset in Dataset.objects.select_related("institution"):
        path = tmp_path / "two" / "sites" / dataset.institution.slug / dataset.site_key
        assert dataset.sha256 == _sha256(path)
    assert audit_verify().ok
