"""A problem and its participants built through the real services, step by step.

``Scenario`` holds three hospitals (A proposes and contributes, B contributes, C validates) with
an admin, a researcher and a data steward each, and walks them through the governance story up
to any point: proposed, participants in, ratified, datasets registered, agreement effective.
"""

import datetime
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from alliance.models import Institution, Role
from projects import services
from projects.federation import signing
from projects.models import AgreementVersion, Participation, Problem
from projects.services.sites import site_key_register
from tests.factories import InstitutionFactory, member

FEATURES: list[dict[str, Any]] = [
    {"name": "age", "type": "numeric", "unit": "years", "min": 0, "max": 120, "required": True},
    {"name": "size", "type": "numeric", "unit": "mm", "min": 0, "max": 100, "required": True},
    {"name": "grade", "type": "categorical", "categories": ["1", "2", "3"], "required": False},
    {"name": "malignant", "type": "categorical", "categories": ["0", "1"], "required": True},
]

DEFINITION: dict[str, Any] = {
    "task_type": "binary",
    "label_column": "malignant",
    "features": FEATURES,
    "metric": "roc_auc",
    "threshold": 0.9,
}


def terms(**overrides: Any) -> dict[str, Any]:
    """Agreement terms in the shape ``agreement_draft`` takes."""
    return {
        "purpose": "Train a tumour malignancy classifier for screening research.",
        "model_families": ["logistic_regression"],
        "min_contributors": 2,
        "secure_aggregation": False,
        "dp_max_epsilon": None,
        "download_scope": "participants",
        "commercial_use": False,
        "revenue_sharing": "",
        "expires_on": timezone.localdate() + datetime.timedelta(days=365),
        "clauses": "Results are published jointly.",
        **overrides,
    }


def description(site_key: str = "tumours.csv", **overrides: Any) -> dict[str, Any]:
    """A dataset description as ``describe_dataset`` prints it, fitting ``FEATURES``."""
    return {
        "name": "Tumour biopsies",
        "description": "",
        "site_key": site_key,
        "row_count": 120,
        "sha256": "ab" * 32,
        "label_column": "malignant",
        "columns": [
            {
                "name": "age",
                "type": "numeric",
                "missing": 0,
                "min": 21.0,
                "max": 88.0,
                "categories": None,
                "distinct": None,
            },
            {
                "name": "size",
                "type": "numeric",
                "missing": 0,
                "min": 1.5,
                "max": 64.0,
                "categories": None,
                "distinct": None,
            },
            {
                "name": "grade",
                "type": "numeric",
                "missing": 3,
                "min": 1.0,
                "max": 3.0,
                "categories": ["1", "2", "3"],
                "distinct": 3,
            },
            {
                "name": "malignant",
                "type": "numeric",
                "missing": 0,
                "min": 0.0,
                "max": 1.0,
                "categories": ["0", "1"],
                "distinct": 2,
            },
        ],
        "personal_data": True,
        "legal_basis": "Research exemption approved by the ethics board (IRB 2026-114).",
        "collection_start": "2024-01-01",
        "collection_end": "2025-12-31",
        **overrides,
    }


@dataclass
class Site:
    institution: Institution
    admin: Any
    researcher: Any
    steward: Any
    viewer: Any


def make_site(slug: str, name: str) -> Site:
    institution = InstitutionFactory(slug=slug, name=name)
    return Site(
        institution=institution,
        admin=member(Role.ADMIN, institution, user__username=f"{slug}-admin"),
        researcher=member(Role.RESEARCHER, institution, user__username=f"{slug}-researcher"),
        steward=member(Role.DATA_STEWARD, institution, user__username=f"{slug}-steward"),
        viewer=member(Role.VIEWER, institution, user__username=f"{slug}-viewer"),
    )


@dataclass
class Scenario:
    a: Site
    b: Site
    c: Site
    problem: Problem | None = None
    agreement: AgreementVersion | None = None
    extra: dict = field(default_factory=dict)

    def propose(self, visibility: str = Problem.Visibility.LISTED, **overrides: Any) -> Problem:
        self.problem = services.problem_propose(
            actor=self.a.researcher,
            slug=PROBLEM_SLUG,
            title="Tumour malignancy from biopsy features",
            sector="medicine",
            summary="Predict whether a biopsied tumour is malignant.",
            question="Is this tumour malignant?",
            visibility=visibility,
            **{**DEFINITION, **overrides},
        )
        return self.problem

    def join(self) -> None:
        """B joins as contributor (invited), C as validator (invited); both accept."""
        for site, role in ((self.b, "contributor"), (self.c, "validator")):
            participation = services.participation_invite(
                actor=self.a.admin, problem=self.problem, institution=site.institution, role=role
            )
            services.participation_accept(actor=site.admin, participation=participation)

    def ratify(self) -> None:
        for site in (self.a, self.b, self.c):
            services.problem_ratify(
                actor=site.researcher,
                problem=self.refresh(),
                revision=self.problem.current_revision,
            )

    def register(self) -> None:
        """A and B register their datasets, and their admins the keys their sites sign with."""
        for site in (self.a, self.b):
            services.dataset_register(
                actor=site.steward,
                problem=self.refresh(),
                **description(f"{site.institution.slug}.csv"),
            )
        self.keys()

    def draft(self, **overrides: Any) -> AgreementVersion:
        self.agreement = services.agreement_draft(
            actor=self.a.researcher, problem=self.refresh(), **terms(**overrides)
        )
        return self.agreement

    def approve(self, *sites: Site) -> None:
        for site in sites or (self.a, self.b):
            services.agreement_approve(
                actor=site.steward,
                version=self.agreement,
                terms_sha256=self.agreement.terms_sha256,
            )
        self.agreement.refresh_from_db()

    def keys(self, *sites: Site) -> None:
        """Each contributor's admin registers the key its site worker signs with."""
        for site in sites or (self.a, self.b):
            if site.institution.slug in self.extra.get("site_keys", {}):
                continue
            key = signing.generate()
            self.extra.setdefault("site_keys", {})[site.institution.slug] = key
            site_key_register(
                actor=site.admin,
                institution=site.institution,
                public_key=signing.public_to_text(key),
            )

    def ready(self) -> "Scenario":
        """All the way to data ready (the contributors' site keys registered on the way)."""
        self.propose()
        self.join()
        self.ratify()
        self.register()
        self.draft()
        self.approve()
        self.refresh()
        return self

    def refresh(self) -> Problem:
        self.problem.refresh_from_db()
        return self.problem

    def participation(self, site: Site) -> Participation:
        return Participation.objects.get(problem=self.problem, institution=site.institution)


SITES = (
    ("a", "north-hospital", "North Hospital"),
    ("b", "harbour-hospital", "Harbour Hospital"),
    ("c", "data-university", "Data University"),
)
PROBLEM_SLUG = "tumour-malignancy"


def build_scenario() -> Scenario:
    return Scenario(**{key: make_site(slug, name) for key, slug, name in SITES})


def load_scenario() -> Scenario:
    """The scenario that ``build_scenario`` (and any of its steps) wrote, read back from the
    database: fresh instances, as a test that built it would have them after a refresh."""
    from django.contrib.auth import get_user_model

    users = {
        user.username: user
        for user in get_user_model().objects.filter(
            username__in=[
                f"{slug}-{role}"
                for _key, slug, _name in SITES
                for role in ("admin", "researcher", "steward", "viewer")
            ]
        )
    }
    institutions = Institution.objects.in_bulk([slug for _k, slug, _n in SITES], field_name="slug")
    sites = {
        key: Site(
            institution=institutions[slug],
            admin=users[f"{slug}-admin"],
            researcher=users[f"{slug}-researcher"],
            steward=users[f"{slug}-steward"],
            viewer=users[f"{slug}-viewer"],
        )
        for key, slug, _name in SITES
    }
    scenario = Scenario(**sites)
    scenario.problem = Problem.objects.filter(slug=PROBLEM_SLUG).first()
    if scenario.problem is not None:
        scenario.agreement = scenario.problem.agreements.order_by("-number").first()
    return scenario
