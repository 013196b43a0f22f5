"""Fill an empty database with an alliance big enough to time the dashboards against.

The default size is the one the dashboards are held to: 100 institutions in every sector, each
with its admin, data steward, researcher and viewer; problems in every lifecycle stage with
their participants, revisions, ratifications, datasets and agreements; about 100 training runs
totalling 10,000 rounds, each round with its sites' answers (3 to 6 sites), metrics, timings
and model versions; and 100,000 audit events forming one valid hash chain.

Rows are written with ``bulk_create`` in one transaction, not through the services: the services
append one audit event and check permissions per act, which would take hours at this size. The
seed therefore also writes what the services would have derived (stages, object permissions,
groups) and builds the audit chain exactly as ``audit_record`` does. The first institution
(``bench-001``) is the busiest: it proposes every fifth problem, takes part in many others and
launched the largest run, which is still running.

Random choices come from ``--seed``, so two seeds of the same size hold the same rows; times
are laid out over the year before the moment of seeding.
"""

import datetime
import hashlib
import json
import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models, transaction
from django.utils import timezone
from guardian.models import GroupObjectPermission, UserObjectPermission

from alliance.models import AuditEvent, Institution, Membership, MembershipApplication, Role, Sector
from alliance.models.audit import GENESIS_HASH
from alliance.permissions import ADMIN_OBJECT_PERMS, institution_group_name
from alliance.services.audit import audit_verify
from alliance.services.audit_log import audit_checkpoint_issue
from projects.models import (
    AgreementApproval,
    AgreementVersion,
    Dataset,
    ModelFamily,
    ModelVersion,
    Participation,
    Problem,
    ProblemRevision,
    Ratification,
    Round,
    SiteRound,
    Strategy,
    TrainingRun,
)

# The grants problem_sync_permissions would write, computed by the same function.
from projects.permissions import _desired_grants

User = get_user_model()

BATCH = 2000
PASSWORD = "bench-password"  # every bench person's, on a throwaway database
ROLE_USERS = {
    Role.ADMIN: "admin",
    Role.DATA_STEWARD: "steward",
    Role.RESEARCHER: "researcher",
    Role.VIEWER: "viewer",
}
CITIES = [
    "Taipei", "Keelung", "Taoyuan", "Hsinchu", "Miaoli", "Taichung", "Changhua", "Nantou",
    "Yunlin", "Chiayi", "Tainan", "Kaohsiung", "Pingtung", "Yilan", "Hualien", "Taitung",
    "Penghu", "Kinmen", "Matsu", "Banqiao",
]  # fmt: skip
KINDS = {
    Sector.MEDICINE: "Hospital",
    Sector.TRANSPORTATION: "Transit Authority",
    Sector.MANUFACTURING: "Precision Works",
    Sector.CULTURE: "Museum of Arts",
    Sector.FINANCE: "Savings Bank",
    Sector.ACADEMIA: "University",
    Sector.GOVERNMENT: "Statistics Bureau",
}
# One cycle of stages: every size from a handful of problems up gets each stage, and training
# (the stage with runs) comes first so that the busiest institution's first problem has runs.
STAGE_CYCLE = [
    Problem.Stage.TRAINING, Problem.Stage.CERTIFIED, Problem.Stage.RELEASED,
    Problem.Stage.DATA_READY, Problem.Stage.PROPOSED, Problem.Stage.TRAINING,
    Problem.Stage.CERTIFIED, Problem.Stage.TRAINING, Problem.Stage.RATIFIED,
    Problem.Stage.RELEASED, Problem.Stage.DATA_READY, Problem.Stage.TRAINING,
    Problem.Stage.PROPOSED, Problem.Stage.CERTIFIED, Problem.Stage.TRAINING,
    Problem.Stage.RATIFIED, Problem.Stage.DATA_READY, Problem.Stage.RELEASED,
    Problem.Stage.PROPOSED, Problem.Stage.TRAINING,
]  # fmt: skip
WITH_RUNS = (Problem.Stage.TRAINING, Problem.Stage.CERTIFIED, Problem.Stage.RELEASED)
ROUND_TIMINGS = ("dispatch", "queue_wait", "site_compute", "collection")
REJECTIONS = {
    "norm": "The update moves the model farther than the run allows (norm=41.2).",
    "hash_mismatch": "The site's data file differs from the registered dataset (SHA-256 mismatch).",
    "missing_column": "The site's file lacks a column the model needs (column=age).",
}
# Everyday acts that make up most of a real trail; their rows are not what the pages read.
FILLER_ACTIONS = [
    ("problem.commented", 50),
    ("problem.updated", 20),
    ("datasets.rechecked", 10),
    ("institution.updated", 10),
    ("member.invitation_resent", 5),
    ("member.role_changed", 5),
]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@contextmanager
def explicit_times(*model_classes: type[models.Model]) -> Iterator[None]:
    """Let bulk_create keep the times the seed sets: it writes history, not acts of now."""
    changed = []
    for model in model_classes:
        for field in model._meta.concrete_fields:
            if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                changed.append((field, field.auto_now, field.auto_now_add))
                field.auto_now = field.auto_now_add = False
    try:
        yield
    finally:
        for field, auto_now, auto_now_add in changed:
            field.auto_now, field.auto_now_add = auto_now, auto_now_add


@dataclass
class Story:
    """One act for the audit trail, before it gets its place in the chain."""

    at: datetime.datetime
    action: str
    actor: Any = None
    subject_institution_id: int | None = None
    target: models.Model | None = None
    payload: dict | None = None


class Seeder:
    """Builds the rows in dependency order, keeping what later steps refer to in memory.

    Every step also tells the acts it stands for (``tell``); the audit trail is written last,
    from that story in time order, topped up with everyday acts to the requested size.
    """

    def __init__(self, *, institutions: int, rounds: int, runs: int, events: int, seed: int):
        self.n_institutions = institutions
        self.n_rounds = rounds
        self.n_runs = runs
        self.n_events = events
        self.rng = random.Random(seed)
        self.now = timezone.now()
        self.origin = self.now - datetime.timedelta(days=365)
        self.story: list[Story] = []
        self.counts: dict[str, int] = {}

    # --- helpers ------------------------------------------------------------------------------

    def at(self, low_days: float, high_days: float) -> datetime.datetime:
        """A moment between ``low_days`` and ``high_days`` after the alliance's first day."""
        days = self.rng.uniform(low_days, high_days)
        return min(self.origin + datetime.timedelta(days=days), self.now)

    def tell(self, at: datetime.datetime, action: str, **kwargs: Any) -> None:
        self.story.append(Story(at=at, action=action, **kwargs))

    def create(self, model: type[models.Model], rows: list) -> list:
        self.counts[model._meta.verbose_name_plural] = self.counts.get(
            model._meta.verbose_name_plural, 0
        ) + len(rows)
        created = []
        for start in range(0, len(rows), BATCH):
            created += model.objects.bulk_create(rows[start : start + BATCH])
        return created

    def prefix(self) -> str:
        taken = set(
            Institution.objects.filter(slug__startswith="bench").values_list("slug", flat=True)
        )
        for k in range(1, 1000):
            prefix = "bench" if k == 1 else f"bench{k}"
            if f"{prefix}-001" not in taken:
                return prefix
        raise CommandError("Too many bench seeds in this database already.")

    # --- the alliance -------------------------------------------------------------------------

    def alliance(self) -> None:
        prefix = self.prefix()
        n = self.n_institutions
        applied = max(1, n // 20)
        suspended, withdrawn = n // 50, n // 50
        statuses = (
            [Institution.Status.ADMITTED] * (n - applied - suspended - withdrawn)
            + [Institution.Status.SUSPENDED] * suspended
            + [Institution.Status.WITHDRAWN] * withdrawn
            + [Institution.Status.APPLIED] * applied
        )
        sectors = list(Sector.values)
        password = make_password(PASSWORD)  # hashed once: hashing is deliberately slow
        staff_name = f"{prefix}-staff"
        self.staff = self.create(
            User,
            [
                User(
                    username=staff_name,
                    email=f"{staff_name}@bench.example.org",
                    first_name="Alliance",
                    last_name="Staff",
                    is_staff=True,
                    is_superuser=True,
                    password=password,
                    date_joined=self.origin,
                )
            ],
        )[0]
        rows = []
        for i, status in enumerate(statuses):
            sector = sectors[i % len(sectors)]
            name = f"{CITIES[i % len(CITIES)]} {KINDS[sector]} {i + 1}"
            if prefix != "bench":  # a forced second seed: names are unique too
                name += f" ({prefix})"
            applied_at = self.at(0, 300 if status == Institution.Status.APPLIED else 60)
            rows.append(
                Institution(
                    name=name,
                    slug=f"{prefix}-{i + 1:03d}",
                    sector=sector,
                    country="Taiwan",
                    website=f"https://{prefix}-{i + 1:03d}.example.org",
                    description=f"A {KINDS[sector].lower()} that joined the bench alliance.",
                    status=status,
                    status_reason="Dues unpaid." if status == Institution.Status.SUSPENDED else "",
                    admitted_at=(
                        None
                        if status == Institution.Status.APPLIED
                        else applied_at + datetime.timedelta(days=2)
                    ),
                    created_at=applied_at,
                    updated_at=applied_at,
                )
            )
        self.institutions = self.create(Institution, rows)
        self.slug_of = {i.pk: i.slug for i in self.institutions}
        self.admitted = [i for i in self.institutions if i.status == Institution.Status.ADMITTED]
        self.busy = self.admitted[0]

        applications, users = [], []
        for inst in self.institutions:
            pending = inst.status == Institution.Status.APPLIED
            applications.append(
                MembershipApplication(
                    institution=inst,
                    contact_name=f"Contact of {inst.name}",
                    contact_email=f"contact@{inst.slug}.example.org",
                    motivation="We want to train models with the other members.",
                    status=(
                        MembershipApplication.Status.PENDING
                        if pending
                        else MembershipApplication.Status.APPROVED
                    ),
                    reviewed_by=None if pending else self.staff,
                    reviewed_at=inst.admitted_at,
                    submitted_at=inst.created_at,
                )
            )
            self.tell(inst.created_at, "application.submitted", target=inst)
            if pending:
                continue
            self.tell(inst.admitted_at, "application.approved", actor=self.staff, target=inst)
            self.tell(inst.admitted_at, "institution.admitted", actor=self.staff, target=inst)
            if inst.status != Institution.Status.ADMITTED:
                action = (
                    "institution.suspended"
                    if inst.status == Institution.Status.SUSPENDED
                    else "institution.withdrawn"
                )
                self.tell(self.at(300, 360), action, actor=self.staff, target=inst)
            for short in ROLE_USERS.values():
                username = f"{inst.slug}-{short}"
                users.append(
                    User(
                        username=username,
                        email=f"{username}@bench.example.org",
                        first_name=short.capitalize(),
                        last_name=inst.name,
                        password=password,
                        date_joined=inst.admitted_at,
                    )
                )
        self.create(MembershipApplication, applications)
        users = self.create(User, users)
        by_slug = {i.slug: i for i in self.institutions}
        memberships = []
        self.people: dict[tuple[int, str], Any] = {}
        for user in users:
            slug, short = user.username.rsplit("-", 1)
            inst = by_slug[slug]
            role = next(r for r, s in ROLE_USERS.items() if s == short)
            self.people[(inst.pk, role)] = user
            joined = inst.admitted_at + datetime.timedelta(days=self.rng.uniform(0.1, 20))
            memberships.append(
                Membership(
                    user=user,
                    institution=inst,
                    role=role,
                    invited_by=self.staff if role == Role.ADMIN else None,
                    invited_at=inst.admitted_at,
                    joined_at=joined,
                )
            )
            inviter = self.staff if role == Role.ADMIN else self.people.get((inst.pk, Role.ADMIN))
            self.tell(
                inst.admitted_at,
                "member.invited",
                actor=inviter,
                target=inst,
                payload={"username": user.username, "role": role},
            )
            self.tell(joined, "member.joined", actor=user, target=inst)
        self.create(Membership, memberships)
        self.permissions_for_people(users)

    def permissions_for_people(self, users: list) -> None:
        """The groups and admin object permissions ``membership_sync_permissions`` would grant."""
        groups = self.create(
            Group,
            [
                Group(name=institution_group_name(inst.pk, role))
                for inst in self.institutions
                if inst.status != Institution.Status.APPLIED
                for role in Role.values
            ],
        )
        self.groups = {g.name: g for g in groups}
        through = User.groups.through
        self.create(
            through,
            [
                through(
                    user_id=pk,
                    group_id=self.groups[institution_group_name(inst_id, role)].pk,
                )
                for (inst_id, role), user in self.people.items()
                for pk in [user.pk]
            ],
        )
        institution_type = ContentType.objects.get_for_model(Institution)
        perms = {
            p.codename: p
            for p in Permission.objects.filter(
                content_type=institution_type,
                codename__in=[p.split(".")[1] for p in ADMIN_OBJECT_PERMS],
            )
        }
        self.create(
            UserObjectPermission,
            [
                UserObjectPermission(
                    user=user,
                    permission=perm,
                    content_type=institution_type,
                    object_pk=str(inst_id),
                )
                for (inst_id, role), user in self.people.items()
                if role == Role.ADMIN
                for perm in perms.values()
            ],
        )

    # --- problems -----------------------------------------------------------------------------

    def features(self, task: str) -> tuple[list[dict], str, list[str] | None]:
        count = self.rng.randint(5, 9)
        features: list[dict] = [
            {
                "name": f"measure_{k + 1}",
                "type": "numeric",
                "unit": "",
                "min": 0,
                "max": 100 * (k + 1),
                "required": True,
            }
            for k in range(count)
        ]
        label = "outcome"
        if task == "regression":
            features.append({"name": label, "type": "numeric", "unit": "", "min": 0, "max": 5000})
            return features, label, None
        classes = ["0", "1"] if task == "binary" else ["low", "medium", "high"]
        features.append(
            {"name": label, "type": "categorical", "categories": classes, "required": True}
        )
        return features, label, classes

    def problems(self) -> None:
        n = max(6, self.n_institutions * 3 // 2)
        problems, self.plans = [], []
        for i in range(n):
            proposer = self.busy if i % 5 == 0 else self.rng.choice(self.admitted)
            stage = STAGE_CYCLE[i % len(STAGE_CYCLE)]
            task = ("binary", "binary", "multiclass", "regression")[i % 4]
            created = self.at(40, 200)
            problems.append(
                Problem(
                    slug=f"{proposer.slug}-problem-{i + 1}",
                    title=f"{KINDS[proposer.sector]} question {i + 1}",
                    sector=proposer.sector,
                    summary="A question the alliance trains a model for, on data that stays "
                    "at each member.",
                    question=f"What will outcome {i + 1} be?",
                    visibility=(
                        Problem.Visibility.INVITATION if i % 10 == 9 else Problem.Visibility.LISTED
                    ),
                    stage=stage,
                    proposer=proposer,
                    proposed_by=self.people[(proposer.pk, Role.RESEARCHER)],
                    current_revision=2 if i % 5 == 3 else 1,
                    ratified_revision=(
                        None if stage == Problem.Stage.PROPOSED else (2 if i % 5 == 3 else 1)
                    ),
                    created_at=created,
                    updated_at=created,
                )
            )
            self.plans.append({"task": task, "created": created})
        self.problem_list = self.create(Problem, problems)

        revisions, participations = [], []
        self.members_of: dict[int, list[Participation]] = {}
        for problem, plan in zip(self.problem_list, self.plans, strict=True):
            features, label, classes = self.features(plan["task"])
            plan.update(features=features, label=label, classes=classes)
            researcher = self.people[(problem.proposer_id, Role.RESEARCHER)]
            self.tell(
                problem.created_at,
                "problem.proposed",
                actor=researcher,
                target=problem,
                payload={"slug": problem.slug, "revision": 1},
            )
            for number in range(1, problem.current_revision + 1):
                revisions.append(
                    ProblemRevision(
                        problem=problem,
                        number=number,
                        task_type=plan["task"],
                        label_column=label,
                        features=features,
                        metric="rmse" if plan["task"] == "regression" else "roc_auc",
                        threshold=40.0 if plan["task"] == "regression" else 0.85,
                        change_note="" if number == 1 else "Tighter ranges for two measures.",
                        created_by=researcher,
                        created_at=problem.created_at + datetime.timedelta(days=3 * number - 3),
                    )
                )
            with_runs = problem.stage in WITH_RUNS
            others = [i for i in self.admitted if i.pk != problem.proposer_id]
            contributors = self.rng.randint(2, 5) if with_runs else self.rng.randint(1, 4)
            chosen = self.rng.sample(others, min(len(others), contributors + 2))
            busy_joins = problem.proposer_id != self.busy.pk and self.rng.random() < 0.4
            if busy_joins and self.busy not in chosen:
                chosen[0] = self.busy
            rows = [(problem.proposer, Participation.Role.CONTRIBUTOR)]
            for k, inst in enumerate(chosen):
                role = (
                    Participation.Role.CONTRIBUTOR
                    if k < contributors
                    else (Participation.Role.VALIDATOR, Participation.Role.OBSERVER)[
                        k - contributors
                    ]
                )
                rows.append((inst, role))
            mine = []
            for k, (inst, role) in enumerate(rows):
                status = Participation.Status.ACTIVE
                if problem.stage == Problem.Stage.PROPOSED and k == len(rows) - 1:
                    status = (Participation.Status.REQUESTED, Participation.Status.INVITED)[
                        problem.pk % 2
                    ]
                joined = problem.created_at + datetime.timedelta(days=1 + k)
                mine.append(
                    Participation(
                        problem=problem,
                        institution=inst,
                        role=role,
                        status=status,
                        message="" if k == 0 else "We would like to take part.",
                        requested_by=self.people[(inst.pk, Role.ADMIN)],
                        decided_by=(
                            None
                            if status != Participation.Status.ACTIVE
                            else self.people[(problem.proposer_id, Role.ADMIN)]
                        ),
                        decided_at=None if status != Participation.Status.ACTIVE else joined,
                        created_at=joined,
                    )
                )
                if k:
                    self.tell(
                        joined,
                        "participation.requested",
                        actor=self.people[(inst.pk, Role.ADMIN)],
                        target=problem,
                        subject_institution_id=inst.pk,
                        payload={"role": role},
                    )
                    if status == Participation.Status.ACTIVE:
                        self.tell(
                            joined,
                            "participation.accepted",
                            actor=self.people[(problem.proposer_id, Role.ADMIN)],
                            target=problem,
                            subject_institution_id=inst.pk,
                            payload={"role": role},
                        )
            participations += mine
            self.members_of[problem.pk] = mine
        revisions = self.create(ProblemRevision, revisions)
        self.create(Participation, participations)
        self.ratifications(revisions)
        self.object_permissions()

    def ratifications(self, revisions: list[ProblemRevision]) -> None:
        by_problem = {p.pk: p for p in self.problem_list}
        rows = []
        for revision in revisions:
            problem = by_problem[revision.problem_id]
            ratifiers = [p for p in self.members_of[problem.pk] if p.must_ratify]
            if revision.number == problem.current_revision and problem.ratified_revision is None:
                ratifiers = ratifiers[: max(1, len(ratifiers) // 2)]
            for k, p in enumerate(ratifiers):
                at = revision.created_at + datetime.timedelta(days=1, hours=k)
                actor = self.people[(p.institution_id, Role.RESEARCHER)]
                rows.append(
                    Ratification(
                        revision=revision,
                        institution_id=p.institution_id,
                        ratified_by=actor,
                        created_at=at,
                    )
                )
                self.tell(
                    at,
                    "problem.ratified",
                    actor=actor,
                    target=problem,
                    payload={"revision": revision.number},
                )
        self.create(Ratification, rows)

    def object_permissions(self) -> None:
        """The group grants ``problem_sync_permissions`` derives from the participations."""
        problem_type = ContentType.objects.get_for_model(Problem)
        perms = {p.codename: p for p in Permission.objects.filter(content_type=problem_type)}
        rows = []
        for problem in self.problem_list:
            for codename, group_name in sorted(_desired_grants(problem)):
                rows.append(
                    GroupObjectPermission(
                        group=self.groups[group_name],
                        permission=perms[codename],
                        content_type=problem_type,
                        object_pk=str(problem.pk),
                    )
                )
        self.create(GroupObjectPermission, rows)

    # --- datasets and agreements --------------------------------------------------------------

    def data_and_agreements(self) -> None:
        datasets, versions = [], []
        self.datasets_of: dict[int, list[Dataset]] = {}
        stages = list(Problem.Stage.values)
        for problem, plan in zip(self.problem_list, self.plans, strict=True):
            stage = stages.index(problem.stage)
            if stage < stages.index(Problem.Stage.RATIFIED):
                continue
            contributors = [
                p
                for p in self.members_of[problem.pk]
                if p.role == Participation.Role.CONTRIBUTOR
                and p.status == Participation.Status.ACTIVE
            ]
            if stage == stages.index(Problem.Stage.RATIFIED):
                contributors = contributors[:1]
            mine = []
            for k, p in enumerate(contributors):
                at = problem.created_at + datetime.timedelta(days=10 + k)
                steward = self.people[(p.institution_id, Role.DATA_STEWARD)]
                rows = self.rng.randint(300, 20000)
                mine.append(
                    Dataset(
                        problem=problem,
                        institution_id=p.institution_id,
                        registered_by=steward,
                        name=f"Records {k + 1} for {problem.title}",
                        description="Rows kept at the member; only this summary is shared.",
                        site_key=f"{problem.slug}.csv",
                        row_count=rows,
                        sha256=sha(f"{problem.slug}/{p.institution_id}"),
                        label_column=plan["label"],
                        columns=[
                            {"name": f["name"], "type": f["type"], "missing": 0}
                            for f in plan["features"]
                        ],
                        collection_start=datetime.date(2020, 1, 1),
                        collection_end=datetime.date(2024, 12, 31),
                        revision=problem.current_revision,
                        created_at=at,
                    )
                )
                self.tell(
                    at,
                    "dataset.registered",
                    actor=steward,
                    target=problem,
                    subject_institution_id=p.institution_id,
                    payload={"dataset": mine[-1].name, "rows": rows},
                )
            datasets += mine
            self.datasets_of[problem.pk] = mine
            drafted = problem.created_at + datetime.timedelta(days=15)
            pending_only = stage == stages.index(Problem.Stage.RATIFIED)
            amend = not pending_only and problem.pk % 4 == 0
            for number in range(1, 3 if amend else 2):
                status = (
                    AgreementVersion.Status.PENDING
                    if pending_only or number == 2
                    else AgreementVersion.Status.EFFECTIVE
                )
                terms = {"problem": problem.slug, "version": number}
                versions.append(
                    (
                        AgreementVersion(
                            problem=problem,
                            number=number,
                            status=status,
                            purpose="Train and validate models for the problem's question.",
                            model_families=["logistic_regression", "mlp"],
                            min_contributors=2,
                            download_scope="participants",
                            expires_on=(self.now + datetime.timedelta(days=365)).date(),
                            clauses="No attempt is made to re-identify anyone.",
                            terms_sha256=sha(json.dumps(terms, sort_keys=True)),
                            created_by=self.people[(problem.proposer_id, Role.RESEARCHER)],
                            created_at=drafted + datetime.timedelta(days=20 * (number - 1)),
                            effective_at=(
                                drafted + datetime.timedelta(days=3)
                                if status == AgreementVersion.Status.EFFECTIVE
                                else None
                            ),
                        ),
                        contributors,
                    )
                )
        self.create(Dataset, datasets)
        created = self.create(AgreementVersion, [v for v, _c in versions])
        self.effective: dict[int, AgreementVersion] = {}
        approvals = []
        for version, (_v, contributors) in zip(created, versions, strict=True):
            problem = version.problem
            self.tell(
                version.created_at,
                "agreement.drafted",
                actor=version.created_by,
                target=version,
                payload={
                    "problem": problem.slug,
                    "version": version.number,
                    "terms_sha256": version.terms_sha256,
                },
            )
            deciders = contributors
            if version.status == AgreementVersion.Status.PENDING:
                # The busiest institution's steward is among those still to decide.
                deciders = [p for p in contributors if p.institution_id != self.busy.pk]
                deciders = deciders[: max(0, len(deciders) - 1)]
            else:
                self.effective[problem.pk] = version
            for k, p in enumerate(deciders):
                at = version.created_at + datetime.timedelta(hours=6 * (k + 1))
                steward = self.people[(p.institution_id, Role.DATA_STEWARD)]
                approvals.append(
                    AgreementApproval(
                        version=version,
                        institution_id=p.institution_id,
                        decision=AgreementApproval.Decision.APPROVED,
                        decided_by=steward,
                        terms_sha256=version.terms_sha256,
                        decided_at=at,
                    )
                )
                self.tell(
                    at,
                    "agreement.approved",
                    actor=steward,
                    target=version,
                    payload={
                        "problem": problem.slug,
                        "version": version.number,
                        "terms_sha256": version.terms_sha256,
                    },
                )
            if version.status == AgreementVersion.Status.EFFECTIVE:
                self.tell(
                    version.effective_at,
                    "agreement.effective",
                    target=version,
                    subject_institution_id=problem.proposer_id,
                    payload={"problem": problem.slug, "version": version.number},
                )
        self.create(AgreementApproval, approvals)

    # --- runs, rounds, sites, models ----------------------------------------------------------

    def run_lengths(self) -> list[int]:
        weights = [3.0] + [self.rng.uniform(0.3, 1.7) for _ in range(self.n_runs - 1)]
        total = sum(weights)
        lengths = [max(1, int(self.n_rounds * w / total)) for w in weights]
        lengths[0] += self.n_rounds - sum(lengths)  # the largest absorbs the rounding
        return lengths

    def runs(self) -> None:
        trained = [p for p in self.problem_list if p.stage in WITH_RUNS]
        if not trained:
            raise CommandError("No problem reached training: seed more institutions.")
        busy_problem = trained[0]
        share = max(1, self.n_runs // 10)
        owners = [busy_problem] * share + [
            trained[k % len(trained)] for k in range(self.n_runs - share)
        ]
        lengths = self.run_lengths()
        plans = {p.pk: plan for p, plan in zip(self.problem_list, self.plans, strict=True)}
        runs, self.run_plans = [], []
        numbers: dict[int, int] = {}
        for k, (problem, length) in enumerate(zip(owners, lengths, strict=True)):
            plan = plans[problem.pk]
            period = self.rng.uniform(20, 90)
            span = datetime.timedelta(seconds=period * (length + 1))
            if k == 0:
                status = TrainingRun.Status.RUNNING
                # Its last round started a few seconds ago and waits for half of its sites.
                started = self.now - datetime.timedelta(seconds=period * (length - 1) + 5)
            else:
                status = self.rng.choices(
                    [
                        TrainingRun.Status.SUCCEEDED,
                        TrainingRun.Status.FAILED,
                        TrainingRun.Status.CANCELLED,
                    ],
                    [85, 8, 7],
                )[0]
                latest = (self.now - span - self.origin).total_seconds() / 86400
                started = self.at(min(220, latest), max(min(220, latest), latest))
            numbers[problem.pk] = numbers.get(problem.pk, 0) + 1
            launcher = self.people[(problem.proposer_id, Role.RESEARCHER)]
            family = (
                ModelFamily.LINEAR_REGRESSION
                if plan["task"] == "regression"
                else (ModelFamily.LOGISTIC_REGRESSION, ModelFamily.MLP)[k % 2]
            )
            features = [f for f in plan["features"] if f["name"] != plan["label"]]
            runs.append(
                TrainingRun(
                    problem=problem,
                    number=numbers[problem.pk],
                    agreement=self.effective[problem.pk],
                    revision=problem.current_revision,
                    launched_by=launcher,
                    institution=problem.proposer,
                    model_family=family,
                    strategy=list(Strategy.values)[k % len(Strategy.values)],
                    rounds=length + (20 if status != TrainingRun.Status.SUCCEEDED else 0),
                    local_epochs=self.rng.randint(1, 3),
                    batch_size=32,
                    learning_rate=0.1,
                    min_contributors=2,
                    round_deadline=600,
                    seed=k,
                    max_update_norm=settings.FEDERATION_MAX_UPDATE_NORM,
                    max_update_bytes=settings.FEDERATION_MAX_UPDATE_BYTES,
                    spec={
                        "task": "regression" if plan["task"] == "regression" else "classification",
                        "features": [f["name"] for f in features],
                        "label": plan["label"],
                        "classes": plan["classes"],
                        "feature_ranges": [[f["min"], f["max"]] for f in features],
                    },
                    status=status,
                    reasons=(
                        ["Round failed: too few contributions arrived."]
                        if status == TrainingRun.Status.FAILED
                        else []
                    ),
                    cancelled_by=launcher if status == TrainingRun.Status.CANCELLED else None,
                    created_at=started - datetime.timedelta(seconds=3),
                    started_at=started,
                    finished_at=(
                        None
                        if status == TrainingRun.Status.RUNNING
                        else started + span - datetime.timedelta(seconds=period)
                    ),
                )
            )
            self.run_plans.append({"length": length, "period": period, "task": plan["task"]})
        self.run_list = self.create(TrainingRun, runs)
        for run in self.run_list:
            self.tell(
                run.created_at,
                "run.launched",
                actor=run.launched_by,
                target=run,
                subject_institution_id=run.institution_id,
                payload={
                    "problem": run.problem.slug,
                    "run": run.number,
                    "agreement_version": run.agreement.number,
                    "strategy": run.strategy,
                    "rounds": run.rounds,
                },
            )
            if run.finished_at is not None:
                action = {
                    TrainingRun.Status.SUCCEEDED: "run.succeeded",
                    TrainingRun.Status.FAILED: "run.failed",
                    TrainingRun.Status.CANCELLED: "run.cancelled",
                }[run.status]
                actor = run.cancelled_by if run.status == TrainingRun.Status.CANCELLED else None
                self.tell(
                    run.finished_at,
                    action,
                    actor=actor,
                    target=run,
                    subject_institution_id=run.institution_id,
                    payload={"problem": run.problem.slug, "run": run.number},
                )
        self.rounds()

    def curve(self, task: str, progress: float) -> dict[str, float]:
        """Metrics that improve over a run, with a little noise, as real rounds do."""
        gain = 1 - math.exp(-4 * progress)
        noise = self.rng.gauss(0, 0.01)
        if task == "regression":
            rmse = 120 - 80 * gain + 5 * noise * 100
            return {
                "loss": round(rmse**2 / 2000, 6),
                "mae": round(rmse * 0.8, 4),
                "mse": round(rmse**2, 4),
                "r2": round(0.2 + 0.65 * gain + noise, 6),
                "rmse": round(rmse, 4),
            }
        accuracy = min(0.99, 0.55 + 0.38 * gain + noise)
        return {
            "accuracy": round(accuracy, 6),
            "f1": round(max(0.0, accuracy - 0.04), 6),
            "loss": round(0.7 - 0.45 * gain + noise, 6),
            "roc_auc": round(min(0.999, accuracy + 0.03), 6),
        }

    def rounds(self) -> None:
        models_, rounds_, sites_ = [], [], []
        for run, plan in zip(self.run_list, self.run_plans, strict=True):
            datasets = self.datasets_of[run.problem_id][:6]
            length, period = plan["length"], plan["period"]
            models_.append(self.model_version(run, 0, {}, run.started_at))
            for number in range(1, length + 1):
                started = run.started_at + datetime.timedelta(seconds=period * (number - 1))
                last = number == length
                status = Round.Status.SUCCEEDED
                if last and run.status == TrainingRun.Status.RUNNING:
                    status = Round.Status.RUNNING
                elif last and run.status == TrainingRun.Status.FAILED:
                    status = Round.Status.FAILED
                elif last and run.status == TrainingRun.Status.CANCELLED:
                    status = Round.Status.CANCELLED
                metrics = self.curve(plan["task"], number / max(length, 30))
                sites = [self.site_round(status, d, metrics, started, plan) for d in datasets]
                compute = max(s.timings.get("compute", 0.0) for s in sites)
                timings = {
                    "dispatch": round(self.rng.uniform(0.002, 0.02), 6),
                    "queue_wait": round(self.rng.uniform(0.001, 0.05), 6),
                    "site_compute": round(compute, 6),
                    "collection": round(self.rng.uniform(0.003, 0.03), 6),
                }
                wall = compute + sum(timings.values())
                round_ = Round(
                    run=run,
                    number=number,
                    status=status,
                    started_at=started,
                    deadline_at=started + datetime.timedelta(seconds=run.round_deadline),
                    contributors=sum(s.status == SiteRound.Status.CONTRIBUTED for s in sites),
                    timings=timings,
                )
                if status == Round.Status.SUCCEEDED:
                    timings["aggregation"] = round(self.rng.uniform(0.002, 0.02), 6)
                    timings["persistence"] = round(self.rng.uniform(0.003, 0.03), 6)
                    round_.metrics = metrics
                    round_.closed_at = started + datetime.timedelta(seconds=wall + 0.05)
                    models_.append(self.model_version(run, number, metrics, round_.closed_at))
                elif status == Round.Status.FAILED:
                    round_.contributors = 1
                    round_.closed_at = started + datetime.timedelta(seconds=run.round_deadline)
                    round_.reason = "Only 1 of the 2 contributions the run needs arrived."
                elif status == Round.Status.CANCELLED:
                    round_.closed_at = started + datetime.timedelta(seconds=wall / 2)
                    round_.reason = "The run was cancelled."
                rounds_.append(round_)
                sites_.append(sites)
        model_rows = self.create(ModelVersion, models_)
        by_key = {(m.run_id, m.round_number): m for m in model_rows}
        for round_ in rounds_:
            round_.model = by_key.get((round_.run_id, round_.number))
        rounds_ = self.create(Round, rounds_)
        rows = []
        for round_, sites in zip(rounds_, sites_, strict=True):
            for s in sites:
                s.round = round_
                rows.append(s)
            self.round_story(round_, sites)
        self.create(SiteRound, rows)

    def model_version(
        self, run: TrainingRun, number: int, metrics: dict, at: datetime.datetime
    ) -> ModelVersion:
        digest = sha(f"{run.problem.slug}/{run.number}/{number}")
        return ModelVersion(
            run=run,
            round_number=number,
            file=f"models/{digest[:2]}/{digest}.npy",
            sha256=digest,
            size=1664,
            metrics=metrics,
            created_at=at,
        )

    def site_round(
        self,
        status: str,
        dataset: Dataset,
        metrics: dict[str, float],
        started: datetime.datetime,
        plan: dict,
    ) -> SiteRound:
        rng = self.rng
        compute = rng.uniform(0.05, 0.4) * (1 + dataset.row_count / 10000)
        timings = {
            "load": round(compute * 0.2, 6),
            "train": round(compute * 0.7, 6),
            "evaluate": round(compute * 0.1, 6),
            "queue_wait": round(rng.uniform(0.001, 0.05), 6),
            "compute": round(compute, 6),
            "return": round(rng.uniform(0.002, 0.03), 6),
            "dispatch": round(rng.uniform(0.001, 0.02), 6),
        }
        site = SiteRound(
            institution_id=dataset.institution_id,
            dataset=dataset,
            sample_count=int(dataset.row_count * 0.8),
            timings=timings,
            answered_at=started + datetime.timedelta(seconds=compute + 0.05),
        )
        draw = rng.random()
        if status == Round.Status.RUNNING and draw < 0.5:
            site.status, site.timings, site.answered_at = SiteRound.Status.DISPATCHED, {}, None
            site.sample_count = None
        elif status == Round.Status.CANCELLED:
            site.status, site.timings, site.answered_at = SiteRound.Status.CANCELLED, {}, None
            site.sample_count = None
        elif draw < 0.04:
            site.status, site.answered_at, site.sample_count = SiteRound.Status.DROPPED, None, None
            site.timings = {"dispatch": timings["dispatch"]}
            site.reason = "No answer before the round's deadline."
        elif draw < 0.06:
            code = rng.choice(sorted(REJECTIONS))
            site.status = SiteRound.Status.REJECTED
            site.reason_code, site.reason = code, REJECTIONS[code]
            site.sample_count = None
        else:
            site.status = SiteRound.Status.CONTRIBUTED
            site.metrics = {k: round(v + rng.gauss(0, 0.01), 6) for k, v in metrics.items()} | {
                "validation_rows": float(dataset.row_count // 5)
            }
            site.update_sha256 = sha(f"{dataset.pk}/{started.isoformat()}")
            site.update_bytes = 1664
        return site

    def round_story(self, round_: Round, sites: list[SiteRound]) -> None:
        """The round's events as the run services write them: each names the run as target."""
        run = round_.run
        slugs = {s.institution_id: self.slug_of[s.institution_id] for s in sites}
        self.tell(
            round_.started_at,
            "round.started",
            target=run,
            subject_institution_id=run.institution_id,
            payload={
                "problem": run.problem.slug,
                "run": run.number,
                "round": round_.number,
                "agreement_version": run.agreement.number,
                "sites": sorted(slugs.values()),
                "datasets": {slugs[s.institution_id]: s.dataset.sha256 for s in sites},
                "excluded": round_.excluded,
            },
        )
        for s in sites:
            if s.status == SiteRound.Status.REJECTED:
                self.tell(
                    s.answered_at,
                    "round.update_rejected",
                    target=run,
                    subject_institution_id=s.institution_id,
                    payload={
                        "run": run.number,
                        "round": round_.number,
                        "site": slugs[s.institution_id],
                        "code": s.reason_code,
                        "reason": s.reason,
                    },
                )
        if round_.status in (Round.Status.SUCCEEDED, Round.Status.FAILED):
            contributed = [s for s in sites if s.status == SiteRound.Status.CONTRIBUTED]
            summary = {
                "problem": run.problem.slug,
                "run": run.number,
                "round": round_.number,
                "contributed": sorted(slugs[s.institution_id] for s in contributed),
                "dropped": sorted(
                    slugs[s.institution_id] for s in sites if s.status == SiteRound.Status.DROPPED
                ),
                "rejected": {
                    slugs[s.institution_id]: s.reason_code
                    for s in sites
                    if s.status == SiteRound.Status.REJECTED
                },
                "updates": {slugs[s.institution_id]: s.update_sha256 for s in contributed},
            }
            if round_.status == Round.Status.SUCCEEDED:
                action = "round.closed"
                payload = {
                    **summary,
                    "model_sha256": round_.model.sha256 if round_.model else None,
                    "local_update_metrics": round_.metrics,
                    "started_from_metrics": round_.metrics,
                    "at_deadline": False,
                }
            else:
                action, payload = "round.failed", {**summary, "reason": round_.reason}
            self.tell(
                round_.closed_at,
                action,
                target=run,
                subject_institution_id=run.institution_id,
                payload=payload,
            )

    # --- the audit trail ----------------------------------------------------------------------

    def filler(self, count: int) -> list[Story]:
        actions, weights = zip(*FILLER_ACTIONS, strict=True)
        acting = [
            (inst_id, user)
            for (inst_id, role), user in self.people.items()
            if role in (Role.ADMIN, Role.RESEARCHER)
        ]
        institutions = {i.pk: i for i in self.institutions}
        problems = self.problem_list
        story = []
        for action in self.rng.choices(actions, weights, k=count):
            inst_id, actor = self.rng.choice(acting)
            if action.startswith(("problem.", "datasets.")):
                target: models.Model = self.rng.choice(problems)
                payload: dict = {"revision": 1} if action == "problem.commented" else {}
            else:
                target, payload = institutions[inst_id], {}
            story.append(
                Story(
                    at=self.at(60, 365), action=action, actor=actor, target=target, payload=payload
                )
            )
        return story

    def audit_trail(self) -> None:
        """Append the story to the chain, hashed link by link as ``audit_record`` does."""
        story = self.story
        if len(story) > self.n_events:
            step = len(story) / self.n_events
            story = sorted(story, key=lambda s: s.at)
            story = [story[int(k * step)] for k in range(self.n_events)]
        else:
            story = story + self.filler(self.n_events - len(story))
        story.sort(key=lambda s: s.at)
        last = AuditEvent.objects.order_by("-seq").only("seq", "hash").first()
        seq, prev = (last.seq, last.hash) if last else (0, GENESIS_HASH)
        institution_of = {user.pk: inst_id for (inst_id, _role), user in self.people.items()}
        events = []
        for s in story:
            seq += 1
            target, actor = s.target, s.actor
            subject = s.subject_institution_id
            if subject is None and isinstance(target, Institution):
                subject = target.pk
            event = AuditEvent(
                seq=seq,
                created_at=s.at,
                actor=actor,
                actor_username=actor.get_username() if actor is not None else "",
                actor_institution_id=institution_of.get(actor.pk) if actor is not None else None,
                subject_institution_id=subject,
                action=s.action,
                target_type=target._meta.label_lower if target is not None else "",
                target_id=str(target.pk) if target is not None else "",
                target_label=str(target)[:255] if target is not None else "",
                # As audit_record: plain JSON now, so the hash covers what the database returns.
                payload=json.loads(json.dumps(s.payload or {}, cls=DjangoJSONEncoder)),
                prev_hash=prev,
            )
            event.hash = prev = event.compute_hash()
            events.append(event)
        # AuditEvent's own manager refuses bulk_create so that the application appends one event
        # at a time through audit_record. The seed builds the same chain (same seq, same
        # canonical bytes, same prev_hash links) and only writes it faster, through a plain
        # QuerySet; audit_verify() holds on the result.
        plain = models.QuerySet(model=AuditEvent)
        for start in range(0, len(events), BATCH):
            plain.bulk_create(events[start : start + BATCH])
        self.counts["audit events"] = len(events)

    def build(self) -> dict[str, int]:
        with explicit_times(
            User,
            Institution,
            MembershipApplication,
            Membership,
            Problem,
            ProblemRevision,
            Ratification,
            Participation,
            Dataset,
            AgreementVersion,
            TrainingRun,
            ModelVersion,
        ):
            self.alliance()
            self.problems()
            self.data_and_agreements()
            self.runs()
            self.audit_trail()
        return self.counts


class Command(BaseCommand):
    # A plain string: argparse cannot format a lazy translation.
    help = (
        "Fill an empty database with a large alliance to time the dashboards: institutions, "
        "people, problems in every stage, training runs with their rounds and sites, and a "
        "valid audit chain. Refuses a database that already holds institutions, problems or "
        "audit events unless --force."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--institutions", type=int, default=100)
        parser.add_argument("--rounds", type=int, default=10_000)
        parser.add_argument(
            "--runs", type=int, default=None, help="Default: one run per 100 rounds."
        )
        parser.add_argument("--events", type=int, default=100_000)
        parser.add_argument("--seed", type=int, default=1, help="Random seed (default 1).")
        parser.add_argument(
            "--force", action="store_true", help="Add to a database that is not empty."
        )

    def handle(self, *args: object, **options: Any) -> None:
        institutions, rounds = options["institutions"], options["rounds"]
        runs = options["runs"] or max(1, rounds // 100)
        if institutions < 6 or rounds < runs or options["events"] < 1:
            raise CommandError("Seed at least 6 institutions, one round per run and one event.")
        busy = (
            Institution.objects.exists() or Problem.objects.exists() or AuditEvent.objects.exists()
        )
        if busy and not options["force"]:
            raise CommandError(
                "This database is not empty; seed_bench fills an empty one (or pass --force)."
            )
        started = time.monotonic()
        seeder = Seeder(
            institutions=institutions,
            rounds=rounds,
            runs=runs,
            events=options["events"],
            seed=options["seed"],
        )
        with transaction.atomic():
            counts = seeder.build()
        # What autovacuum would do within a minute: planner statistics (without them the first
        # queries on the new rows are planned as if the tables were empty) and, on PostgreSQL,
        # the visibility map that lets counts be answered from an index alone. VACUUM cannot run
        # inside a transaction (a test's, for instance); ANALYZE can.
        vacuum = connection.vendor == "postgresql" and not connection.in_atomic_block
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE" if vacuum else "ANALYZE")
        # The chain as verify_audit checks it, which also leaves the checkpoint the pages' badge
        # starts from: a live alliance reaches that state one event at a time.
        chain = audit_verify()
        if not chain.ok:
            raise CommandError(f"The seeded audit chain does not verify: {chain.reason}")
        # And the log's first signed checkpoint over it, as after the live appends.
        audit_checkpoint_issue()
        for name, count in counts.items():
            self.stdout.write(f"{count:>8} {name}")
        self.stdout.write(
            f"Busiest institution {seeder.busy.slug} (people {seeder.busy.slug}-<role>, "
            f"staff {seeder.staff.username}, password {PASSWORD!r}); "
            f"seeded in {time.monotonic() - started:.1f} s."
        )
