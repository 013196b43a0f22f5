from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from alliance.services.audit_log import (
    AuditLogBroken,
    audit_checkpoint_issue,
    audit_checkpoint_latest,
    audit_log_public_key,
)


class Command(BaseCommand):
    # A plain string: argparse cannot format a lazy translation.
    help = (
        "Print the audit log's latest signed checkpoint (a C2SP signed note) on standard output, "
        "to keep outside the portal. --issue signs one over any events not yet covered first; "
        "--key prints the log's verifier key instead."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--issue", action="store_true", help="Sign a checkpoint over new events first."
        )
        parser.add_argument(
            "--key", action="store_true", help="Print the log's signed-note verifier key."
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["key"]:
            self.stdout.write(audit_log_public_key())
            return
        if options["issue"]:
            try:
                audit_checkpoint_issue()
            except AuditLogBroken as exc:
                raise CommandError(str(exc), returncode=1) from exc
        checkpoint = audit_checkpoint_latest()
        if checkpoint is None:
            raise CommandError(
                _("No checkpoint has been signed yet (no audit events, or run with --issue)."),
                returncode=1,
            )
        self.stdout.write(checkpoint.note, ending="")
