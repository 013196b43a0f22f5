"""Cancel a queued or running federated run."""

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from portal.common.errors import ApplicationError, error_text
from projects.models import TrainingRun
from projects.services import runs


class Command(BaseCommand):
    help = "Cancel a queued or running federated run (answers still on their way are ignored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--problem", required=True, help=_("The problem's slug."))
        parser.add_argument("--run", type=int, required=True, help=_("The run's number."))
        parser.add_argument(
            "--as",
            dest="username",
            help=_("Cancel as this person (default: the person who launched the run)."),
        )

    def handle(self, *args: object, problem: str, run: int, username: str | None, **o: object):
        found = (
            TrainingRun.objects.select_related("launched_by")
            .filter(problem__slug=problem, number=run)
            .first()
        )
        if found is None:
            raise CommandError(
                _("There is no run %(n)s of %(slug)s.") % {"n": run, "slug": problem}
            )
        actor = found.launched_by
        if username:
            actor = get_user_model().objects.filter(username=username).first()
            if actor is None:
                raise CommandError(_("There is no user %(name)s.") % {"name": username})
        try:
            runs.run_cancel(actor=actor, run=found)
        except (ApplicationError, PermissionDenied) as exc:
            raise CommandError(error_text(exc)) from None
        self.stdout.write(_("Cancelled run %(n)s of %(slug)s.") % {"n": run, "slug": problem})
