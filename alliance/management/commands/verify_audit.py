from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from alliance.services import audit_verify
from alliance.services.audit_log import audit_verify_checkpoint, read_checkpoint_file
from alliance.tlog import ProofError


class Command(BaseCommand):
    # A plain string: argparse cannot format a lazy translation.
    help = (
        "Recompute the audit trail's hash chain and Merkle tree. Exit 0 and the number of events "
        "when it is intact; exit 1 and the first broken sequence number when any event was "
        "altered, removed or reordered, or no longer matches the newest signed checkpoint. "
        "Trusts no checkpoint; afterwards the audit badge's checkpoint covers exactly the events "
        "found intact. With --checkpoint FILE (a signed checkpoint kept outside the portal, or "
        "the checkpoint file log), prove the current log consistent with it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--checkpoint",
            metavar="FILE",
            help="A signed checkpoint (audit_checkpoint, the API) to prove consistency with.",
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["checkpoint"]:
            self._against_checkpoint(Path(str(options["checkpoint"])))
            return
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

    def _against_checkpoint(self, path: Path) -> None:
        try:
            note = read_checkpoint_file(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ProofError) as exc:
            raise CommandError(
                _("Cannot read the checkpoint %(path)s: %(error)s") % {"path": path, "error": exc},
                returncode=1,
            ) from exc
        result = audit_verify_checkpoint(note)
        if not result.ok:
            raise CommandError(
                _("Audit log NOT consistent with the checkpoint of %(size)d events: %(problem)s.")
                % {"size": result.checkpoint_size, "problem": result.problem},
                returncode=1,
            )
        self.stdout.write(
            _(
                "Audit log consistent with the checkpoint: its %(size)d events are the first of "
                "the %(count)d in the log (consistency proof verified)."
            )
            % {"size": result.checkpoint_size, "count": result.log_size}
        )
