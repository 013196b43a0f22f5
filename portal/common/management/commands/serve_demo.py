"""Run the embedded demo: the web server and real Celery workers, stopped together.

Each child (gunicorn, the coordinator's worker, the demo sites' worker) is started as the
leader of a process group of its own, so Ctrl-C in the terminal reaches this command only, not
the children behind its back. On Ctrl-C (or TERM) the command signals each child once (TERM:
gunicorn and Celery shut down gracefully and stop their own workers), waits up to
``STOP_GRACE`` seconds, then kills whatever is left of each group (a worker that ignored its
master, say), so every process is gone and the port is free within ``STOP_DEADLINE`` seconds.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
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


# Seconds from Ctrl-C: the children's own graceful shutdown, then SIGKILL for what is left.
STOP_GRACE = 6.0
STOP_DEADLINE = 9.0


@dataclass
class Child:
    """A process the demo started, leader of its own process group."""

    name: str
    process: subprocess.Popen

    @classmethod
    def start(cls, name: str, argv: list[str], env: dict[str, str]) -> "Child":
        return cls(name, subprocess.Popen(argv, env=env, process_group=0))

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
            os.killpg(self.process.pid, signum)

    def group_alive(self) -> bool:
        """Whether any process of the group is left (a worker can outlive its master)."""
        self.process.poll()  # reap the leader if it has ended
        return bool(group_members(self.process.pid))


def group_members(pgid: int) -> list[int]:
    """The live processes of a process group (zombies excluded: they hold no port)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel whether the group still exists
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def stop_children(children: list[Child], grace: float = STOP_GRACE) -> None:
    """Signal each child once (TERM to its leader), wait up to ``grace`` seconds for every
    group to end, then kill what remains of each group and reap it."""
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(c.group_alive() for c in children):
        time.sleep(0.1)
    for child in children:
        if child.group_alive():
            child.signal_group(signal.SIGKILL)
    end = time.monotonic() + (STOP_DEADLINE - grace)
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(timeout=max(0.1, end - time.monotonic()))
    while time.monotonic() < end and any(c.group_alive() for c in children):
        time.sleep(0.05)


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
        children = [
            Child.start(
                "worker",
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
                    # Celery beat inside the coordinator's worker: the periodic tasks of
                    # CELERY_BEAT_SCHEDULE (the approvers' reminders).
                    "--beat",
                    "--schedule",
                    str(Path(settings.VAR_DIR) / "celerybeat-schedule"),
                ],
                env,
            )
        ]
        # One worker serves every demo site, each reading its own folder var/sites/<slug>/ and
        # signing with its own key there, as if it ran at that member's site; it never opens
        # the portal database.
        root = Path(settings.SITE_DATA_ROOT)
        sites = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        if sites:
            children.append(
                Child.start(
                    "site worker",
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
                    site_env,
                )
            )
        children.append(
            Child.start(
                "web server",
                [
                    str(bindir / "gunicorn"),
                    "portal.wsgi",
                    "--bind",
                    f"{host}:{port}",
                    "--workers",
                    "1",
                    "--threads",
                    "8",
                    # A stop waits this long for requests in flight (browsers keep connections
                    # open), then gunicorn ends its worker itself, well within STOP_GRACE.
                    "--graceful-timeout",
                    "3",
                    "--access-logfile",
                    "-",
                ],
                env,
            )
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
            while not stopping and all(c.process.poll() is None for c in children):
                time.sleep(0.2)
        finally:
            # A second Ctrl-C while stopping must not cut the stop short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            stop_children(children)
        failed = [
            c.name
            for c in children
            if c.process.returncode not in (0, -signal.SIGTERM, -signal.SIGINT) and not stopping
        ]
        if failed:
            self.stderr.write(f"Stopped because the {' and '.join(failed)} exited unexpectedly.")
            sys.exit(1)
        self.stdout.write("Stopped the web server and the workers.")
