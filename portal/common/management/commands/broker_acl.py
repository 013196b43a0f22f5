"""Print the Redis ACL line that confines a member site's broker user to its own queue."""

import secrets

from django.core.management.base import BaseCommand, CommandParser
from django.utils.translation import gettext as _

from portal.common.broker_acl import acl_file_line, site_user


class Command(BaseCommand):
    help = (
        "For each institution given, print a Redis ACL file line for its site's broker user: it "
        "may take tasks from its own queue site.SLUG and push answers onto the coordinator's "
        "queue, nothing else. A fresh password is made unless --password is given; the site's "
        "CELERY_BROKER_URL is printed to standard error."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--institution", action="append", required=True, dest="slugs")
        parser.add_argument("--password", help=_("Use this password (default: a fresh one)."))
        parser.add_argument(
            "--host", default="redis.example:6379/0", help=_("Host, port and database for the URL.")
        )

    def handle(self, *args: object, slugs: list[str], **options: object) -> None:
        for slug in slugs:
            password = str(options["password"] or secrets.token_urlsafe(24))
            self.stdout.write(acl_file_line(slug, password))
            self.stderr.write(
                f"{slug}: CELERY_BROKER_URL=redis://{site_user(slug)}:{password}@{options['host']}"
            )
