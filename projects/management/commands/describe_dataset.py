"""Describe a CSV file at a member's site: the metadata the portal may see, and no row."""

import argparse
import json
from datetime import date
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from projects.schema import DescribeError, describe_csv


def _iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            _("“%(value)s” is not a date as YYYY-MM-DD.") % {"value": value}
        ) from None


class Command(BaseCommand):
    # Django's own commands keep `help` a plain string: argparse cannot format a lazy one.
    help = (
        "Run this at your site, on the machine that holds the data. Reads a UTF-8 CSV file "
        "(header first) and prints its description as JSON: row count, SHA-256, each column's "
        "type, missing values, range and (when few) categories. No row leaves the machine; "
        "paste or upload the printed description to register the dataset in the portal."
    )
    # Runs at a member's site, where there is no portal database and nothing to check.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help=_("The CSV file to describe."))
        parser.add_argument("--label", help=_("The column holding the label."))
        parser.add_argument(
            "--name", help=_("The dataset's name in the portal (default: file stem).")
        )
        parser.add_argument(
            "--site-key",
            help=_(
                "The file name your site's worker will look for in its data directory "
                "(default: the file's name)."
            ),
        )
        parser.add_argument("--description", default="", help=_("A description."))
        parser.add_argument(
            "--personal-data",
            action="store_true",
            help=_("The rows concern identifiable people."),
        )
        parser.add_argument(
            "--legal-basis",
            default="",
            help=_("The legal basis for processing personal data."),
        )
        parser.add_argument(
            "--collected-from",
            type=_iso_date,
            help=_("First day of collection, YYYY-MM-DD."),
        )
        parser.add_argument(
            "--collected-to",
            type=_iso_date,
            help=_("Last day of collection, YYYY-MM-DD."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = describe_csv(
                options["file"],
                label=options["label"],
                name=options["name"],
                site_key=options["site_key"],
                description=options["description"],
                personal_data=options["personal_data"],
                legal_basis=options["legal_basis"],
                collection_start=options["collected_from"],
                collection_end=options["collected_to"],
            )
        except DescribeError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(result, indent=2, ensure_ascii=False))
