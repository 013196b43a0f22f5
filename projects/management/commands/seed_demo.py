"""Seed the whole demo: the alliance's members, then problems, datasets and agreements."""

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from projects.demo import seed_projects, summary_line


class Command(BaseCommand):
    # A plain string: argparse cannot format a lazy translation.
    help = (
        "Seed the demo alliance: members in every role, then problems in every stage with "
        "their datasets (CSV files written under var/sites/<slug>/) and agreements. "
        "Idempotent: a second run changes nothing."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--without-run",
            action="store_true",
            help=(
                "Leave out the demo's runs: the breast-cancer problem's first run (trained, "
                "certified, released) and the diabetes problem's secure, private run."
            ),
        )

    def handle(self, *args: object, without_run: bool = False, **options: object) -> None:
        call_command("seed_alliance", stdout=self.stdout, stderr=self.stderr)
        for problem in seed_projects(var_dir=settings.VAR_DIR, with_run=not without_run):
            self.stdout.write(summary_line(problem))
