"""Start a member site's Celery worker: it consumes only ``site.<slug>``, reads only DIR, and
obeys only tasks signed with the portal's key."""

import os
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from projects.federation import signing
from projects.site.identity import LOG_NAME, PRIVATE_DIR, default_key_path


def _portal_key_text(value: str) -> str:
    """The portal's public key: given as its base64 text, or as a file holding it."""
    candidate = value.strip()
    path = Path(candidate)
    if candidate and len(candidate) != 44 and path.is_file():
        candidate = path.read_text().strip()
    signing.public_from_text(candidate)  # BadKey when it is not one
    return candidate


class Command(BaseCommand):
    help = (
        "Run at a member's site: a Celery worker on that institution's queue only, training on "
        "the files in its data directory, obeying only tasks signed with the portal's key and "
        "signing every answer with the site's own key. It never reads the portal database."
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
        parser.add_argument(
            "--key",
            type=Path,
            help=_("The site's private key (default: DATA_DIR/.site/SLUG.key, from site_keygen)."),
        )
        parser.add_argument(
            "--portal-key",
            default=os.environ.get("PORTAL_PUBLIC_KEY", ""),
            help=_(
                "The portal's public key (base64, or a file holding it; default: the "
                "PORTAL_PUBLIC_KEY environment variable). Tasks signed otherwise are refused."
            ),
        )
        parser.add_argument("--concurrency", type=int, default=1)
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args: object, institution: str, data_dir: Path, **options: object) -> None:
        if not data_dir.is_dir():
            raise CommandError(_("%(dir)s is not a folder.") % {"dir": data_dir})
        key_path = Path(options["key"] or default_key_path(data_dir, institution))  # type: ignore[arg-type]
        try:
            key = signing.private_from_text(key_path.read_text())
        except OSError as exc:
            raise CommandError(
                _(
                    "No site key at %(path)s: run `manage.py site_keygen --institution %(slug)s "
                    "--out DIR` and register the public key it prints, then pass --key."
                )
                % {"path": key_path, "slug": institution}
            ) from exc
        except signing.BadKey as exc:
            raise CommandError(
                _("%(path)s is not a site key: %(error)s") % {"path": key_path, "error": exc}
            ) from exc
        try:
            portal = _portal_key_text(str(options["portal_key"] or ""))
        except (signing.BadKey, OSError) as exc:
            raise CommandError(
                _(
                    "Give the portal's public key with --portal-key or PORTAL_PUBLIC_KEY (the "
                    "portal's staff publish it): %(error)s"
                )
                % {"error": exc}
            ) from exc
        os.environ["SITE_DATA_DIRS"] = f"{institution}={data_dir.resolve()}"
        os.environ["SITE_KEY_FILES"] = f"{institution}={key_path.resolve()}"
        os.environ["PORTAL_PUBLIC_KEY"] = portal
        # Broker keys of its own, so that its Redis user can be confined (manage.py broker_acl).
        os.environ["SITE_WORKER_INSTITUTION"] = institution
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
            # A site talks to the coordinator's queue and its own, nothing else.
            "--without-gossip",
            "--without-mingle",
        ]
        public = signing.public_to_text(key)
        self.stdout.write(
            _(
                "Site worker for %(slug)s on queue site.%(slug)s, data in %(dir)s, signing with "
                "key %(fingerprint)s, obeying the portal key %(portal)s; its log: %(log)s"
            )
            % {
                "slug": institution,
                "dir": data_dir.resolve(),
                "fingerprint": signing.fingerprint(public),
                "portal": signing.fingerprint(portal),
                "log": data_dir.resolve() / PRIVATE_DIR / LOG_NAME,
            }
        )
        sys.stdout.flush()
        os.execv(sys.executable, argv)
