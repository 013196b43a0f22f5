"""Launch a federated training run from the command line and, with --wait, follow it."""

import sys

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from alliance.models import Role
from portal.common.errors import ApplicationError, error_text
from projects.models import FeatureScaling, Problem, Round, Strategy, TrainingRun
from projects.permissions import LAUNCH_ROLES, can_launch
from projects.services import runs
from projects.services.sites import launch_warnings


def _metric_text(metrics: dict[str, float]) -> str:
    shown = [k for k in ("accuracy", "loss", "r2", "mse") if k in metrics]
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in shown) or "-"


class Command(BaseCommand):
    help = (
        "Launch a federated run on a data-ready problem. With --wait, print a line per round as "
        "it completes and the final model's SHA-256; exit non-zero if the run does not succeed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--problem", required=True, help=_("The problem's slug."))
        parser.add_argument("--rounds", type=int, default=runs.DEFAULTS["rounds"])
        parser.add_argument("--strategy", choices=Strategy.values, default=Strategy.FEDAVG)
        parser.add_argument("--seed", type=int, default=runs.DEFAULTS["seed"])
        parser.add_argument("--family", default="logistic_regression")
        parser.add_argument("--local-epochs", type=int, default=runs.DEFAULTS["local_epochs"])
        parser.add_argument("--learning-rate", type=float, default=runs.DEFAULTS["learning_rate"])
        parser.add_argument("--batch-size", type=int, default=runs.DEFAULTS["batch_size"])
        parser.add_argument("--deadline", type=int, default=runs.DEFAULTS["round_deadline"])
        parser.add_argument(
            "--feature-scaling",
            choices=FeatureScaling.values,
            default=runs.DEFAULTS["feature_scaling"],
            help=_("How every site scales its features."),
        )
        parser.add_argument(
            "--validation-share",
            type=float,
            default=runs.DEFAULTS["validation_share"],
            help=_("The share of its rows each site keeps for validation (0: none)."),
        )
        parser.add_argument(
            "--l2",
            type=float,
            default=None,
            help=_("L2 regularisation strength (0: none; default: the family's)."),
        )
        parser.add_argument(
            "--as",
            dest="username",
            help=_("Launch as this researcher (default: the first who may launch)."),
        )
        parser.add_argument(
            "--secure-aggregation",
            action="store_true",
            help=_("Aggregate every round securely (always so where the agreement requires it)."),
        )
        parser.add_argument("--wait", action="store_true", help=_("Follow the run to its end."))

    def handle(self, *args: object, **opts: object) -> None:
        problem = Problem.objects.filter(slug=opts["problem"]).first()
        if problem is None:
            raise CommandError(_("There is no problem %(slug)s.") % {"slug": opts["problem"]})
        actor = self._actor(problem, opts["username"])
        config = runs.LaunchConfig(
            model_family=opts["family"],
            strategy=opts["strategy"],
            rounds=opts["rounds"],
            seed=opts["seed"],
            local_epochs=opts["local_epochs"],
            learning_rate=opts["learning_rate"],
            batch_size=opts["batch_size"],
            round_deadline=opts["deadline"],
            validation_share=opts["validation_share"],
            feature_scaling=opts["feature_scaling"],
            l2=opts["l2"],
            secure_aggregation=bool(opts["secure_aggregation"]),
        )
        # Listening before the launch commits: the first round's opening cannot be missed.
        watcher = runs.RunWatcher() if opts["wait"] else None
        try:
            run = runs.run_launch(actor=actor, problem=problem, config=config)
        except (ApplicationError, PermissionDenied) as exc:
            errors = getattr(exc, "extra", {}).get("errors", {})
            detail = "; ".join(f"{k}: {v}" for k, v in errors.items())
            if watcher is not None:
                watcher.close()
            raise CommandError(f"{error_text(exc)} {detail}".strip()) from None
        self.stdout.write(
            _("Launched run %(n)s of %(problem)s as %(user)s (%(strategy)s, %(rounds)s rounds).")
            % {
                "n": run.number,
                "problem": problem.slug,
                "user": actor.get_username(),
                "strategy": run.strategy,
                "rounds": run.rounds,
            }
        )
        for warning in launch_warnings(problem):
            self.stderr.write(_("Warning: %(text)s") % {"text": warning})
        if watcher is not None:
            with watcher:
                self._follow(run, watcher)

    def _actor(self, problem: Problem, username: str | None):
        User = get_user_model()
        if username:
            actor = User.objects.filter(username=username).first()
            if actor is None:
                raise CommandError(_("There is no user %(name)s.") % {"name": username})
            return actor
        # A researcher first: launching runs is their work; an admin only when none may.
        candidates = User.objects.filter(
            is_active=True,
            membership__role__in=LAUNCH_ROLES,
            membership__institution__participations__problem=problem,
        ).order_by("username")
        ranked = sorted(candidates, key=lambda u: u.membership.role != Role.RESEARCHER)
        for candidate in ranked:
            if can_launch(candidate, problem):
                return candidate
        raise CommandError(_("Nobody may launch a run on this problem."))

    def _follow(self, run: TrainingRun, watcher: runs.RunWatcher) -> None:
        printed = 0
        watcher.watch(run.pk)
        while True:
            run.refresh_from_db()
            for round_ in run.round_set.filter(number__gt=printed).exclude(
                status=Round.Status.RUNNING
            ):
                self.stdout.write(
                    _("Round %(n)s/%(total)s %(status)s: %(count)s contributors, %(metrics)s")
                    % {
                        "n": round_.number,
                        "total": run.rounds,
                        "status": round_.get_status_display().lower(),
                        "count": round_.contributors,
                        "metrics": _metric_text(round_.metrics),
                    }
                )
                printed = round_.number
                sys.stdout.flush()
            if run.is_finished:
                break
            # Woken by the change itself; the timeout only bounds a wait for a lost notice.
            watcher.wait(run.pk, timeout=5.0)
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(
                _("Run %(n)s %(status)s: %(reasons)s")
                % {
                    "n": run.number,
                    "status": run.get_status_display().lower(),
                    "reasons": " ".join(run.reasons),
                }
            )
        model = run.models.order_by("-round_number").first()
        self.stdout.write(_("Final model SHA-256: %(sha)s") % {"sha": model.sha256})
