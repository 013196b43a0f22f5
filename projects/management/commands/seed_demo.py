"""Seed the whole demo: the alliance's members, then problems, datasets and agreements."""

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Seed the demo alliance: members in every role, problems in every stage, agreements."

    def handle(self, *args: object, **options: object) -> None:
        call_command("seed_alliance", stdout=self.stdout, stderr=self.stderr)
