"""Run the embedded demo: the web server and a real Celery worker, stopped together."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from portal.common.keys import portal_public_text
from portal.common.mailbox import mailbox_enabled

DEMO_LOGINS = [
    ("staff", "alliance staff (staff overview and console)"),
    ("taipei-north-hospital-admin", "institution admin"),
    ("taipei-north-hospital-steward", "data steward"),
    ("kaohsiung-harbour-hospital-researcher", "researcher"),
    ("metro-taipei-viewer", "viewer"),
]


class Command(BaseCommand):
    help = "Serve the portal (gunicorn) and a Celery worker on the configured broker until Ctrl-C."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))

    def handle(self, *args: object, port: int, host: str, **options: object) -> None:
        python = sys.executable
        bindir = Path(python).parent
        env = {**os.environ, "PORTAL_BASE_URL": f"http://{host}:{port}"}
        # The demo sites obey this portal's key, as a member's worker is told to.
        site_env = {**env, "PORTAL_PUBLIC_KEY": portal_public_text()}
        worker = subprocess.Popen(
            [
                python,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "--loglevel",
                "INFO",
                "--queues",
                "coordinator",
                # One process, no pool child: the coordinator's work is short database steps.
                "--pool",
                "solo",
                "--hostname",
                "demo@%h",
            ],
            env=env,
        )
        # One worker serves every demo site, each reading its own folder var/sites/<slug>/ and
        # signing with its own key there, as if it ran at that member's site; it never opens
        # the portal database.
        root = Path(settings.SITE_DATA_ROOT)
        sites = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        site_worker = None
        if sites:
            site_worker = subprocess.Popen(
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "portal",
                    "worker",
                    "--loglevel",
                    "INFO",
                    "--queues",
                    ",".join(f"site.{slug}" for slug in sites),
                    "--pool",
                    "threads",
                    "--concurrency",
                    str(min(len(sites), 4)),
                    "--hostname",
                    "demo-sites@%h",
                ],
                env=site_env,
            )
        web = subprocess.Popen(
            [
                str(bindir / "gunicorn"),
                "portal.wsgi",
                "--bind",
                f"{host}:{port}",
                "--workers",
                "1",
                "--threads",
                "8",
                "--access-logfile",
                "-",
            ],
            env=env,
        )
        password = os.environ.get("DEMO_PASSWORD") or "alliance-demo"
        self.stdout.write(
            self.style.SUCCESS(f"\nThe alliance portal runs at http://{host}:{port}/")
        )
        self.stdout.write(f"API docs: http://{host}:{port}/api/v1/docs/  health: /healthz")
        self.stdout.write(f"Demo logins (password: {password}):")
        for username, what in DEMO_LOGINS:
            self.stdout.write(f"  {username:42} {what}")
        if mailbox_enabled():
            self.stdout.write(
                f"Emails: the demo mailbox, http://{host}:{port}/staff/mailbox/ (log in as staff)"
            )
        else:
            self.stdout.write(f"Emails go through {settings.EMAIL_BACKEND}.")
        self.stdout.write(f"Data: {settings.VAR_DIR}")
        if sites:
            self.stdout.write(
                f"Demo sites training on their own folders in {root}: {', '.join(sites)}"
            )
        self.stdout.write("Press Ctrl-C to stop the web server and the worker.\n")

        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            procs = [p for p in (worker, site_worker, web) if p is not None]
            while not stopping and all(p.poll() is None for p in procs):
                time.sleep(0.3)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        failed = [
            name
            for name, p in (("web server", web), ("worker", worker), ("site worker", site_worker))
            if p is not None
            and p.returncode not in (0, -signal.SIGTERM, -signal.SIGINT)
            and not stopping
        ]
        if failed:
            self.stderr.write(f"Stopped because the {' and '.join(failed)} exited unexpectedly.")
            sys.exit(1)
        self.stdout.write("Stopped the web server and the workers.")
