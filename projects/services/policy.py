"""The agreement policy: may this run configuration run now, and if not, every reason why.

One function, ``run_policy_check``, is the gate that training calls before every round. It
reads the facts afresh (ratification, the effective agreement, participants, approvals,
datasets) and answers with a ``PolicyDecision``: the reasons (empty when allowed), the
contributors whose data may be used, and every contributor left out with the reason.
"""

import datetime
import math
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Model
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.models import Institution
from projects.federation import strategies
from projects.models import (
    AgreementApproval,
    AgreementVersion,
    Dataset,
    FeatureScaling,
    ModelFamily,
    Participation,
    Problem,
    SiteKey,
)


@dataclass(frozen=True)
class RunConfig:
    """What a run asks for, in the terms the agreement speaks."""

    model_family: str
    min_contributors: int
    secure_aggregation: bool = False
    strategy: str = "fedavg"
    dp_epsilon: float | None = None
    agreement_version: int | None = None  # the version a running run was launched under
    contributors: tuple[str, ...] | None = None  # institution slugs; None: every eligible one
    on: datetime.date | None = None  # the day to judge expiry on; today by default
    # The run's options the agreement limits; None: not asked about.
    l2: float | None = None
    validation_share: float | None = None
    feature_scaling: str | None = None


@dataclass(frozen=True)
class Contributor:
    institution: Institution
    dataset: Dataset
    has_site_key: bool = True  # an active key its site signs with


@dataclass(frozen=True)
class Exclusion:
    institution: Institution
    reason: str


@dataclass(frozen=True)
class PolicyDecision:
    reasons: tuple[str, ...]
    agreement: AgreementVersion | None
    contributors: tuple[Contributor, ...] = ()
    excluded: tuple[Exclusion, ...] = field(default=())

    @property
    def allowed(self) -> bool:
        return not self.reasons


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _family_label(value: str) -> str:
    return str(ModelFamily(value).label) if value in ModelFamily.values else value


def eligible_contributors(
    problem: Problem, agreement: AgreementVersion | None
) -> tuple[list[Contributor], list[Exclusion]]:
    """Contributors whose data may be used under ``agreement``, and the others with the reason.

    Eligible: active, of an admitted institution, with a standing approval of the agreement and
    a dataset checked against the current revision. The problem's "data ready" stage counts
    these too, so the stage and the check never disagree.
    """
    # Read before every round: plain SQL, because building these queries through the ORM
    # took several times longer than the database takes to answer them.
    participation, institution = _table(Participation), _table(Institution)
    approval, key = _table(AgreementApproval), _table(SiteKey)
    contributor = Participation.Role.CONTRIBUTOR.value
    # Each contributing institution with its participation's state, its approval of the
    # agreement and whether it has an active site key: one query.
    participants = Institution.objects.raw(
        f"SELECT i.*, p.status AS participation_status, a.decision AS approval_decision,"
        f" a.revoked_at AS approval_revoked_at,"
        f" EXISTS(SELECT 1 FROM {key} k WHERE k.institution_id = p.institution_id"
        f" AND k.status = %s) AS has_site_key"
        f" FROM {participation} p JOIN {institution} i ON i.id = p.institution_id"
        f" LEFT JOIN {approval} a ON a.institution_id = p.institution_id AND a.version_id = %s"
        f" WHERE p.problem_id = %s AND p.role = %s ORDER BY i.name",
        [SiteKey.Status.ACTIVE.value, agreement.pk if agreement else None, problem.pk, contributor],
    )
    datasets: dict[int, list[Dataset]] = {}
    for dataset in Dataset.objects.raw(
        f"SELECT * FROM {_table(Dataset)} WHERE problem_id = %s AND status = %s"
        f" AND purpose = %s ORDER BY created_at, id",
        [problem.pk, Dataset.Status.ACTIVE.value, Dataset.Purpose.TRAINING.value],
    ):
        datasets.setdefault(dataset.institution_id, []).append(dataset)
    eligible: list[Contributor] = []
    excluded: list[Exclusion] = []
    for institution in participants:
        name = institution.name
        status = institution.participation_status  # type: ignore[attr-defined]
        if status == Participation.Status.LEFT:
            excluded.append(
                Exclusion(institution, _("%(name)s left the problem.") % {"name": name})
            )
            continue
        if status != Participation.Status.ACTIVE:
            continue
        if institution.status != Institution.Status.ADMITTED:
            excluded.append(
                Exclusion(
                    institution,
                    _("%(name)s is %(status)s.")
                    % {"name": name, "status": institution.get_status_display().lower()},
                )
            )
            continue
        if agreement is not None:
            decision = institution.approval_decision  # type: ignore[attr-defined]
            revoked_at = institution.approval_revoked_at  # type: ignore[attr-defined]
            if decision is not None and revoked_at is not None:
                excluded.append(
                    Exclusion(
                        institution,
                        _("%(name)s revoked its approval of agreement version %(n)s.")
                        % {"name": name, "n": agreement.number},
                    )
                )
                continue
            if decision != AgreementApproval.Decision.APPROVED:
                excluded.append(
                    Exclusion(
                        institution,
                        _("%(name)s has not approved agreement version %(n)s.")
                        % {"name": name, "n": agreement.number},
                    )
                )
                continue
        own = datasets.get(institution.pk, [])
        fitting = [d for d in own if d.revision == problem.current_revision]
        if not fitting:
            reason = (
                _(
                    "%(name)s's dataset was checked against an older revision; it must be "
                    "registered again."
                )
                if own
                else _("%(name)s has registered no dataset.")
            )
            excluded.append(Exclusion(institution, reason % {"name": name}))
            continue
        eligible.append(Contributor(institution, fitting[-1], bool(institution.has_site_key)))  # type: ignore[attr-defined]
    return eligible, excluded


def _with_site_keys(
    contributors: list[Contributor],
) -> tuple[list[Contributor], list[Exclusion]]:
    """Contributors whose site has an active key; the others, named, with the reason.

    Without a key nothing the site answers can be proven its own, so it cannot take part.
    """
    return [c for c in contributors if c.has_site_key], [
        Exclusion(
            c.institution,
            _(
                "%(name)s has no active site key: its admin registers the key its site worker "
                "signs with before it can contribute."
            )
            % {"name": c.institution.name},
        )
        for c in contributors
        if not c.has_site_key
    ]


def option_refusals(agreement: AgreementVersion, config: RunConfig) -> list[str]:
    """Why the run's options (L2, validation share, feature scaling) exceed the agreement."""
    n = agreement.number
    reasons: list[str] = []
    if config.l2 is not None and config.l2 > agreement.max_l2:
        reasons.append(
            _(
                "The run's L2 strength %(l2)s exceeds the strongest agreement version %(n)s "
                "permits (%(max)s)."
            )
            % {"l2": config.l2, "n": n, "max": agreement.max_l2}
        )
    share = config.validation_share
    if share is not None and share > agreement.max_validation_share:
        reasons.append(
            _(
                "The run's validation share %(share)s exceeds the largest agreement version "
                "%(n)s permits (%(max)s)."
            )
            % {"share": share, "n": n, "max": agreement.max_validation_share}
        )
    scaling = config.feature_scaling
    if scaling is not None and scaling not in agreement.feature_scalings:
        labels = dict(FeatureScaling.choices)
        reasons.append(
            _(
                "Agreement version %(n)s does not permit the feature scaling %(scaling)s "
                "(permitted: %(permitted)s)."
            )
            % {
                "n": n,
                "scaling": labels.get(scaling, scaling),
                "permitted": ", ".join(agreement.feature_scaling_labels()),
            }
        )
    return reasons


def _needs_individual_updates(strategy: str) -> bool:
    try:
        return strategies.get_strategy(strategy).individual
    except ValueError:
        return False  # an unknown strategy is the launch's own error to report


def run_policy_check(*, problem: Problem, config: RunConfig) -> PolicyDecision:
    """Whether ``config`` may run on ``problem`` under its effective agreement, and why not."""
    # The caller may hold the problem since a run started; a revision since then must count.
    problem = next(
        iter(Problem.objects.raw(f"SELECT * FROM {_table(Problem)} WHERE id = %s", [problem.pk]))
    )
    reasons: list[str] = []
    if not problem.is_ratified:
        reasons.append(
            _("Revision %(n)s of the problem is not ratified by every participant.")
            % {"n": problem.current_revision}
        )
    agreement = next(
        iter(
            AgreementVersion.objects.raw(
                f"SELECT * FROM {_table(AgreementVersion)} WHERE problem_id = %s"
                f" AND status = %s ORDER BY number LIMIT 1",
                [problem.pk, AgreementVersion.Status.EFFECTIVE.value],
            )
        ),
        None,
    )
    if agreement is None:
        pending = problem.agreements.filter(status=AgreementVersion.Status.PENDING).first()
        if pending is not None:
            reasons.append(
                _("No data-use agreement is in effect: version %(n)s still awaits approvals.")
                % {"n": pending.number}
            )
        else:
            reasons.append(_("No data-use agreement is in effect for this problem."))
    else:
        n = agreement.number
        if config.agreement_version is not None and config.agreement_version != n:
            reasons.append(
                _(
                    "The run was launched under agreement version %(old)s, which is no longer "
                    "in effect (version %(n)s is)."
                )
                % {"old": config.agreement_version, "n": n}
            )
        on = config.on or timezone.localdate()
        if agreement.expires_on < on:
            reasons.append(
                _("Agreement version %(n)s expired on %(date)s.")
                % {"n": n, "date": agreement.expires_on.isoformat()}
            )
        if config.model_family not in agreement.model_families:
            reasons.append(
                _(
                    "Agreement version %(n)s does not permit the model family %(family)s "
                    "(permitted: %(permitted)s)."
                )
                % {
                    "n": n,
                    "family": _family_label(config.model_family),
                    "permitted": ", ".join(_family_label(f) for f in agreement.model_families),
                }
            )
        if config.min_contributors < agreement.min_contributors:
            reasons.append(
                _(
                    "Agreement version %(n)s requires at least %(min)s contributors per round; "
                    "the run asks for %(asked)s."
                )
                % {"n": n, "min": agreement.min_contributors, "asked": config.min_contributors}
            )
        if agreement.secure_aggregation and not config.secure_aggregation:
            reasons.append(_("Agreement version %(n)s requires secure aggregation.") % {"n": n})
        if config.secure_aggregation and _needs_individual_updates(config.strategy):
            reasons.append(
                _(
                    "The strategy %(strategy)s needs each site's update, which secure "
                    "aggregation never shows the coordinator; choose FedAvg, FedProx or FedAdam."
                )
                % {"strategy": config.strategy}
            )
        ceiling = agreement.dp_max_epsilon
        epsilon = config.dp_epsilon
        if epsilon is not None and not (
            isinstance(epsilon, int | float) and 0 < epsilon < math.inf
        ):
            reasons.append(_("The run's privacy budget epsilon must be a positive number."))
        elif ceiling is not None and epsilon is None:
            reasons.append(
                _(
                    "Agreement version %(n)s requires differential privacy with epsilon at "
                    "most %(ceiling)s."
                )
                % {"n": n, "ceiling": ceiling}
            )
        elif ceiling is not None and epsilon is not None and epsilon > ceiling:
            reasons.append(
                _(
                    "The run's epsilon %(epsilon)s exceeds the ceiling %(ceiling)s of agreement "
                    "version %(n)s."
                )
                % {"epsilon": epsilon, "ceiling": ceiling, "n": n}
            )
        reasons.extend(option_refusals(agreement, config))
    eligible, excluded = eligible_contributors(problem, agreement)
    eligible, keyless = _with_site_keys(eligible)
    excluded.extend(keyless)
    if config.contributors is not None:
        by_slug = {c.institution.slug: c for c in eligible}
        why = {e.institution.slug: e.reason for e in excluded}
        chosen: list[Contributor] = []
        for slug in dict.fromkeys(config.contributors):  # each institution counts once
            if slug in by_slug:
                chosen.append(by_slug[slug])
            elif slug in why:
                reasons.append(why[slug])
            else:
                reasons.append(_("%(slug)s is not a contributor of this problem.") % {"slug": slug})
        for contributor in eligible:
            if contributor.institution.slug not in config.contributors:
                excluded.append(Exclusion(contributor.institution, _("Not chosen for this run.")))
        eligible = chosen
    needed = max(config.min_contributors, agreement.min_contributors if agreement else 2, 2)
    if agreement is not None and len(eligible) < needed:
        names = ", ".join(c.institution.name for c in eligible) or _("none")
        reasons.append(
            _(
                "Only %(count)s contributors may take part (%(names)s); each round needs at "
                "least %(needed)s."
            )
            % {"count": len(eligible), "names": names, "needed": needed}
        )
    return PolicyDecision(
        reasons=tuple(reasons),
        agreement=agreement,
        contributors=tuple(eligible),
        excluded=tuple(excluded),
    )
