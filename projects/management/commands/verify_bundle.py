"""Check a model's provenance bundle offline: no database, no portal."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from projects.bundle_check import check_bundle


class Command(BaseCommand):
    help = (
        "Check a provenance bundle (bundle.zip) with no database: the model's SHA-256, every "
        "audit event's hash and link, and that the model card's figures are the ones the events "
        "recorded. Exit 0 when it holds; exit 1 naming the first mismatch."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("bundle", type=Path)

    def handle(self, *args: object, bundle: Path, **options: object) -> None:
        result = check_bundle(bundle)
        if not result.ok:
            raise CommandError(
                _("The bundle does not hold: %(problem)s.") % {"problem": result.problem},
                returncode=1,
            )
        self.stdout.write(
            _("The bundle holds: the model, its card and %(count)s audit events agree.")
            % {"count": result.events}
        )
