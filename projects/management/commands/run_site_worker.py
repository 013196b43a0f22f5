"""Start a member site's Celery worker: it consumes only ``site.<slug>`` and reads only DIR."""

import os
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _


class Command(BaseCommand):
    help = (
        "Run at a member's site: a Celery worker on that institution's queue only, training on "
        "the files in its data directory. The worker never reads the portal database."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--institution", required=True, help=_("The institution's slug."))
        parser.add_argument(
            "--data-dir",
            required=True,
            type=Path,
            help=_("The folder holding the registered files, named by their site keys."),
        )
        parser.add_argument("--concurrency", type=int, default=1)
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args: object, institution: str, data_dir: Path, **options: object) -> None:
        if not data_dir.is_dir():
            raise CommandError(_("%(dir)s is not a folder.") % {"dir": data_dir})
        os.environ["SITE_DATA_DIRS"] = f"{institution}={data_dir.resolve()}"
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--queues",
            f"site.{institution}",
            "--hostname",
            f"site-{institution}@%h",
            "--pool",
            "solo" if options["concurrency"] == 1 else "threads",
            "--concurrency",
            str(options["concurrency"]),
            "--loglevel",
            str(options["loglevel"]),
        ]
        self.stdout.write(
            _("Site worker for %(slug)s on queue site.%(slug)s, data in %(dir)s")
            % {"slug": institution, "dir": data_dir.resolve()}
        )
        sys.stdout.flush()
        os.execv(sys.executable, argv)
