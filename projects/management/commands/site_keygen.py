"""Run at a member's site: make the key pair its worker signs with."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from projects.site.identity import write_key_pair


class Command(BaseCommand):
    help = (
        "Run at a member's site: generate the Ed25519 key pair its site worker signs answers "
        "with. The private key is written to OUT/SLUG.key (mode 600) and never leaves the site; "
        "the public key and its fingerprint are printed for the institution's admin to register "
        "in the portal."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--institution", required=True, help=_("The institution's slug."))
        parser.add_argument(
            "--out", required=True, type=Path, help=_("The folder to write the key pair into.")
        )

    def handle(self, *args: object, institution: str, out: Path, **options: object) -> None:
        try:
            path, public, fingerprint = write_key_pair(out, institution)
        except FileExistsError as exc:
            raise CommandError(
                _(
                    "%(path)s exists: a key is never overwritten. To rotate, write the new key "
                    "elsewhere, register it, then restart the worker with it."
                )
                % {"path": Path(out) / f"{institution}.key"}
            ) from exc
        self.stdout.write(
            _("Private key: %(path)s (mode 600; keep it at the site)") % {"path": path}
        )
        self.stdout.write(_("Public key: %(key)s") % {"key": public})
        self.stdout.write(_("Fingerprint: %(fingerprint)s") % {"fingerprint": fingerprint})
        self.stdout.write(
            _(
                "Register the public key on the portal (My institution, Site keys), compare the "
                "fingerprint, then start the worker with --key %(path)s."
            )
            % {"path": path}
        )
