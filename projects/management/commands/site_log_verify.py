"""Check a site's own log: every line chained to the one before it."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from projects.federation.sitelog import verify_log


class Command(BaseCommand):
    help = (
        "Recompute the hash chain of a site worker's log (DATA_DIR/.site/site-log.jsonl). Exit 0 "
        "with the number of lines when intact; exit 1 naming the first line that breaks it."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("log", type=Path, help=_("The log file."))

    def handle(self, *args: object, log: Path, **options: object) -> None:
        if not log.is_file():
            raise CommandError(_("There is no log at %(path)s.") % {"path": log})
        result = verify_log(log)
        if not result.ok:
            raise CommandError(
                _("Line %(line)s %(reason)s (%(count)s lines verified before it).")
                % {"line": result.first_bad_line, "reason": result.reason, "count": result.lines},
                returncode=1,
            )
        self.stdout.write(_("Site log intact: %(count)s lines.") % {"count": result.lines})
