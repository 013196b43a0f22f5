"""Launching a run: ``launch_plan`` and ``run_launch``.

The launch page, the API and ``manage.py launch_run`` all build a ``LaunchConfig`` (``config``)
and call ``run_launch``. ``launch_plan`` is the one answer to "may this run": the API's policy
check and the launch both call it, so they agree on the answer and its reasons.
"""

import logging
from dataclasses import dataclass, replace

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Max
from django.utils.translation import gettext as _

from alliance.permissions import acting_membership
from alliance.services.audit import audit_record
from portal.common.errors import ApplicationError
from projects.federation import encoding, privacy, strategies
from projects.federation.loop import initial_params
from projects.federation.protocol import DpSpec, LearningSpec
from projects.models import ModelFamily, Problem, TrainingRun
from projects.permissions import LAUNCH_ROLES, can_launch
from projects.services.policy import PolicyDecision, RunConfig, run_policy_check
from projects.services.privacy import budget_projections, budget_reason
from projects.services.runs.config import LaunchConfig, launch_errors, learning_spec
from projects.services.runs.store import model_store
from projects.services.stages import problem_advance_stage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaunchPlan:
    """The answer to "may this run", and what a launch needs of it when the answer is yes."""

    decision: PolicyDecision
    min_contributors: int
    spec: LearningSpec | None = None  # None when refused
    secure: bool = False  # every round securely aggregated (asked, or the agreement requires it)

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.decision.reasons


def _dp_spec(config: LaunchConfig, decision: PolicyDecision, reasons: list[str]) -> DpSpec | None:
    """The run's DP-SGD settings: one noise multiplier that keeps every contributor's dataset
    within the run's epsilon (the smallest dataset, sampled the most, needs the most noise).
    """
    if config.dp_options is None:
        return None
    options = privacy.dp_options(config.dp_options)
    noise = 0.0
    for contributor in decision.contributors:
        rows = privacy.training_rows(contributor.dataset.row_count, float(config.validation_share))
        try:
            z = privacy.noise_for(
                target_epsilon=options["epsilon"],
                rows=rows,
                batch_size=int(config.batch_size),
                epochs=int(config.local_epochs),
                rounds=int(config.rounds),
                delta=privacy.DELTA,
            )
        except privacy.PrivacyError:
            reasons.append(
                _(
                    "No amount of noise keeps %(rounds)s rounds on %(dataset)s within epsilon "
                    "%(epsilon)s; ask for fewer rounds, fewer local epochs or a larger batch."
                )
                % {
                    "rounds": config.rounds,
                    "dataset": contributor.dataset.name,
                    "epsilon": options["epsilon"],
                }
            )
            return None
        noise = max(noise, z)
    agreement = decision.agreement
    return DpSpec(
        noise_multiplier=noise or privacy.MAX_NOISE,
        clip_norm=options["clip_norm"],
        epsilon=options["epsilon"],
        delta=privacy.DELTA,
        ceiling=agreement.dp_max_epsilon if agreement is not None else None,
    )


def launch_plan(
    *,
    problem: Problem,
    config: LaunchConfig,
    agreement_version: int | None = None,
    contributors: tuple[str, ...] | None = None,
) -> LaunchPlan:
    """Whether ``config`` may run on ``problem`` now, with every reason why not.

    The one code path behind the launch and the API's policy check: the agreement's terms
    (``run_policy_check``), whether the problem's schema suits the family, and the privacy
    budget. ``config`` must have passed ``launch_errors``.
    """
    agreement = problem.agreements.filter(status="effective").first()
    min_contributors = config.min_contributors or (agreement.min_contributors if agreement else 2)
    secure = bool(config.secure_aggregation) or bool(
        agreement is not None and agreement.secure_aggregation
    )
    epsilon = None
    if config.dp_options is not None:
        epsilon = privacy.dp_options(config.dp_options)["epsilon"]
    decision = run_policy_check(
        problem=problem,
        config=RunConfig(
            model_family=config.model_family,
            min_contributors=min_contributors,
            secure_aggregation=secure,
            strategy=config.strategy,
            dp_epsilon=epsilon,
            agreement_version=agreement_version,
            contributors=contributors,
            l2=config.resolved_l2(),
            validation_share=float(config.validation_share),
            feature_scaling=config.feature_scaling,
        ),
    )
    reasons = list(decision.reasons)
    spec = None
    if decision.contributors:
        try:
            spec = learning_spec(
                problem,
                [c.dataset for c in decision.contributors],
                config.model_family,
                config.feature_scaling,
            )
        except ApplicationError as exc:
            reasons.append(exc.message)
    # Differential privacy and secure aggregation combine: each site adds its DP-SGD noise
    # before it masks its update, and the ledger charges every dataset whose masked input
    # reached the coordinator (``privacy_spend_round``), so the same budget check holds.
    if spec is not None and not reasons:
        dp = _dp_spec(config, decision, reasons)
        if dp is not None:
            spec = replace(spec, dp=dp)
        if dp is not None and dp.ceiling is not None:
            # The ledger: no contributor's dataset may go past the agreement's ceiling.
            for projection in budget_projections(
                [c.dataset for c in decision.contributors],
                dp=dp,
                batch_size=int(config.batch_size),
                epochs=int(config.local_epochs),
                rounds=int(config.rounds),
                validation_share=float(config.validation_share),
                reserve=True,  # what runs under way will still spend is not free
            ):
                if not projection.allowed:
                    reasons.append(budget_reason(projection))
    return LaunchPlan(
        decision=replace(decision, reasons=tuple(reasons)),
        min_contributors=min_contributors,
        spec=spec if not reasons else None,
        secure=secure,
    )


def run_launch(*, actor: AbstractBaseUser, problem: Problem, config: LaunchConfig) -> TrainingRun:
    """Launch a run on a data-ready problem under its effective agreement, or refuse and say why.

    Permission first, then the settings, then the agreement: a caller who may not launch
    learns nothing about the problem's state. The policy check runs here with the run's own
    configuration and again before every round.
    """
    if not can_launch(actor, problem):
        raise PermissionDenied(
            _("Only researchers of an institution contributing to this problem launch runs.")
        )
    errors = launch_errors(config)
    if errors:
        raise ApplicationError(_("Correct the run's settings."), extra={"errors": errors})
    membership = acting_membership(actor, roles=LAUNCH_ROLES)
    with transaction.atomic():
        problem = Problem.objects.select_for_update(of=("self",)).get(pk=problem.pk)
        plan = launch_plan(problem=problem, config=config)
        decision = plan.decision
        if not plan.allowed or plan.spec is None:
            raise ApplicationError(
                _("This run may not start: %(reasons)s") % {"reasons": " ".join(plan.reasons)},
                extra={"reasons": list(plan.reasons)},
            )
        spec = plan.spec
        min_contributors = plan.min_contributors
        secure = plan.secure
        family_options = config.resolved_family_options()
        if config.model_family == ModelFamily.MLP:
            family_options.setdefault("task", spec.task)
        n_outputs = len(spec.classes) if spec.classes else 1
        number = (problem.runs.aggregate(n=Max("number"))["n"] or 0) + 1
        run = TrainingRun.objects.create(
            problem=problem,
            number=number,
            agreement=decision.agreement,
            revision=problem.current_revision,
            launched_by=actor,
            institution=membership.institution,
            model_family=config.model_family,
            family_options=family_options,
            strategy=config.strategy,
            strategy_options=strategies.strategy_options(config.strategy, config.strategy_options),
            rounds=int(config.rounds),
            local_epochs=int(config.local_epochs),
            batch_size=int(config.batch_size),
            learning_rate=float(config.learning_rate),
            min_contributors=min_contributors,
            round_deadline=int(config.round_deadline),
            seed=int(config.seed),
            validation_share=float(config.validation_share),
            feature_scaling=config.feature_scaling,
            secure_aggregation=secure,
            max_update_norm=settings.FEDERATION_MAX_UPDATE_NORM,
            max_update_bytes=settings.FEDERATION_MAX_UPDATE_BYTES,
            spec=spec.to_json(),
        )
        params = initial_params(
            config.model_family, family_options, len(spec.features), n_outputs, run.seed
        )
        initial = model_store(
            run=run, round_number=0, blob=encoding.encode_params(params), metrics={}
        )
        audit_record(
            actor=actor,
            action="run.launched",
            target=run,
            subject_institution=membership.institution,
            payload={
                "problem": problem.slug,
                "run": run.number,
                "agreement_version": run.agreement.number,
                "terms_sha256": run.agreement.terms_sha256,
                "model_family": run.model_family,
                "strategy": run.strategy,
                "strategy_options": run.strategy_options,
                "rounds": run.rounds,
                "seed": run.seed,
                "options": run.options,
                "secure_aggregation": run.secure_aggregation,
                "contributors": sorted(c.institution.slug for c in decision.contributors),
                "differential_privacy": spec.dp.to_json() if spec.dp is not None else None,
                "initial_model_sha256": initial.sha256,
            },
        )
        problem_advance_stage(problem=problem, to=Problem.Stage.TRAINING)
        transaction.on_commit(lambda: send_advance(run.pk))
    return run


def send_advance(run_id: int) -> None:
    """Ask the coordinator to open the first round; the reconciler does if the broker is away."""
    from projects.services.runs.dispatch import publishing
    from projects.tasks import run_advance_task

    if not publishing():
        return
    try:
        run_advance_task.apply_async(args=[run_id], queue="coordinator")
    except Exception:  # any broker failure: the run is queued in the database all the same
        logger.warning("Could not ask for run %s's first round; the reconciler will.", run_id)
