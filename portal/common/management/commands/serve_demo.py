"""Run the embedded demo: the web server and a real Celery worker, stopped together."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

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
                "--concurrency",
                "1",
                "--hostname",
                "demo@%h",
            ],
            env=env,
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
        self.stdout.write(f"Emails are printed by the worker. Data: {settings.VAR_DIR}")
        self.stdout.write("Press Ctrl-C to stop the web server and the worker.\n")

        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and worker.poll() is None and web.poll() is None:
                time.sleep(0.3)
        finally:
            for proc in (web, worker):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in (web, worker):
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        failed = [
            name
            for name, p in (("web server", web), ("worker", worker))
            if p.returncode not in (0, -signal.SIGTERM, -signal.SIGINT) and not stopping
        ]
        if failed:
            self.stderr.write(f"Stopped because the {' and '.join(failed)} exited unexpectedly.")
            sys.exit(1)
        self.stdout.write("Stopped the web server and the worker.")
