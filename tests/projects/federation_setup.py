"""The demo medical problem, seeded for tests that train: real files at each site's folder."""

import io
from pathlib import Path

from django.conf import settings
from django.core.management import call_command

from projects.demo import BREAST_CANCER
from projects.models import Problem

SITES = ["kaohsiung-harbour-hospital", "taichung-medical-centre", "taipei-north-hospital"]


def seed_medical(var_dir: Path) -> Problem:
    """Seed the demo alliance and problems with site files under ``var_dir/sites``."""
    settings.VAR_DIR = var_dir
    settings.SITE_DATA_ROOT = var_dir / "sites"
    settings.MEDIA_ROOT = var_dir / "media"
    call_command("seed_demo", stdout=io.StringIO())
    return Problem.objects.get(slug=BREAST_CANCER)
