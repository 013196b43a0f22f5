"""The demo's problems, datasets and agreements, built through the projects services.

``seed_demo`` calls ``seed_projects`` after ``seed_alliance`` has made the demo institutions and
their people (``<slug>-admin``, ``-steward``, ``-researcher``, ``-viewer``). Every act goes
through a service, so the demo has the audit trail, the object permissions and the stages that
real use would give it. Four problems show every state a newcomer should see:

- ``breast-cancer-malignancy`` (medicine, listed): three hospitals contribute, a university
  validates; revision 2 ratified by all; three datasets registered; agreement v1 effective, so the
  problem is *data ready*;
- ``spindle-failure-7d`` (manufacturing, listed): agreement v1 effective and an amendment v2
  waiting for one steward; revision 2 waiting for one ratification (so *proposed* again); a
  university asks to join as validator;
- ``platform-crowding-15min`` (transport, invitation only): ratified by its proposer, the
  university invited as validator and not answered yet;
- ``diabetes-progression-1y`` (medicine, listed): the three hospitals contribute under an
  agreement that requires secure aggregation and sets an epsilon ceiling of 8 per dataset; its
  first run (with ``seed_demo``'s run) was securely aggregated and differentially private, so
  the hospitals' privacy budget ledgers have spends and the run page shows what the
  coordinator saw.

Each problem is built in one transaction, and only when it does not exist yet: running the seed
again changes nothing and writes no audit event. The sites' CSV files are written every time
under ``<VAR_DIR>/sites/<slug>/``, byte for byte the same (fixed seeds, fixed number formats), so
the registered SHA-256 stays the files' hash.
"""

import datetime
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from alliance.models import Institution
from alliance.services.notifications import notifications_muted
from projects import services
from projects.federation import signing
from projects.models import AgreementVersion, Participation, Problem, TrainingRun
from projects.schema import describe_csv
from projects.services.agreements import awaiting_approval
from projects.services.problems import awaiting_ratification
from projects.services.sites import site_key_register
from projects.site.identity import default_key_path, write_key_pair

User = get_user_model()

BREAST_CANCER = "breast-cancer-malignancy"
SPINDLE = "spindle-failure-7d"
CROWDING = "platform-crowding-15min"
DIABETES = "diabetes-progression-1y"

NORTH = "taipei-north-hospital"
HARBOUR = "kaohsiung-harbour-hospital"
TAICHUNG = "taichung-medical-centre"
UNIVERSITY = "national-data-science-university"
HSINCHU = "hsinchu-precision-works"
TAINAN = "tainan-assembly-company"
METRO = "metro-taipei"

BREAST_CANCER_FILE = "breast_cancer.csv"
HOLDOUT_FILE = "breast_cancer_holdout.csv"
SPINDLE_FILE = "spindle_sensors.csv"
DIABETES_FILE = "diabetes_followup.csv"

# Fixed seeds: the same split and the same synthetic rows, hence the same files, on every run.
BREAST_CANCER_SEED = 20240611
SPINDLE_SEED = 7
DIABETES_SEED = 20250301
HOLDOUT_SHARE = 0.2
# Each hospital's share of the (non-held-out) malignant and benign rows: uneven sizes and mixes.
# The last hospital takes what is left.
HOSPITAL_SHARES = {NORTH: (0.55, 0.35), HARBOUR: (0.18, 0.42), TAICHUNG: None}
LABEL = "diagnosis"


def _round_bound(value: float) -> float:
    """A round number at or above ``value``: 28.11 gives 30, 0.1634 gives 0.2, 4254 gives 5000."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    step = Decimal(1).scaleb(exponent)
    return float(math.ceil(Decimal(repr(value)) / step) * step)


def _number(value: float) -> str:
    """Six significant digits, the same text on every platform (breast-cancer values need 4)."""
    return format(float(value), ".6g")


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """Write the file only when its bytes differ, so that a second run leaves it untouched."""
    content = ("\n".join(",".join(row) for row in [header, *rows]) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_bytes() != content:
        path.write_bytes(content)
    return path


# --- The sites' files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BreastCancerData:
    features: list[str]
    bounds: dict[str, float]
    files: dict[str, Path]  # institution slug -> CSV file (the university's is the held-out set)


def write_breast_cancer_files(sites_dir: Path) -> BreastCancerData:
    """Split scikit-learn's breast-cancer data between three hospitals and a held-out set.

    scikit-learn codes the target 0 = malignant, 1 = benign; the files carry ``diagnosis`` =
    1 - target, so that 1 means malignant, as clinicians read a positive finding.
    """
    from sklearn.datasets import load_breast_cancer  # imported here: only the seed needs it

    bunch = load_breast_cancer()
    features = [str(name) for name in bunch.feature_names]
    diagnosis = 1 - bunch.target
    text = [[_number(value) for value in row] for row in bunch.data]
    # Bounds from the values as written, so that the files always fit the schema.
    written = np.array([[float(value) for value in row] for row in text])
    bounds = {
        name: _round_bound(float(high))
        for name, high in zip(features, written.max(axis=0), strict=True)
    }

    rng = np.random.RandomState(BREAST_CANCER_SEED)
    order = rng.permutation(len(diagnosis))
    n_holdout = round(HOLDOUT_SHARE * len(order))
    holdout, rest = order[:n_holdout], order[n_holdout:]
    malignant = [int(i) for i in rest if diagnosis[i] == 1]
    benign = [int(i) for i in rest if diagnosis[i] == 0]
    shards: dict[str, list[int]] = {}
    taken_m = taken_b = 0
    for slug, shares in HOSPITAL_SHARES.items():
        if shares is None:
            picked = malignant[taken_m:] + benign[taken_b:]
        else:
            n_m, n_b = round(shares[0] * len(malignant)), round(shares[1] * len(benign))
            picked = malignant[taken_m : taken_m + n_m] + benign[taken_b : taken_b + n_b]
            taken_m, taken_b = taken_m + n_m, taken_b + n_b
        shards[slug] = sorted(picked)

    header = [*features, LABEL]

    def rows(indices: list[int]) -> list[list[str]]:
        return [[*text[i], str(int(diagnosis[i]))] for i in indices]

    files = {
        slug: _write_csv(sites_dir / slug / BREAST_CANCER_FILE, header, rows(indices))
        for slug, indices in shards.items()
    }
    files[UNIVERSITY] = _write_csv(
        sites_dir / UNIVERSITY / HOLDOUT_FILE, header, rows(sorted(int(i) for i in holdout))
    )
    return BreastCancerData(features=features, bounds=bounds, files=files)


# name, unit, centre, spread, lower bound, upper bound, decimals: synthetic sensor readings.
SPINDLE_COLUMNS = [
    ("vibration_rms", "mm/s", 3.0, 1.2, 0.0, 50.0, 2),
    ("spindle_temperature", "°C", 45.0, 6.0, 0.0, 150.0, 1),
    ("motor_current", "A", 12.0, 2.5, 0.0, 60.0, 2),
    ("spindle_speed", "rpm", 12000.0, 2500.0, 0.0, 30000.0, 0),
    ("hours_since_service", "h", 800.0, 300.0, 0.0, 20000.0, 0),
    ("acoustic_emission", "dB", 62.0, 5.0, 0.0, 140.0, 1),
]
SPINDLE_LABEL = "failure_within_7d"
SPINDLE_SITES = {HSINCHU: 600, TAINAN: 400}


def write_spindle_files(sites_dir: Path) -> dict[str, Path]:
    """Synthetic sensor logs (``make_classification``) for the two factories.

    Hsinchu's log also has the workshop's ambient temperature, which revision 2 of the problem
    adds as an optional column: a site may hold more columns than a problem needs.
    """
    from sklearn.datasets import make_classification

    total = sum(SPINDLE_SITES.values())
    x, y = make_classification(
        n_samples=total,
        n_features=len(SPINDLE_COLUMNS),
        n_informative=4,
        n_redundant=1,
        n_clusters_per_class=2,
        weights=[0.85],
        flip_y=0.02,
        class_sep=1.2,
        random_state=SPINDLE_SEED,
    )
    columns = []
    for index, (_name, _unit, centre, spread, low, high, decimals) in enumerate(SPINDLE_COLUMNS):
        columns.append(
            [f"{value:.{decimals}f}" for value in np.clip(centre + spread * x[:, index], low, high)]
        )
    ambient = np.random.RandomState(SPINDLE_SEED).normal(24.0, 3.0, size=total)
    files: dict[str, Path] = {}
    start = 0
    for slug, count in SPINDLE_SITES.items():
        header = [name for name, *_rest in SPINDLE_COLUMNS]
        extra = slug == HSINCHU
        if extra:
            header.append("ambient_temperature")
        header.append(SPINDLE_LABEL)
        rows = []
        for i in range(start, start + count):
            row = [column[i] for column in columns]
            if extra:
                row.append(f"{ambient[i]:.1f}")
            rows.append([*row, str(int(y[i]))])
        files[slug] = _write_csv(sites_dir / slug / SPINDLE_FILE, header, rows)
        start += count
    return files


# scikit-learn's diabetes set, unscaled: the column it calls each feature, and ours.
DIABETES_COLUMNS = [
    ("age", "age", "years"),
    ("sex", "sex", ""),
    ("bmi", "body_mass_index", "kg/m²"),
    ("bp", "mean_blood_pressure", "mmHg"),
    ("s1", "total_cholesterol", "mg/dL"),
    ("s2", "ldl_cholesterol", "mg/dL"),
    ("s3", "hdl_cholesterol", "mg/dL"),
    ("s4", "cholesterol_hdl_ratio", ""),
    ("s5", "log_triglycerides", ""),
    ("s6", "glucose", "mg/dL"),
]
DIABETES_LABEL = "progressed"
# A progression score above this a year after baseline counts as marked progression (the
# median of the set's scores, so the two classes are even).
DIABETES_CUTOFF = 140
DIABETES_SHARES = {NORTH: 0.45, HARBOUR: 0.3, TAICHUNG: None}


@dataclass(frozen=True)
class DiabetesData:
    bounds: dict[str, float]
    files: dict[str, Path]  # institution slug -> CSV file


def write_diabetes_files(sites_dir: Path) -> DiabetesData:
    """Deal scikit-learn's diabetes patients (unscaled) between the three hospitals.

    ``progressed`` is 1 when the disease progression score a year after baseline is above
    ``DIABETES_CUTOFF``.
    """
    from sklearn.datasets import load_diabetes  # imported here: only the seed needs it

    bunch = load_diabetes(scaled=False)
    text = [[_number(value) for value in row] for row in bunch.data]
    written = np.array([[float(value) for value in row] for row in text])
    names = [ours for _theirs, ours, _unit in DIABETES_COLUMNS]
    bounds = {
        name: _round_bound(float(high))
        for name, high in zip(names, written.max(axis=0), strict=True)
    }
    progressed = (bunch.target > DIABETES_CUTOFF).astype(int)
    order = [int(i) for i in np.random.RandomState(DIABETES_SEED).permutation(len(progressed))]
    header = [*names, DIABETES_LABEL]
    files: dict[str, Path] = {}
    start = 0
    for slug, share in DIABETES_SHARES.items():
        end = len(order) if share is None else start + round(share * len(order))
        rows = [[*text[i], str(int(progressed[i]))] for i in sorted(order[start:end])]
        files[slug] = _write_csv(sites_dir / slug / DIABETES_FILE, header, rows)
        start = end
    return DiabetesData(bounds=bounds, files=files)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- People and steps ---------------------------------------------------------------------------


def _institution(slug: str) -> Institution:
    institution = Institution.objects.filter(slug=slug).first()
    if institution is None:
        raise CommandError(
            _("The demo institution %(slug)s is missing; run seed_alliance first.") % {"slug": slug}
        )
    return institution


def _person(slug: str, role: str) -> AbstractBaseUser:
    user = User.objects.filter(username=f"{slug}-{role}").first()
    if user is None:
        raise CommandError(
            _("The demo user %(username)s is missing; run seed_alliance first.")
            % {"username": f"{slug}-{role}"}
        )
    return user


def _fresh(problem: Problem) -> Problem:
    problem.refresh_from_db()
    return problem


def _request_and_accept(problem: Problem, slug: str, role: str, message: str) -> None:
    participation = services.participation_request(
        actor=_person(slug, "admin"), problem=problem, role=role, message=message
    )
    services.participation_accept(
        actor=_person(problem.proposer.slug, "admin"), participation=participation
    )


def _invite(problem: Problem, slug: str, role: str, message: str) -> Participation:
    return services.participation_invite(
        actor=_person(problem.proposer.slug, "admin"),
        problem=problem,
        institution=_institution(slug),
        role=role,
        message=message,
    )


def _ratify(problem: Problem, *slugs: str) -> None:
    for slug in slugs:
        problem = _fresh(problem)
        services.problem_ratify(
            actor=_person(slug, "researcher"), problem=problem, revision=problem.current_revision
        )


def _approve(version: AgreementVersion, *slugs: str) -> None:
    for slug in slugs:
        services.agreement_approve(
            actor=_person(slug, "steward"), version=version, terms_sha256=version.terms_sha256
        )


def _register(problem: Problem, slug: str, path: Path, *, label: str, **description: Any) -> None:
    services.dataset_register(
        actor=_person(slug, "steward"),
        problem=_fresh(problem),
        **describe_csv(path, label=label, site_key=path.name, **description),
    )


def _in_a_year() -> datetime.date:
    return timezone.localdate() + datetime.timedelta(days=365)


# --- The medical problem ------------------------------------------------------------------------

HOSPITAL_DATA = {
    NORTH: ("Taipei North Hospital", datetime.date(2018, 1, 1), datetime.date(2023, 12, 31)),
    HARBOUR: ("Kaohsiung Harbour Hospital", datetime.date(2019, 7, 1), datetime.date(2024, 6, 30)),
    TAICHUNG: ("Taichung Medical Centre", datetime.date(2020, 1, 1), datetime.date(2024, 12, 31)),
}


def _breast_cancer(data: BreastCancerData) -> None:
    features = [
        {
            "name": name,
            "type": "numeric",
            "unit": "",
            "min": 0,
            "max": data.bounds[name],
            "required": True,
        }
        for name in data.features
    ]
    features.append(
        {"name": LABEL, "type": "categorical", "categories": ["0", "1"], "required": True}
    )
    definition = {
        "task_type": "binary",
        "label_column": LABEL,
        "features": features,
        "metric": "roc_auc",
    }
    problem = services.problem_propose(
        actor=_person(HARBOUR, "researcher"),
        slug=BREAST_CANCER,
        title="Tumour malignancy from biopsy features",
        sector="medicine",
        summary=(
            "Predict whether a breast tumour is malignant from the 30 cell-nucleus features "
            "measured on a fine-needle aspirate (radius, texture, perimeter, area, smoothness, "
            "compactness, concavity, concave points, symmetry and fractal dimension; each as a "
            "mean, a standard error and a worst value). The demo data is the Wisconsin "
            "Diagnostic Breast Cancer set that scikit-learn ships, split between three "
            "hospitals and a held-out set at the university. scikit-learn codes its target "
            "0 = malignant; here diagnosis = 1 - target, so diagnosis 1 means malignant."
        ),
        question="Is this biopsied breast tumour malignant (diagnosis 1) or benign (0)?",
        threshold=0.9,
        **definition,
    )
    _request_and_accept(
        problem,
        NORTH,
        "contributor",
        "Our oncology department has six years of aspirate measurements to contribute.",
    )
    taichung = _invite(
        problem, TAICHUNG, "contributor", "Your pathology laboratory's data would help."
    )
    services.participation_accept(actor=_person(TAICHUNG, "admin"), participation=taichung)
    university = _invite(
        problem,
        UNIVERSITY,
        "validator",
        "Would you evaluate the models on a held-out set nobody trains on?",
    )
    services.participation_accept(actor=_person(UNIVERSITY, "admin"), participation=university)
    _ratify(problem, HARBOUR, NORTH, TAICHUNG, UNIVERSITY)

    services.problem_comment(
        actor=_person(NORTH, "researcher"),
        problem=_fresh(problem),
        revision=1,
        body=(
            "Published logistic-regression baselines on these features reach a ROC AUC near "
            "0.99. A bar of 0.90 would certify models we would not use for screening; could "
            "we raise it to 0.95?"
        ),
    )
    services.problem_revise(
        actor=_person(HARBOUR, "researcher"),
        problem=_fresh(problem),
        threshold=0.95,
        change_note=(
            "Acceptance threshold raised from 0.90 to 0.95 ROC AUC, as Taipei North proposed: "
            "a screening aid must do clearly better than the simplest published baselines."
        ),
        **definition,
    )
    for slug, body in (
        (
            UNIVERSITY,
            "Our held-out set has 114 biopsies; at 0.95 the confidence interval of the AUC is "
            "narrow enough to certify fairly. We will ratify.",
        ),
        (
            TAICHUNG,
            "Agreed. Our shard is the smallest, so the higher bar matters most to us.",
        ),
        (
            HARBOUR,
            "Thank you all. Once revision 2 is ratified, stewards can register their datasets.",
        ),
    ):
        services.problem_comment(
            actor=_person(slug, "researcher"), problem=_fresh(problem), revision=2, body=body
        )
    _ratify(problem, HARBOUR, NORTH, TAICHUNG, UNIVERSITY)

    for slug, (name, start, end) in HOSPITAL_DATA.items():
        _register(
            problem,
            slug,
            data.files[slug],
            label=LABEL,
            name=f"Fine-needle aspirates, {name}",
            description=(
                "Cell-nucleus features of breast-tumour aspirates with the pathologist's "
                "diagnosis (1 = malignant). Demo shard of scikit-learn's breast-cancer data."
            ),
            personal_data=True,
            legal_basis=(
                "Personal Data Protection Act, art. 6(1)(4): medical research on "
                "de-identified records, approved by the hospital's institutional review board."
            ),
            collection_start=start,
            collection_end=end,
        )
    # The validator's held-out rows: its steward registers them; they never train.
    _register(
        problem,
        UNIVERSITY,
        data.files[UNIVERSITY],
        label=LABEL,
        name="Held-out aspirates for validation",
        description=(
            "A fifth of the demo's breast-cancer rows, kept by the university to score "
            "candidate models; no site trains on them."
        ),
        personal_data=True,
        legal_basis="Research exemption of the university's ethics board (de-identified).",
    )
    version = services.agreement_draft(
        actor=_person(HARBOUR, "researcher"),
        problem=_fresh(problem),
        purpose=(
            "Train and validate a tumour-malignancy classifier on biopsy features, for "
            "screening research only; no clinical decision rests on it without a separate "
            "certification."
        ),
        model_families=["logistic_regression"],
        min_contributors=2,
        secure_aggregation=False,
        dp_max_epsilon=None,
        download_scope="participants",
        commercial_use=False,
        revenue_sharing="",
        expires_on=_in_a_year(),
        clauses=(
            "1. No attempt is made to re-identify a patient from a model or its updates.\n"
            "2. Results are published jointly, naming every contributing hospital.\n"
            "3. A hospital that revokes its approval is excluded from every later round; models "
            "already trained stay with the participants."
        ),
    )
    _approve(version, HARBOUR, NORTH, TAICHUNG)


# --- The second medical problem: secure aggregation and differential privacy -------------------

DIABETES_EPSILON_CEILING = 8.0


def _diabetes(data: DiabetesData) -> None:
    features: list[dict[str, Any]] = [
        {
            "name": name,
            "type": "numeric",
            "unit": unit,
            "min": 0,
            "max": data.bounds[name],
            "required": True,
        }
        for _theirs, name, unit in DIABETES_COLUMNS
    ]
    features.append(
        {"name": DIABETES_LABEL, "type": "categorical", "categories": ["0", "1"], "required": True}
    )
    problem = services.problem_propose(
        actor=_person(TAICHUNG, "researcher"),
        slug=DIABETES,
        title="Diabetes progression within a year",
        sector="medicine",
        summary=(
            "Predict whether a diabetes patient's disease will progress markedly within a year "
            "(a progression score above 140) from ten baseline measurements: age, sex, body-mass "
            "index, mean blood pressure and six blood-serum measurements. The demo data is the "
            "diabetes set that scikit-learn ships (442 patients; Efron et al., 2004), unscaled "
            "and dealt between three hospitals. These are patient records: the agreement "
            "requires every round to be securely aggregated and every run to be differentially "
            "private, within epsilon 8 per dataset across all runs."
        ),
        question="Will this patient's progression score a year from now be above 140?",
        task_type="binary",
        label_column=DIABETES_LABEL,
        features=features,
        metric="roc_auc",
        threshold=0.75,
    )
    _request_and_accept(
        problem,
        NORTH,
        "contributor",
        "Our endocrinology clinic follows its diabetes patients yearly; we will contribute.",
    )
    harbour = _invite(
        problem, HARBOUR, "contributor", "Your metabolic clinic's follow-ups would help."
    )
    services.participation_accept(actor=_person(HARBOUR, "admin"), participation=harbour)
    _ratify(problem, TAICHUNG, NORTH, HARBOUR)
    for slug, (name, _start, _end) in HOSPITAL_DATA.items():
        _register(
            problem,
            slug,
            data.files[slug],
            label=DIABETES_LABEL,
            name=f"Diabetes follow-up, {name}",
            description=(
                "Baseline measurements of diabetes patients and whether their disease "
                "progressed markedly within a year. Demo shard of scikit-learn's diabetes data."
            ),
            personal_data=True,
            legal_basis=(
                "Personal Data Protection Act, art. 6(1)(4): medical research on "
                "de-identified records, approved by the hospital's institutional review board."
            ),
            collection_start=datetime.date(2021, 1, 1),
            collection_end=datetime.date(2024, 12, 31),
        )
    version = services.agreement_draft(
        actor=_person(TAICHUNG, "researcher"),
        problem=_fresh(problem),
        purpose=(
            "Train a classifier of marked diabetes progression for research on follow-up "
            "scheduling; no patient is treated on its output."
        ),
        model_families=["logistic_regression"],
        min_contributors=2,
        secure_aggregation=True,
        dp_max_epsilon=DIABETES_EPSILON_CEILING,
        download_scope="participants",
        commercial_use=False,
        revenue_sharing="",
        expires_on=_in_a_year(),
        clauses=(
            "1. No hospital's update is ever seen alone: every round is securely aggregated.\n"
            "2. Every run trains with differential privacy at each hospital; no dataset may "
            "spend more than epsilon 8 across all runs.\n"
            "3. No attempt is made to re-identify a patient from a model."
        ),
    )
    _approve(version, TAICHUNG, NORTH, HARBOUR)


# --- The manufacturing problem ------------------------------------------------------------------


def _spindle_features(*, with_ambient: bool) -> list[dict[str, Any]]:
    features: list[dict[str, Any]] = [
        {"name": name, "type": "numeric", "unit": unit, "min": low, "max": high, "required": True}
        for name, unit, _c, _s, low, high, _d in SPINDLE_COLUMNS
    ]
    if with_ambient:
        features.append(
            {
                "name": "ambient_temperature",
                "type": "numeric",
                "unit": "°C",
                "min": -10,
                "max": 50,
                "required": False,
            }
        )
    features.append(
        {"name": SPINDLE_LABEL, "type": "categorical", "categories": ["0", "1"], "required": True}
    )
    return features


def _spindle(files: dict[str, Path]) -> None:
    definition = {
        "task_type": "binary",
        "label_column": SPINDLE_LABEL,
        "metric": "f1",
        "threshold": 0.8,
    }
    problem = services.problem_propose(
        actor=_person(HSINCHU, "researcher"),
        slug=SPINDLE,
        title="Spindle failure within seven days",
        sector="manufacturing",
        summary=(
            "Warn a week ahead that a machine-tool spindle is about to fail, from the sensor "
            "readings each factory already logs (vibration, temperature, motor current, speed, "
            "hours since the last service, acoustic emission). The demo data is synthetic "
            "(scikit-learn's make_classification), about one failure in seven readings."
        ),
        question="Will this spindle fail within the next seven days?",
        features=_spindle_features(with_ambient=False),
        **definition,
    )
    _request_and_accept(
        problem,
        TAINAN,
        "contributor",
        "Our assembly lines log the same sensors; predictive maintenance is our priority.",
    )
    _ratify(problem, HSINCHU, TAINAN)
    for slug, (name, start, end) in {
        HSINCHU: ("Hsinchu Precision Works", datetime.date(2023, 1, 1), datetime.date(2025, 6, 30)),
        TAINAN: ("Tainan Assembly Company", datetime.date(2024, 1, 1), datetime.date(2025, 6, 30)),
    }.items():
        _register(
            problem,
            slug,
            files[slug],
            label=SPINDLE_LABEL,
            name=f"Spindle sensor log, {name}",
            description="Hourly readings per spindle, labelled with failures in the next 7 days.",
            personal_data=False,
            legal_basis="",
            collection_start=start,
            collection_end=end,
        )
    terms: dict[str, Any] = {
        "purpose": "Predict spindle failures a week ahead for maintenance planning.",
        "model_families": ["logistic_regression"],
        "min_contributors": 2,
        "secure_aggregation": False,
        "dp_max_epsilon": None,
        "download_scope": "participants",
        "commercial_use": False,
        "revenue_sharing": "",
        "expires_on": _in_a_year(),
        "clauses": "Machine identifiers never leave the factories.",
    }
    first = services.agreement_draft(
        actor=_person(HSINCHU, "researcher"), problem=_fresh(problem), **terms
    )
    _approve(first, HSINCHU, TAINAN)
    amendment = services.agreement_draft(
        actor=_person(HSINCHU, "researcher"),
        problem=_fresh(problem),
        change_note=(
            "Permits the multilayer perceptron and commercial use: Hsinchu wants to offer the "
            "model to its customers, sharing the revenue."
        ),
        **{
            **terms,
            "model_families": ["logistic_regression", "mlp"],
            "commercial_use": True,
            "revenue_sharing": (
                "Net revenue from selling a released model is shared in proportion to the rows "
                "each contributor brought to the rounds that trained it."
            ),
        },
    )
    _approve(amendment, HSINCHU)
    services.problem_comment(
        actor=_person(HSINCHU, "researcher"),
        problem=_fresh(problem),
        revision=1,
        body=(
            "On hot afternoons our spindle temperatures rise with the workshop's; the model "
            "should know the ambient temperature. I propose it as an optional column."
        ),
    )
    services.problem_revise(
        actor=_person(HSINCHU, "researcher"),
        problem=_fresh(problem),
        features=_spindle_features(with_ambient=True),
        change_note=(
            "Adds the workshop's ambient temperature as an optional column. Registered datasets "
            "still fit: a site without it leaves it out."
        ),
        **definition,
    )
    _ratify(problem, HSINCHU)
    services.participation_request(
        actor=_person(UNIVERSITY, "admin"),
        problem=_fresh(problem),
        role="validator",
        message="We can keep a held-out month of readings from both factories and certify.",
    )


# --- The invitation-only transport problem ------------------------------------------------------


def _crowding() -> None:
    problem = services.problem_propose(
        actor=_person(METRO, "researcher"),
        slug=CROWDING,
        title="Platform crowding in the next 15 minutes",
        sector="transportation",
        summary=(
            "Forecast how many passengers will wait on a platform fifteen minutes from now, "
            "so that station staff can open gates and add trains before crowds build up."
        ),
        question="How many passengers will be on this platform in 15 minutes?",
        visibility="invitation",
        task_type="regression",
        label_column="passengers_in_15min",
        features=[
            {"name": "minute_of_day", "type": "numeric", "unit": "min", "min": 0, "max": 1439},
            {
                "name": "weekday",
                "type": "categorical",
                "categories": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            },
            {
                "name": "passengers_now",
                "type": "numeric",
                "unit": "persons",
                "min": 0,
                "max": 5000,
            },
            {
                "name": "trains_last_15min",
                "type": "numeric",
                "unit": "trains",
                "min": 0,
                "max": 20,
            },
            {"name": "rain", "type": "numeric", "unit": "mm/h", "min": 0, "max": 200},
            {
                "name": "event_nearby",
                "type": "categorical",
                "categories": ["no", "yes"],
                "required": False,
            },
            {
                "name": "passengers_in_15min",
                "type": "numeric",
                "unit": "persons",
                "min": 0,
                "max": 5000,
            },
        ],
        metric="rmse",
        threshold=40,
    )
    _ratify(problem, METRO)
    _invite(
        problem,
        UNIVERSITY,
        "validator",
        "We would like you to validate forecasts on last year's gate counts before we widen "
        "the circle.",
    )


# --- Entry point --------------------------------------------------------------------------------


def _once(slug: str, build: Callable[[], None]) -> None:
    """Build one problem in one transaction, unless it exists: a second run writes nothing."""
    if Problem.objects.filter(slug=slug).exists():
        return
    with transaction.atomic():
        build()


def seed_site_keys(sites_dir: Path) -> list[str]:
    """Give every demo site a signing key in its own folder and register its public half.

    As a member would: ``site_keygen`` at the site (the private key stays in
    ``<sites>/<slug>/.site/``), then the public key registered for the institution. A key that
    exists and is registered is left alone; returns the slugs that got a new key.
    """
    created = []
    for folder in sorted(p for p in Path(sites_dir).iterdir() if p.is_dir()):
        institution = Institution.objects.filter(slug=folder.name).first()
        if institution is None:
            continue
        path = default_key_path(folder, folder.name)
        if path.exists():
            public = signing.public_to_text(signing.private_from_text(path.read_text()))
        else:
            _path, public, _fingerprint = write_key_pair(path.parent, folder.name)
            created.append(folder.name)
        active = institution.site_keys.filter(status="active").first()
        if active is None or active.public_key != public:
            site_key_register(
                actor=None, institution=institution, public_key=public, label="demo site worker"
            )
    return created


def seed_first_run(sites_dir: Path) -> TrainingRun | None:
    """The breast-cancer problem's first run, trained, certified and released, so that a
    newcomer sees every stage: played in this process by the coordinator's services and the
    sites' own code on their own folders and keys (only the broker is left out)."""
    from projects.services.release import model_release
    from projects.services.runs import LaunchConfig
    from projects.services.runs.local import run_in_this_process

    problem = Problem.objects.get(slug=BREAST_CANCER)
    if problem.runs.exists():
        return None
    with transaction.atomic():
        run = run_in_this_process(
            actor=_person(HARBOUR, "researcher"),
            problem=problem,
            config=LaunchConfig(rounds=10),
            sites_dir=sites_dir,
        )
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(
                f"The demo's first run did not succeed ({run.status}): {' '.join(run.reasons)}"
            )
        final = run.models.get(round_number=run.rounds)
        certification = getattr(final, "certification", None)
        if certification is not None and certification.certified:
            model_release(
                actor=_person(HARBOUR, "admin"),
                model=final,
                note="The demo's first certified model, released to the participants.",
            )
    return run


# The demo's securely aggregated, differentially private run: few rounds, so seeding stays quick.
SECURE_RUN: dict[str, Any] = {
    "rounds": 5,
    "local_epochs": 5,
    "feature_scaling": "standardise",
    "secure_aggregation": True,
    "dp_options": {"epsilon": 3.0, "clip_norm": 1.0},
}


def seed_secure_run(sites_dir: Path) -> TrainingRun | None:
    """The diabetes problem's first run, securely aggregated and differentially private, played
    in this process like the breast-cancer run: every site trains with DP-SGD, masks its change,
    and the ledger charges each hospital's dataset for every round."""
    from projects.services.runs import LaunchConfig
    from projects.services.runs.local import run_in_this_process

    problem = Problem.objects.get(slug=DIABETES)
    if problem.runs.exists():
        return None
    with transaction.atomic():
        run = run_in_this_process(
            actor=_person(TAICHUNG, "researcher"),
            problem=problem,
            config=LaunchConfig(**SECURE_RUN),
            sites_dir=sites_dir,
        )
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(
                f"The demo's secure run did not succeed ({run.status}): {' '.join(run.reasons)}"
            )
    return run


def seed_projects(*, var_dir: Path, with_run: bool = True) -> list[Problem]:
    """Write the sites' files and keys and build the demo problems; return them, medical first.

    ``with_run``: also train, certify and release the breast-cancer problem's first run, and
    train the diabetes problem's secure, differentially private run.
    """
    sites_dir = Path(var_dir) / "sites"
    breast_cancer = write_breast_cancer_files(sites_dir)
    diabetes = write_diabetes_files(sites_dir)
    spindle = write_spindle_files(sites_dir)
    seed_site_keys(sites_dir)
    with notifications_muted():
        _once(BREAST_CANCER, lambda: _breast_cancer(breast_cancer))
        _once(DIABETES, lambda: _diabetes(diabetes))
        _once(SPINDLE, lambda: _spindle(spindle))
        _once(CROWDING, _crowding)
        if with_run:
            seed_first_run(sites_dir)
            seed_secure_run(sites_dir)
    slugs = (BREAST_CANCER, DIABETES, SPINDLE, CROWDING)
    by_slug = {
        p.slug: p
        for p in Problem.objects.filter(slug__in=slugs)
        .select_related("proposer")
        .prefetch_related("agreements")
    }
    return [by_slug[slug] for slug in slugs if slug in by_slug]


def summary_line(problem: Problem) -> str:
    """One line for the console: the stage, what awaits ratification, the agreement's state."""
    stage = str(problem.get_stage_display()).lower()
    if problem.visibility == Problem.Visibility.INVITATION:
        stage = _("%(stage)s, invitation only") % {"stage": stage}
    waiting = len(awaiting_ratification(problem))
    if waiting and not problem.is_ratified:
        stage = ngettext(
            "%(stage)s (revision %(n)s awaits %(count)d ratification)",
            "%(stage)s (revision %(n)s awaits %(count)d ratifications)",
            waiting,
        ) % {"stage": stage, "n": problem.current_revision, "count": waiting}
    versions = {v.status: v for v in problem.agreements.all()}
    effective = versions.get(AgreementVersion.Status.EFFECTIVE)
    pending = versions.get(AgreementVersion.Status.PENDING)
    parts = []
    if effective is not None:
        parts.append(_("agreement v%(n)s effective") % {"n": effective.number})
    if pending is not None:
        stewards = len(awaiting_approval(pending))
        parts.append(
            ngettext(
                "v%(n)s awaits %(count)d contributor's steward",
                "v%(n)s awaits %(count)d contributors' stewards",
                stewards,
            )
            % {"n": pending.number, "count": stewards}
        )
    agreement = ", ".join(parts) if parts else _("no agreement yet")
    return _("%(title)s [%(slug)s]: %(stage)s; %(agreement)s.") % {
        "title": problem.title,
        "slug": problem.slug,
        "stage": stage,
        "agreement": agreement,
    }
