"""The privacy budget ledger: every dataset's spends across all runs, composed, and kept in bounds.

Each round a dataset takes part in with differential privacy records its event
(``privacy_spend_round``, audited as ``privacy.spent``). A dataset's epsilon is every recorded
event of its records (same institution, same file) composed by the Rényi-DP accountant of
``dp-accounting`` and converted once at the dataset's delta (``projects.federation.privacy``).

``budget_projections`` is what the policy check asks before a launch: for each contributor,
what is spent, what the run needs, and whether the two together stay within the agreement's
ceiling. A run stays exactly at the ceiling is allowed; a hair above is refused.
"""

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.http import Http404
from django.utils.translation import gettext as _

from alliance.models import Institution
from alliance.permissions import membership_of
from alliance.services.audit import audit_record
from projects.federation import privacy
from projects.federation.protocol import DpSpec
from projects.models import (
    AgreementVersion,
    Dataset,
    PrivacySpend,
    Round,
    SiteRound,
    TrainingRun,
)

ACCOUNTANT = "dp-accounting 0.6.0, RDP"


def _events(spends: Iterable[PrivacySpend]) -> list[tuple[privacy.Event, int]]:
    return [(privacy.Event(s.noise_multiplier, s.sampling_rate, s.steps), 1) for s in spends]


def ledger_spends(dataset: Dataset) -> list[PrivacySpend]:
    """Every spend on the records of ``dataset``, whichever registration of them it was under."""
    return list(
        PrivacySpend.objects.filter(
            institution_id=dataset.institution_id, sha256=dataset.sha256
        ).order_by("created_at", "pk")
    )


def dataset_spent(dataset: Dataset, *, delta: float = privacy.DELTA) -> float:
    """The epsilon the dataset's records have spent across all runs (0 when none)."""
    return privacy.epsilon(_events(ledger_spends(dataset)), delta)


def reserved_events(dataset: Dataset) -> list[tuple[privacy.Event, int]]:
    """The rounds that DP runs still under way will spend on these records: each run's rounds
    not yet recorded, under its own settings. A launch counts them as good as spent, so two
    runs launched side by side cannot each take the whole remaining budget."""
    same = Dataset.objects.filter(
        institution_id=dataset.institution_id,
        sha256=dataset.sha256,
        status=Dataset.Status.ACTIVE,
        purpose=Dataset.Purpose.TRAINING,
    )
    under_way = TrainingRun.objects.filter(
        status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING],
        problem__in=same.values("problem"),
    ).annotate(
        spent_rounds=Count(
            "privacy_spends__round_number",
            filter=models.Q(
                privacy_spends__institution_id=dataset.institution_id,
                privacy_spends__sha256=dataset.sha256,
            ),
            distinct=True,
        )
    )
    events = []
    for run in under_way:
        raw = (run.spec or {}).get("dp")
        remaining = run.rounds - run.spent_rounds  # type: ignore[attr-defined]
        if not raw or remaining <= 0:
            continue
        event = planned_event(
            dataset,
            dp=DpSpec.from_json(raw),
            batch_size=run.batch_size,
            epochs=run.local_epochs,
            validation_share=run.validation_share,
        )
        events.append((event, remaining))
    return events


@dataclass(frozen=True)
class Projection:
    """What a planned run would do to one dataset's budget."""

    dataset: Dataset
    spent: float  # before the run
    needed: float  # the run alone
    total: float  # spent and needed, composed
    ceiling: float | None

    @property
    def remaining(self) -> float | None:
        return None if self.ceiling is None else max(self.ceiling - self.spent, 0.0)

    @property
    def allowed(self) -> bool:
        return self.ceiling is None or self.total <= self.ceiling


def planned_event(
    dataset: Dataset, *, dp: DpSpec, batch_size: int, epochs: int, validation_share: float
) -> privacy.Event:
    """One round's event at ``dataset`` under the run's DP-SGD settings.

    The site trains on the rows its validation share leaves (fewer rows: each is sampled more
    often, and spends more), so the share is the run's own, as the site computes it.
    """
    return privacy.round_event(
        rows=privacy.training_rows(dataset.row_count, validation_share),
        batch_size=batch_size,
        epochs=epochs,
        noise_multiplier=dp.noise_multiplier,
    )


def budget_projection(
    dataset: Dataset,
    *,
    event: privacy.Event,
    rounds: int,
    ceiling: float | None,
    delta: float = privacy.DELTA,
    reserve: bool = False,
) -> Projection:
    """``rounds`` more rounds of ``event`` on the dataset, against its ledger and ``ceiling``;
    with ``reserve``, what runs under way will still spend counts as spent."""
    spent_events = _events(ledger_spends(dataset))
    if reserve:
        spent_events += reserved_events(dataset)
    return Projection(
        dataset=dataset,
        spent=privacy.epsilon(spent_events, delta),
        needed=privacy.epsilon([(event, rounds)], delta),
        total=privacy.epsilon([*spent_events, (event, rounds)], delta),
        ceiling=ceiling,
    )


def _number(value: float) -> str:
    return f"{value:.3f}"


def budget_reason(projection: Projection) -> str:
    """Why a run may not spend this dataset's budget: which dataset, spent, needed, remaining."""
    dataset = projection.dataset
    return _(
        "The run would take %(dataset)s of %(institution)s past the agreement's privacy budget: "
        "epsilon %(spent)s is spent (or held by runs under way), the run needs %(needed)s "
        "(%(total)s in all), and %(remaining)s of %(ceiling)s remains."
    ) % {
        "dataset": dataset.name,
        "institution": dataset.institution.name,
        "spent": _number(projection.spent),
        "needed": _number(projection.needed),
        "total": _number(projection.total),
        "remaining": _number(projection.remaining or 0.0),
        "ceiling": projection.ceiling,
    }


def budget_projections(
    datasets: Sequence[Dataset],
    *,
    dp: DpSpec,
    batch_size: int,
    epochs: int,
    rounds: int,
    validation_share: float,
    reserve: bool = False,
) -> list[Projection]:
    """The planned run's projection for each dataset, against the DP spec's ceiling."""
    return [
        budget_projection(
            dataset,
            event=planned_event(
                dataset,
                dp=dp,
                batch_size=batch_size,
                epochs=epochs,
                validation_share=validation_share,
            ),
            rounds=rounds,
            ceiling=dp.ceiling,
            delta=dp.delta,
            reserve=reserve,
        )
        for dataset in datasets
    ]


def _left_its_site(run: TrainingRun, site: SiteRound) -> bool:
    """Whether the site's noisy update reached the coordinator this round.

    A plain round: the site answered with an update (contributed, or rejected after arriving).
    A secure round keeps no update, only what the protocol recorded: a site whose masked input
    the coordinator received (its ``masked`` answer, kept when the round closes or fails) was
    in the sum, or would have been; the DP-SGD noise was added before masking, so the masked
    input spends its dataset's budget like a plain update.
    """
    if site.dataset_id is None:
        return False
    if run.secure_aggregation:
        return "masked" in (site.secagg or {})
    answered = site.status in (SiteRound.Status.CONTRIBUTED, SiteRound.Status.REJECTED)
    return answered and bool(site.update_sha256)


def privacy_spend_round(*, round_: Round, sites: Sequence[SiteRound]) -> list[PrivacySpend]:
    """Record the privacy event of every dataset whose noisy update left its site this round.

    Inside the caller's transaction (the round's close, a secure round's failure or the run's
    cancellation). A round recorded twice records once. In a secure round the datasets are
    those whose masked input the coordinator received (``_left_its_site``): the survivors summed
    when it closed, and every one whose masked input had arrived when it failed.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("privacy_spend_round() runs inside the round's closing transaction.")
    run = round_.run
    raw = (run.spec or {}).get("dp")
    if not raw:
        return []
    dp = DpSpec.from_json(raw)
    spends = []
    # One writer at a time per dataset: each spend composes every earlier one.
    list(
        Dataset.objects.select_for_update()
        .filter(pk__in=[s.dataset_id for s in sites if s.dataset_id is not None])
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for site in sites:
        if not _left_its_site(run, site):
            continue
        dataset = site.dataset
        if PrivacySpend.objects.filter(
            dataset=dataset, run=run, round_number=round_.number
        ).exists():
            continue
        event = planned_event(
            dataset,
            dp=dp,
            batch_size=run.batch_size,
            epochs=run.local_epochs,
            validation_share=run.validation_share,
        )
        before = _events(ledger_spends(dataset))
        spend = PrivacySpend.objects.create(
            dataset=dataset,
            institution_id=dataset.institution_id,
            sha256=dataset.sha256,
            run=run,
            round_number=round_.number,
            noise_multiplier=event.noise_multiplier,
            sampling_rate=event.sampling_rate,
            steps=event.steps,
            clip_norm=dp.clip_norm,
            delta=dp.delta,
            epsilon=privacy.epsilon([(event, 1)], dp.delta),
            epsilon_total=privacy.epsilon([*before, (event, 1)], dp.delta),
            accountant=ACCOUNTANT,
        )
        audit_record(
            actor=None,
            action="privacy.spent",
            target=dataset,
            subject_institution=dataset.institution,
            payload={
                "problem": run.problem.slug,
                "run": run.number,
                "round": round_.number,
                "dataset": dataset.pk,
                "sha256": dataset.sha256,
                "event": event.to_json(),
                "clip_norm": dp.clip_norm,
                "delta": dp.delta,
                "epsilon": spend.epsilon,
                "epsilon_total": spend.epsilon_total,
                "ceiling": dp.ceiling,
                "accountant": ACCOUNTANT,
                # What the spend rests on: the update's hash, or in a secure round the masked
                # input's (the coordinator never held the update itself).
                "secure_aggregation": run.secure_aggregation,
                "update_sha256": site.update_sha256,
            },
        )
        spends.append(spend)
    return spends


# --- Reading the ledger ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpend:
    """What one run spent of one dataset's budget: its rounds there, composed."""

    dataset: Dataset
    rounds: int
    epsilon: float  # this run's spends on the dataset, composed (Rényi DP) at ``delta``
    delta: float


def run_privacy_spent(run: TrainingRun) -> list[RunSpend]:
    """Each dataset the run spent on, with the run's own epsilon there, in one query.

    Only this run's spends: the dataset's whole ledger (every run composed) is its
    institution's to read, on the ledger's pages.
    """
    by_dataset: dict[int, list[PrivacySpend]] = {}
    for spend in (
        PrivacySpend.objects.filter(run=run)
        .select_related("dataset__institution")
        .order_by("dataset__institution__name", "dataset_id", "round_number")
    ):
        by_dataset.setdefault(spend.dataset_id, []).append(spend)
    result = []
    for spends in by_dataset.values():
        # A run's rounds at one dataset are one event repeated: composed once, with its count.
        counts = Counter(event for event, _one in _events(spends))
        result.append(
            RunSpend(
                dataset=spends[0].dataset,
                rounds=len(spends),
                epsilon=privacy.epsilon(counts.items(), spends[0].delta),
                delta=spends[0].delta,
            )
        )
    return result


def ledger_institution(actor: AbstractBaseUser, slug: str | None = None) -> Institution:
    """The institution whose ledger ``actor`` reads: their own; staff may name any (404 if none)."""
    if slug and actor.is_staff:
        institution = Institution.objects.filter(slug=slug).first()
        if institution is None:
            raise Http404
        return institution
    own = membership_of(actor)
    if own is None:
        raise Http404
    return own.institution


@dataclass(frozen=True)
class LedgerRow:
    """One dataset's budget as its institution reads it."""

    dataset: Dataset
    spent: float
    ceiling: float | None
    spends: int
    secure_spends: int = 0  # spends in securely aggregated runs: only masked inputs were seen

    @property
    def remaining(self) -> float | None:
        return None if self.ceiling is None else max(self.ceiling - self.spent, 0.0)


def privacy_ledger(institution: Institution) -> list[LedgerRow]:
    """Every training dataset of the institution with what it has spent, in one query.

    Spent is the latest spend's composed epsilon over the same records (same file), whichever
    registration it was under; the ceiling is the problem's effective agreement's.
    """
    same = PrivacySpend.objects.filter(
        institution=OuterRef("institution"), sha256=OuterRef("sha256")
    )
    datasets = (
        Dataset.objects.filter(institution=institution, purpose=Dataset.Purpose.TRAINING)
        .select_related("problem", "institution")
        .annotate(
            spent=Subquery(same.order_by("-created_at", "-pk").values("epsilon_total")[:1]),
            spend_count=Subquery(
                same.order_by().values("institution").annotate(n=Count("pk")).values("n")[:1]
            ),
            secure_count=Subquery(
                same.filter(run__secure_aggregation=True)
                .order_by()
                .values("institution")
                .annotate(n=Count("pk"))
                .values("n")[:1]
            ),
            ceiling=Subquery(
                AgreementVersion.objects.filter(
                    problem=OuterRef("problem"), status=AgreementVersion.Status.EFFECTIVE
                ).values("dp_max_epsilon")[:1]
            ),
        )
        .order_by("problem__slug", F("created_at").desc(), "-pk")
    )
    return [
        LedgerRow(
            dataset=d,
            spent=d.spent or 0.0,  # type: ignore[attr-defined]
            ceiling=d.ceiling,  # type: ignore[attr-defined]
            spends=d.spend_count or 0,  # type: ignore[attr-defined]
            secure_spends=d.secure_count or 0,  # type: ignore[attr-defined]
        )
        for d in datasets
    ]


def privacy_ledger_dataset(
    institution: Institution, dataset_id: int
) -> tuple[LedgerRow, list[PrivacySpend]]:
    """One of the institution's datasets and every spend on its records, oldest first."""
    row = next((r for r in privacy_ledger(institution) if r.dataset.pk == dataset_id), None)
    if row is None:
        raise Http404
    spends = list(
        PrivacySpend.objects.filter(institution=institution, sha256=row.dataset.sha256)
        .select_related("run__problem", "dataset")
        .order_by("created_at", "pk")
    )
    return row, spends
