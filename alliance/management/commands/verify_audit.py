from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from alliance.services import audit_verify


class Command(BaseCommand):
    # A plain string: argparse cannot format a lazy translation.
    help = (
        "Recompute the audit trail's hash chain. Exit 0 and the number of events when it is "
        "intact; exit 1 and the first broken sequence number when any event was altered, "
        "removed or reordered. Trusts no checkpoint; afterwards the audit badge's checkpoint "
        "covers exactly the events found intact."
    )

    def handle(self, *args: object, **options: object) -> None:
        result = audit_verify()
        if not result.ok:
            self.stderr.write(
                _(
                    "Audit chain BROKEN at event %(seq)d: %(reason)s (%(count)d events verified "
                    "before it)."
                )
                % {"seq": result.first_broken_seq, "reason": result.reason, "count": result.count}
            )
            raise CommandError(
                _("first broken sequence number: %(seq)d") % {"seq": result.first_broken_seq},
                returncode=1,
            )
        self.stdout.write(
            _("Audit chain intact: %(count)d events verified.") % {"count": result.count}
        )
