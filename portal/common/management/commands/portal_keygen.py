"""The portal's own keys: make new ones for the environment, or print the public halves."""

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management.base import BaseCommand, CommandParser
from django.utils.translation import gettext as _

from portal.common import keys


class Command(BaseCommand):
    help = (
        "Print new values for PORTAL_SIGNING_KEY and AUDIT_LOG_KEY (base64 Ed25519 seeds) to put "
        "in the production environment; with --public, print the public halves of the keys the "
        "portal uses now (what site workers are started with, and what members verify the "
        "audit log's checkpoints with)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--public", action="store_true", help=_("Print the current keys' public halves.")
        )

    def handle(self, *args: object, public: bool, **options: object) -> None:
        for setting in keys.KEYS:
            if public:
                self.stdout.write(f"{setting} public: {keys.portal_public_text(setting)}")
            else:
                self.stdout.write(f"{setting}={keys.key_to_text(Ed25519PrivateKey.generate())}")
