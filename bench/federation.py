"""`make bench`: the demo medical problem trained through real workers, every phase timed.

Everything runs in a throwaway state directory. With DATABASE_URL (PostgreSQL) the bench creates
a database ``bench_<pid>`` on that server and drops it at the end; with CELERY_BROKER_URL (Redis)
it uses that URL's database and purges the queues it uses before and after. Without them it runs
on the embedded default (SQLite and the filesystem broker) inside the temporary directory.

Steps: migrate and seed the demo; start a coordinator worker and one worker per site (each on its
own queue, as ``run_site_worker`` runs at a member's site); launch FedAvg runs (10 rounds,
5 local epochs, three times) on ``breast-cancer-malignancy`` with ``launch_run --wait``; read the
rounds' timings from the database; replay each run in one process (``run_in_process``) and
compare every array bit for bit; then one heavy run (about a second of training per round).
Then more hospitals join (the same breast-cancer rows dealt 6 and 10 ways) and the runs are
repeated with 6 and 10 sites. Finally ``serve_demo`` runs on its own seeded embedded state while a
10-round run goes through it, and the summed resident memory of its process tree is sampled.

The figures go to ``bench/results/federation-<broker>-<db>-<UTC timestamp>.json`` and a summary
is printed. The exit status is 0 whether or not a target is met, and non-zero only when the bench
itself failed (a run did not succeed, the parameters differ, a process did not start).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
MANAGE = [PYTHON, "manage.py"]
PROBLEM = "breast-cancer-malignancy"
SITE_FILE = "breast_cancer_{n}way.csv"
DEMO_FILE = "breast_cancer.csv"

# Targets (seconds, megabytes), with signatures on. The round period is one round's start to
# the next's; the overhead including hand-off is that period less the sites' compute.
TARGET_PERIOD = {3: 0.030, 10: 0.060}
TARGET_OVERHEAD = 0.020  # 3 sites
TARGET_GROWTH = 0.003  # per additional site
TARGET_LAUNCH_TO_FINAL = 1.0  # 10 rounds, 3 sites
TARGET_HEAVY_SHARE = 0.05  # overhead's share of a round with ~1 s of site compute
TARGET_RSS_MB = 600
LOCAL_EPOCHS = 5
# A larger local workload: about a second of training per site and round on this machine.
HEAVY = {"local_epochs": 100, "batch_size": 1, "rounds": 5}

# The environment a bench process must not inherit: the bench decides where state lives.
STRIPPED = (
    "PORTAL_VAR_DIR",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "BROKER_FOLDER",
    "SITE_DATA_ROOT",
    "SITE_DATA_DIRS",
    "PORTAL_BASE_URL",
)

# More hospital-like members for the six- and ten-site scenarios: name, description.
EXTRA_HOSPITALS = [
    ("Hualien Coast Hospital", "A regional hospital on the east coast."),
    ("Chiayi Plains Hospital", "A teaching hospital serving the southern plains."),
    ("Yilan Valley Hospital", "A community hospital with a breast-screening clinic."),
    ("Tainan Heritage Hospital", "A university hospital in the old capital."),
    ("Hsinchu Science Park Clinic", "An outpatient clinic serving the science park."),
    ("Pingtung Coast Hospital", "A district hospital in the far south."),
    ("Keelung Harbour Clinic", "A screening clinic by the northern port."),
]


class BenchFailed(Exception):
    """The bench itself could not produce its figures."""


def say(text: str = "") -> None:
    print(text, flush=True)


# --- Processes ----------------------------------------------------------------------------------


class Process:
    """A subprocess the bench started, its output in a log file; stopped by its own pid only."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log: Path,
        cpus: set[int] | None = None,
    ) -> None:
        self.name = name
        self.log = log
        self._handle = log.open("ab")
        self.popen = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._handle, stderr=subprocess.STDOUT
        )
        if cpus:
            # Set before the worker has imported anything: a solo worker is one process.
            os.sched_setaffinity(self.popen.pid, cpus)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def last_error(self) -> str:
        """The worker's own account of why it stopped, or the end of its output."""
        lines = self.output().splitlines()
        for index in range(len(lines) - 1, -1, -1):
            if lines[index].startswith(("Unrecoverable error", "CRITICAL", "Error:")):
                return "\n".join(lines[index : index + 1] + lines[-3:])
        return "\n" + "\n".join(lines[-12:])

    def wait_for(self, text: str, count: int = 1, timeout: float = 180.0) -> None:
        """Wait until ``text`` appears ``count`` times in the output; fail if the process ends."""
        limit = time.monotonic() + timeout
        while self.output().count(text) < count:
            if self.popen.poll() is not None:
                raise BenchFailed(
                    f"{self.name} exited ({self.popen.returncode}) before it was ready:\n"
                    + self.tail()
                )
            if time.monotonic() > limit:
                raise BenchFailed(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._handle.close()


def manage(env: dict[str, str], *args: str, timeout: float = 900.0) -> str:
    """Run a management command to its end; its output, or BenchFailed with the output's tail."""
    try:
        done = subprocess.run(
            [*MANAGE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchFailed(f"manage.py {' '.join(args)} did not finish in {timeout:.0f} s.") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        raise BenchFailed(f"manage.py {' '.join(args)} failed ({done.returncode}):\n{tail}")
    return done.stdout


def prepare(env: dict[str, str]) -> float:
    started = time.monotonic()
    manage(env, "migrate", "--no-input", "-v", "0")
    manage(env, "seed_demo")
    return time.monotonic() - started


class Placement:
    """Which CPUs the coordinator and the site workers may use.

    In the alliance every site trains on its own machine; here they share the coordinator's
    two cores. Left to the scheduler, six CPU-bound site processes take the coordinator's CPU
    while it publishes and collects, and "time outside site computation" then measures that
    contention rather than the coordinator. Pinned (the default when there are two CPUs or
    more), the coordinator has the first CPU and the sites share the others; PostgreSQL and
    Redis are not the bench's processes and stay where the scheduler puts them.
    """

    def __init__(self, pin: bool) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        self.pinned = pin and len(cpus) >= 2
        self.coordinator = {cpus[0]} if self.pinned else None
        self.sites = set(cpus[1:]) if self.pinned else None

    def describe(self) -> str:
        if not self.pinned:
            return "not pinned: coordinator and sites share every CPU"
        return (
            f"coordinator on CPU {sorted(self.coordinator or [])}, "
            f"site workers on CPU {sorted(self.sites or [])}"
        )


def coordinator_argv() -> list[str]:
    return [
        PYTHON, "-m", "celery", "-A", "portal", "worker", "--loglevel", "INFO",
        "-Q", "coordinator", "--pool", "solo", "-n", "bench-coordinator@%h",
    ]  # fmt: skip


def site_worker_argv(slug: str, sites_dir: Path) -> list[str]:
    """One worker per site on its own queue, started exactly as a member starts one."""
    return [
        *MANAGE, "run_site_worker", "--institution", slug, "--data-dir",
        str(sites_dir / slug), "--loglevel", "INFO",
    ]  # fmt: skip


# --- Configuration --------------------------------------------------------------------------


def scheme(url: str | None, default: str) -> str:
    if not url:
        return default
    name = urlsplit(url).scheme.split("+")[0]
    return {"postgres": "postgresql", "postgresql": "postgresql", "rediss": "redis"}.get(name, name)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def admin_connection(url: str):
    """A connection to the server of ``url`` for CREATE/DROP DATABASE: the named database, or the
    server's ``postgres`` database when the named one does not exist (yet)."""
    import psycopg2

    try:
        return psycopg2.connect(url)
    except psycopg2.OperationalError as error:
        if "does not exist" not in str(error):
            raise
        return psycopg2.connect(with_database(url, "postgres"))


def create_database(url: str, name: str) -> str:
    connection = admin_connection(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
    finally:
        connection.close()
    return version


def drop_database(url: str, name: str) -> None:
    connection = admin_connection(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        connection.close()


def throwaway_database(url: str, name: str, machine: dict[str, Any]) -> str:
    """Create database ``name`` on the server of ``url``, note the server's version in
    ``machine``, and return the new database's URL."""
    machine["db_version"] = create_database(url, name)
    database_url = with_database(url, name)
    say(f"Throwaway database {name} on {urlsplit(database_url).hostname}")
    return database_url


def release_database(admin_url: str | None, name: str, created: bool) -> None:
    """Close this process's connections, then drop the throwaway database if one was made."""
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()
    if created and admin_url:
        drop_database(admin_url, name)


def save_results(result: dict[str, Any], name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def portal_env(var_dir: Path, database_url: str | None, broker_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED}
    env["PORTAL_VAR_DIR"] = str(var_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    if database_url:
        env["DATABASE_URL"] = database_url
    if broker_url:
        env["CELERY_BROKER_URL"] = broker_url
    return env


def setup_django(env: dict[str, str]) -> None:
    """Let this process read the same database the workers write, with the same settings."""
    for key in STRIPPED:
        os.environ.pop(key, None)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def purge_queues(names: list[str]) -> int:
    """Empty the bench's queues on a server broker: a message left by an earlier run must not
    be taken for an answer of this one (run and round numbers start again at 1)."""
    from portal.celery import app

    purged = 0
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for name in names:
            purged += channel.queue_purge(name) or 0
    return purged


# --- The federation's figures --------------------------------------------------------------


def seconds(later: datetime.datetime, earlier: datetime.datetime) -> float:
    return (later - earlier).total_seconds()


def stats(values: list[float]) -> dict[str, float] | None:
    import numpy as np

    values = [v for v in values if v is not None]
    if not values:
        return None
    return {
        "median": round(float(median(values)), 6),
        "p95": round(float(np.percentile(values, 95)), 6),
        "min": round(min(values), 6),
        "max": round(max(values), 6),
    }


ROUND_KEYS = ("dispatch", "queue_wait", "site_compute", "collection", "aggregation", "persistence")
DERIVED_KEYS = ("period", "wall", "outside_compute", "handoff", "overhead_incl_handoff")


def round_rows(run: Any) -> list[dict[str, Any]]:
    rounds = list(run.round_set.order_by("number").prefetch_related("sites__institution"))
    rows = []
    for index, r in enumerate(rounds):
        nxt = rounds[index + 1] if index + 1 < len(rounds) else None
        compute = float(r.timings.get("site_compute", 0.0))
        wall = seconds(r.closed_at, r.started_at)
        row: dict[str, Any] = {
            "number": r.number,
            "status": r.status,
            "contributors": r.contributors,
            "started_at": r.started_at.isoformat(),
            "closed_at": r.closed_at.isoformat(),
            **{key: r.timings.get(key) for key in ROUND_KEYS},
            "wall": round(wall, 6),
            "outside_compute": round(wall - compute, 6),
            "period": round(seconds(nxt.started_at, r.started_at), 6) if nxt else None,
            "handoff": round(seconds(nxt.started_at, r.closed_at), 6) if nxt else None,
            "overhead_incl_handoff": (
                round(seconds(nxt.started_at, r.started_at) - compute, 6) if nxt else None
            ),
            "sites": {
                s.institution.slug: s.timings
                for s in sorted(r.sites.all(), key=lambda s: s.institution.slug)
            },
        }
        rows.append(row)
    return rows


def base_task(run: Any) -> Any:
    """The round task every site is sent, built by the coordinator's own function."""
    from projects.services.runs import round_task

    # run_in_process sets the site and round number (and mu, from the strategy) itself.
    return round_task(run, 1, "")


def same_params(a: list[Any], b: list[Any]) -> bool:
    import numpy as np

    return len(a) == len(b) and all(
        x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b, strict=True)
    )


def in_process_check(run: Any) -> dict[str, Any]:
    """Replay the run in one process and compare the parameters of every round, bit for bit.

    A secure run is replayed with every round securely aggregated: each site's rounding
    stream is seeded, and the unmasked sum is exact, so the bits agree there too.
    """
    from projects.federation.loop import LocalSite, run_in_process, run_secure_in_process
    from projects.services.runs import model_params
    from projects.site.identity import data_file, site_identities

    first = run.round_set.get(number=1)
    sites = []
    identities = site_identities()
    for s in first.sites.select_related("institution", "dataset"):
        identity = identities.get(s.institution.slug)
        path = data_file(identity, s.dataset.site_key) if identity is not None else None
        if path is None:
            raise BenchFailed(f"{s.institution.slug}'s site key leaves its data folder.")
        sites.append(LocalSite(s.institution.slug, path, s.dataset.sha256))
    started = time.monotonic()
    if run.secure_aggregation:
        from projects.services.runs.secure import CLIP

        history = run_secure_in_process(
            sites,
            base_task(run),
            rounds=run.rounds,
            strategy=run.strategy,
            strategy_options=run.strategy_options,
            clip=CLIP,
            max_weight=float(max(s.dataset.row_count for s in first.sites.all())),
        )
    else:
        history = run_in_process(
            sites,
            base_task(run),
            rounds=run.rounds,
            strategy=run.strategy,
            strategy_options=run.strategy_options,
        )
    elapsed = time.monotonic() - started
    models = {m.round_number: m for m in run.models.all()}
    matching = sum(
        1
        for number, params in enumerate(history, start=1)
        if number in models and same_params(model_params(models[number]), params)
    )
    final = run.models.order_by("-round_number").first()
    return {
        "final_params_equal": final.round_number == run.rounds
        and same_params(model_params(final), history[-1]),
        "rounds_equal": matching,
        "rounds": run.rounds,
        "sites": sorted(s.site for s in sites),
        "in_process_seconds": round(elapsed, 3),
    }


def follow_run(
    env: dict[str, str],
    rounds: int,
    watched: list[Process],
    log: Path,
    every: Callable[[], None] | None = None,
    options: dict[str, int] | None = None,
    secure: bool = False,
) -> str:
    """Run launch_run --wait to its end, calling ``every`` each 0.2 s; its output.

    A watched process that dies meanwhile ends the wait at once, with its last words: a run
    cannot finish without its workers.
    """
    argv = [*MANAGE, "launch_run", "--problem", PROBLEM, "--rounds", str(rounds)]
    for name, value in (options or {"local_epochs": LOCAL_EPOCHS}).items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    if secure:
        argv.append("--secure-aggregation")
    runner = Process("launch_run", [*argv, "--strategy", "fedavg", "--wait"], env, log)
    # Only a guard against a run that cannot end: a busy machine slows the heavy run a lot.
    allowed = 120 + 60 * rounds
    limit = time.monotonic() + allowed
    try:
        while runner.popen.poll() is None:
            if every is not None:
                every()
            for process in watched:
                if process.popen.poll() is not None:
                    raise BenchFailed(
                        f"{process.name} died ({process.popen.returncode}) during the run: "
                        + process.last_error()
                    )
            if time.monotonic() > limit:
                raise BenchFailed(f"The run did not finish in {allowed} s.")
            time.sleep(0.05)
    finally:
        runner.stop()
    if runner.popen.returncode != 0:
        raise BenchFailed(f"launch_run failed ({runner.popen.returncode}):\n{runner.tail(12)}")
    return runner.output()


def launch(
    env: dict[str, str],
    rounds: int,
    watched: list[Process],
    log: Path,
    options: dict[str, int] | None = None,
    secure: bool = False,
) -> Any:
    """A FedAvg run through the workers, finished, as the database holds it."""
    from projects.models import Problem, TrainingRun

    before = TrainingRun.objects.filter(problem__slug=PROBLEM).count()
    follow_run(env, rounds, watched, log, options=options, secure=secure)
    problem = Problem.objects.get(slug=PROBLEM)
    run = problem.runs.order_by("-number").first()
    if run is None or problem.runs.count() != before + 1:
        raise BenchFailed("launch_run finished but no new run is in the database.")
    return run


def scenario(
    env: dict[str, str],
    slugs: list[str],
    rounds: int,
    logs: Path,
    coordinator: Process,
    placement: Placement,
    repeat: int = 1,
    heavy: bool = False,
    secure: bool = False,
) -> dict[str, Any]:
    """``repeat`` timed runs (and the heavy one) with one site worker per slug, started once."""
    from django.conf import settings

    from portal.common.keys import portal_public_text

    site_env = {**env, "PORTAL_PUBLIC_KEY": portal_public_text()}
    workers = [
        Process(
            f"site worker {slug}",
            site_worker_argv(slug, Path(settings.SITE_DATA_ROOT)),
            site_env,
            logs / f"sites-{len(slugs)}{'-secure' if secure else ''}-{slug}.log",
            cpus=placement.sites,
        )
        for slug in slugs
    ]
    measured = []
    heavy_run = None
    try:
        for worker in workers:
            worker.wait_for(" ready.")
        watched = [coordinator, *workers]
        tag = f"{len(slugs)}{'-secure' if secure else ''}"
        for index in range(repeat):
            log = logs / f"run-{tag}-{index + 1}.log"
            before = [cpu_seconds(p.pid) for p in watched]
            run = launch(env, rounds, watched, log, secure=secure)
            spent = [cpu_seconds(p.pid) - b for p, b in zip(watched, before, strict=True)]
            measured.append(timed_run(run, slugs))
            measured[-1]["cpu_per_round"] = {
                "coordinator": round(spent[0] / rounds, 6),
                "sites": round(sum(spent[1:]) / rounds, 6),
            }
        if heavy:
            log = logs / f"run-{tag}-heavy.log"
            run = launch(env, HEAVY["rounds"], watched, log, options=HEAVY, secure=secure)
            heavy_run = timed_run(run, slugs)
    finally:
        for worker in workers:
            worker.stop()
    rows = [row for m in measured for row in m["rounds"]]
    summary = {key: stats([r[key] for r in rows]) for key in ROUND_KEYS + DERIVED_KEYS}
    signatures = signature_cost(measured[-1]["run_object"])
    overhead = summary["overhead_incl_handoff"]["median"]
    signatures["share_of_overhead"] = round(signatures["per_round"] / overhead, 4)
    checks = [m["check"] for m in measured]
    result = {
        "sites": len(slugs),
        "secure_aggregation": secure,
        "site_slugs": slugs,
        "repeat": repeat,
        "runs": [m["run"] for m in measured],
        "run_wall_seconds": round(median(m["run_wall_seconds"] for m in measured), 3),
        "launch_to_final": stats([m["launch_to_final"] for m in measured]),
        "launch_to_first_round": stats([m["launch_to_first_round"] for m in measured]),
        "summary": summary,
        "median_period": summary["period"]["median"],
        "median_outside_compute": summary["outside_compute"]["median"],
        "median_overhead_incl_handoff": overhead,
        # CPU seconds per round of the coordinator's worker and of all site workers together, over
        # whole runs (launch, rounds, final scoring, notices): unlike wall time, hardly changed by
        # other work on the machine.
        "cpu_per_round": {
            who: round(median(m["cpu_per_round"][who] for m in measured), 6)
            for who in ("coordinator", "sites")
        },
        "signatures": signatures,
        "check": {
            "final_params_equal": all(c["final_params_equal"] for c in checks),
            "rounds_equal": sum(c["rounds_equal"] for c in checks),
            "rounds": sum(c["rounds"] for c in checks),
            "in_process_seconds": round(median(c["in_process_seconds"] for c in checks), 3),
        },
        "per_run": [{k: v for k, v in m.items() if k != "run_object"} for m in measured],
    }
    if heavy_run is not None:
        heavy_rows = heavy_run["rounds"]
        periods = [r["period"] for r in heavy_rows if r["period"] is not None]
        overheads = [r["overhead_incl_handoff"] for r in heavy_rows if r["period"] is not None]
        result["heavy"] = {
            "options": HEAVY,
            "summary": {
                key: stats([r[key] for r in heavy_rows]) for key in ROUND_KEYS + DERIVED_KEYS
            },
            "overhead_share": round(
                median(o / p for o, p in zip(overheads, periods, strict=True)), 4
            )
            if periods
            else None,
            "check": heavy_run["check"],
            "run": heavy_run["run"],
        }
    return result


def timed_run(run: Any, slugs: list[str]) -> dict[str, Any]:
    """One finished run's figures, checked against the in-process loop."""
    from projects.models import TrainingRun

    if run.status != TrainingRun.Status.SUCCEEDED:
        raise BenchFailed(f"Run {run.number} {run.status}: {' '.join(run.reasons)}")
    rows = round_rows(run)
    short = [r["number"] for r in rows if r["contributors"] != len(slugs)]
    if short:
        raise BenchFailed(f"Rounds {short} had fewer than {len(slugs)} contributions.")
    first = run.round_set.get(number=1)
    last = run.round_set.order_by("-number").first()
    return {
        "run": run.number,
        "run_object": run,
        "run_wall_seconds": round(seconds(run.finished_at, run.started_at), 3),
        # From the launch's commit (the run's creation, in its transaction) to the final model.
        "launch_to_final": round(seconds(last.closed_at, run.created_at), 6),
        "launch_to_first_round": round(seconds(first.started_at, run.created_at), 6),
        "check": in_process_check(run),
        "rounds": rows,
    }


def signature_cost(run: Any, repeat: int = 200) -> dict[str, float]:
    """Seconds a round spends signing and verifying, timed on the run's own last round.

    On a round's critical path: the coordinator signs one task per site and verifies one answer
    per site, one after the other; each site verifies its task and signs its answer (the sites
    in parallel, so one site's share counts). Each operation is timed ``repeat`` times on the
    real messages of the run's last round, and the median is taken.
    """
    from portal.common.keys import portal_key
    from projects.federation.protocol import Envelope, sha256_hex
    from projects.services.runs import dispatch
    from projects.services.runs.store import round_start_bytes
    from projects.site.identity import site_identities

    last = run.round_set.order_by("-number").first()
    sites = list(last.sites.select_related("institution", "dataset", "round"))
    params = round_start_bytes(run, last.number)
    sha = sha256_hex(params)
    messages = [dispatch.site_message(run, last, s, sha) for s in sites]
    identity = site_identities()[sites[0].institution.slug]
    sealed = Envelope.seal(messages[0], portal_key(), params)
    portal = portal_key().public_key()

    def timed(action: Callable[[], Any]) -> float:
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            action()
            samples.append(time.perf_counter() - t0)
        return median(samples)

    sign_task = timed(lambda: Envelope.seal(messages[0], portal_key(), params))
    verify_task = timed(lambda: sealed.signed_by(portal))
    sign_reply = timed(lambda: Envelope.seal(messages[0], identity.key))
    verify_reply = timed(lambda: sealed.signed_by(identity.key.public_key()))
    n = len(sites)
    return {
        "sign_task": round(sign_task, 7),
        "verify_task": round(verify_task, 7),
        "sign_reply": round(sign_reply, 7),
        "verify_reply": round(verify_reply, 7),
        "per_round": round(n * (sign_task + verify_reply) + verify_task + sign_reply, 7),
    }


# --- Three more sites -----------------------------------------------------------------------


def deal(sites_dir: Path, hospitals: list[str], everyone: list[str]) -> dict[str, Path]:
    """Pool the demo hospitals' breast-cancer rows and deal them to every site (fixed seed)."""
    import numpy as np

    header = None
    lines: list[str] = []
    for slug in sorted(hospitals):
        text = (sites_dir / slug / "breast_cancer.csv").read_text().splitlines()
        header = header or text[0]
        if text[0] != header:
            raise BenchFailed("The hospitals' files have different headers.")
        lines += [line for line in text[1:] if line.strip()]
    order = np.random.RandomState(6).permutation(len(lines))
    everyone = sorted(everyone)
    files = {}
    for index, slug in enumerate(everyone):
        rows = sorted(int(i) for i in order[index :: len(everyone)])
        path = sites_dir / slug / SITE_FILE.format(n=len(everyone))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([header, *(lines[i] for i in rows)]) + "\n")
        files[slug] = path
    return files


def grow_sites(sites_dir: Path, total: int) -> list[str]:
    """Admit more hospitals up to ``total`` sites, have them join, ratify and approve, and
    register the demo's rows dealt ``total`` ways (the others' datasets withdrawn).

    Everything goes through the services the demo seed uses: applications, invitations,
    participation, ratification, agreement approval, dataset withdrawal and registration.
    """
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils.text import slugify

    from alliance import services as alliance_services
    from alliance.models import Role, Sector
    from alliance.services.notifications import notifications_muted
    from projects import services
    from projects.demo import LABEL, seed_site_keys
    from projects.models import AgreementVersion, Dataset, Participation, Problem
    from projects.schema import describe_csv

    User = get_user_model()
    staff = User.objects.get(username="staff")
    problem = Problem.objects.get(slug=PROBLEM)
    current = sorted(
        problem.participations.filter(
            role=Participation.Role.CONTRIBUTOR, status=Participation.Status.ACTIVE
        ).values_list("institution__slug", flat=True)
    )
    hospitals = [slug for slug in current if (sites_dir / slug / DEMO_FILE).exists()]
    members = set(current)
    extra = [(n, d) for n, d in EXTRA_HOSPITALS if slugify(n) not in members]
    if total - len(current) > len(extra):
        raise BenchFailed(f"The bench names {len(EXTRA_HOSPITALS)} extra hospitals, not enough.")

    def person(slug: str, role: str) -> Any:
        return User.objects.get(membership__institution__slug=slug, membership__role=role)

    newcomers = []
    with notifications_muted(), transaction.atomic():
        for name, description in extra[: total - len(current)]:
            base = slugify(name)
            application = alliance_services.application_submit(
                actor=None,
                name=name,
                sector=Sector.MEDICINE,
                country="Taiwan",
                description=description,
                contact_name="Bench Admin",
                contact_email=f"{base}-admin@bench.alliance.test",
                motivation="A hospital added for the federated-training benchmark.",
            )
            admin = alliance_services.application_approve(actor=staff, application=application).user
            for role in (Role.DATA_STEWARD, Role.RESEARCHER):
                alliance_services.member_invite(
                    actor=admin, email=f"{base}-{role}@bench.alliance.test", role=role
                )
            slug = application.institution.slug
            newcomers.append(slug)
            participation = services.participation_request(
                actor=admin,
                problem=problem,
                role="contributor",
                message="We would like to contribute our aspirate measurements.",
            )
            services.participation_accept(
                actor=person(problem.proposer.slug, Role.ADMIN), participation=participation
            )
        for slug in newcomers:
            problem.refresh_from_db()
            services.problem_ratify(
                actor=person(slug, Role.RESEARCHER),
                problem=problem,
                revision=problem.current_revision,
            )
        files = deal(sites_dir, hospitals, current + newcomers)
        for slug in current:
            for dataset in Dataset.objects.filter(
                problem=problem, institution__slug=slug, status=Dataset.Status.ACTIVE
            ):
                services.dataset_withdraw(
                    actor=person(slug, Role.DATA_STEWARD),
                    dataset=dataset,
                    reason=f"The benchmark deals the same rows to {total} sites.",
                )
        for slug in sorted(files):
            problem.refresh_from_db()
            services.dataset_register(
                actor=person(slug, Role.DATA_STEWARD),
                problem=problem,
                **describe_csv(
                    files[slug],
                    label=LABEL,
                    site_key=files[slug].name,
                    name=f"Fine-needle aspirates (1/{total} of the demo rows)",
                    description="A share of the demo's breast-cancer rows, for the benchmark.",
                    personal_data=True,
                    legal_basis="Personal Data Protection Act, art. 6(1)(4): de-identified.",
                ),
            )
        version = problem.agreements.get(status=AgreementVersion.Status.EFFECTIVE)
        for slug in newcomers:
            services.agreement_approve(
                actor=person(slug, Role.DATA_STEWARD),
                version=version,
                terms_sha256=version.terms_sha256,
            )
        # Each newcomer's site makes its key in its own folder; its admin registers it.
        seed_site_keys(sites_dir)
    return sorted(current + newcomers)


def contributor_slugs() -> list[str]:
    from projects.models import AgreementVersion, Problem
    from projects.services.policy import eligible_contributors

    problem = Problem.objects.get(slug=PROBLEM)
    agreement = problem.agreements.filter(status=AgreementVersion.Status.EFFECTIVE).first()
    eligible, _excluded = eligible_contributors(problem, agreement)
    return sorted(c.institution.slug for c in eligible)


# --- Memory of the embedded demo ------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def command_name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    for marker in ("serve_demo", "gunicorn", "coordinator"):
        if any(marker in w for w in words):
            return marker
    if any(w.startswith("site.") or ",site." in w for w in words):
        return "site worker"
    return Path(words[0]).name if words else "?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory(env: dict[str, str], logs: Path, rounds: int) -> dict[str, Any]:
    """Peak summed RSS of serve_demo and its descendants during a run through it."""
    port = free_port()
    argv = [PYTHON, "manage.py", "serve_demo", "--port", str(port)]
    demo = Process("serve_demo", argv, env, logs / "demo.log")
    try:
        demo.wait_for(" ready.", count=2, timeout=90)  # the coordinator and the site worker
        limit = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError as exc:
                if time.monotonic() > limit or demo.popen.poll() is not None:
                    raise BenchFailed(
                        f"serve_demo's web server did not answer:\n{demo.tail()}"
                    ) from exc
                time.sleep(0.2)
        idle_kb = sum(rss_kb(p) for p in process_tree(demo.pid))
        peak = {"kb": 0, "parts": {}, "samples": 0}

        def sample() -> None:
            parts: dict[str, int] = {}
            for pid in process_tree(demo.pid):
                name = command_name(pid)
                parts[name] = parts.get(name, 0) + rss_kb(pid)
            peak["samples"] += 1
            if sum(parts.values()) > peak["kb"]:
                peak["kb"], peak["parts"] = sum(parts.values()), parts

        started = time.monotonic()
        follow_run(env, rounds, [demo], logs / "demo-run.log", every=sample)
        demo_wall = time.monotonic() - started
    finally:
        demo.stop(timeout=40)
    return {
        "rounds": rounds,
        # launch_run --wait through the running demo, from launch to the final model's hash.
        "demo_run_wall_seconds": round(demo_wall, 2),
        "peak_rss_mb": round(peak["kb"] / 1024, 1),
        "idle_rss_mb": round(idle_kb / 1024, 1),
        "peak_by_process_mb": {k: round(v / 1024, 1) for k, v in sorted(peak["parts"].items())},
        "samples": peak["samples"],
        "sample_interval_seconds": 0.2,
    }


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used so far (``/proc/<pid>/stat``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_counters() -> tuple[float, float, float]:
    """(wall, CPU seconds busy on the whole machine, CPU seconds of the bench's processes)."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / ticks  # all but idle and iowait
    mine = os.times()
    ours = mine.user + mine.system + mine.children_user + mine.children_system
    for pid in process_tree(os.getpid())[1:]:  # live workers; finished ones are in children_*
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ours += (int(stat[11]) + int(stat[12])) / ticks
    return time.monotonic(), busy, ours


def cpu_share(before: tuple[float, float, float], after: tuple[float, float, float]) -> dict:
    """Shares of the machine's CPU capacity used by the bench and by everything else
    (the database and broker servers count as everything else)."""
    capacity = (after[0] - before[0]) * len(os.sched_getaffinity(0))
    ours = after[2] - before[2]
    other = max(after[1] - before[1] - ours, 0.0)
    return {"bench": round(ours / capacity, 3), "other": round(other / capacity, 3)}


# --- Summary --------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:7.1f}"


def print_summary(result: dict[str, Any], path: Path | None) -> None:
    machine = result["machine"]
    scenarios = result["scenarios"]
    config = result["config"]
    say()
    say(
        f"Federated training bench: {machine['broker']} broker, {machine['db']} database, "
        f"{machine['nproc']} CPUs, Python {machine['python']}"
    )
    cpu = machine["cpu_during_runs"]
    load = machine.get("load_average", {})
    say(
        f"FedAvg, {config['repeat']} x {config['rounds']} rounds of {PROBLEM}, "
        f"{config['local_epochs']} local epochs. CPU during the runs: {cpu['bench']:.0%} bench "
        f"processes, {cpu['other']:.0%} everything else; load average before "
        f"{load.get('before')}, after {load.get('after')}"
    )
    if cpu["other"] > 0.25:
        say("  (other work on this machine is slowing the bench down: rerun when it is quiet)")
    say(f"Placement: {config['placement']}")
    header = "".join(f"{s['sites']:>12} sites" for s in scenarios)
    say(f"{'per round, ms: median (p95)':36}{header}")
    for key in (*ROUND_KEYS, *DERIVED_KEYS):
        cells = ""
        for s in scenarios:
            st = s["summary"][key]
            cells += f"{ms(st and st['median'])} ({ms(st and st['p95']).strip():>6})".rjust(18)
        say(f"  {key.replace('_', ' '):34}{cells}")
    for key, label in (
        ("launch_to_first_round", "launch to first round, ms"),
        ("launch_to_final", "launch to final model, ms"),
    ):
        cells = ""
        for s in scenarios:
            st = s[key]
            cells += f"{ms(st['median'])} ({ms(st['max']).strip():>6})".rjust(18)
        say(f"{label + ': median (max)':36}{cells}")
    for who in ("coordinator", "sites"):
        cells = "".join(f"{ms(s['cpu_per_round'][who])}".rjust(18) for s in scenarios)
        say(f"{'  CPU per round, ' + who:36}{cells}")
    signed = "".join(f"{ms(s['signatures']['per_round'])}".rjust(18) for s in scenarios)
    say(f"{'  signing and verifying, per round':36}{signed}")
    checks = "".join(
        f"{'equal' if s['check']['final_params_equal'] else 'DIFFERENT':>18}" for s in scenarios
    )
    say(f"{'final params vs in-process loop':36}{checks}")
    heavy = scenarios[0].get("heavy") if scenarios else None
    if heavy:
        st = heavy["summary"]
        say(
            f"Heavy workload ({heavy['options']}), {scenarios[0]['sites']} sites: period "
            f"{ms(st['period']['median']).strip()} ms, site compute "
            f"{ms(st['site_compute']['median']).strip()} ms, overhead incl. hand-off "
            f"{ms(st['overhead_incl_handoff']['median']).strip()} ms "
            f"({heavy['overhead_share']:.1%} of the round)"
        )
    secure = result.get("secure_aggregation")
    if secure is not None:
        extra = secure["extra_seconds_per_round"]
        check = secure["scenario"]["check"]["final_params_equal"]
        say(
            f"Secure aggregation, {secure['scenario']['sites']} sites through the workers: extra "
            f"per round {ms(extra['wall']).strip()} ms wall, "
            f"{ms(extra['overhead_incl_handoff']).strip()} ms overhead incl. hand-off; final "
            f"params vs the secure in-process loop {'equal' if check else 'DIFFERENT'}"
        )
    say()
    targets = result["targets"]
    for item in targets:
        say(f"  [{verdict(item['pass'])}] {item['target']}: {item['value']}")
    if path is not None:
        say(f"\nFigures: {path.relative_to(ROOT)}")


def evaluate(result: dict[str, Any]) -> list[dict[str, Any]]:
    scenarios = {s["sites"]: s for s in result["scenarios"]}
    three = scenarios.get(3)
    targets = []
    for count, limit in TARGET_PERIOD.items():
        if count in scenarios:
            value = scenarios[count]["median_period"]
            targets.append(
                {
                    "target": f"median round period, {count} sites, signed <= "
                    f"{limit * 1000:.0f} ms",
                    "value": f"{value * 1000:.1f} ms",
                    "pass": value <= limit,
                }
            )
    if three:
        value = three["median_overhead_incl_handoff"]
        share = three["signatures"]["share_of_overhead"]
        targets.append(
            {
                "target": "median per-round overhead incl. hand-off (period less site compute), "
                f"3 sites, signed <= {TARGET_OVERHEAD * 1000:.0f} ms",
                "value": f"{value * 1000:.1f} ms, of which signatures "
                f"{three['signatures']['per_round'] * 1000:.2f} ms ({share:.1%})",
                "pass": value <= TARGET_OVERHEAD,
            }
        )
        if result["config"]["rounds"] == 10:
            value = three["launch_to_final"]["median"]
            targets.append(
                {
                    "target": "10 rounds from launch to final model, 3 sites <= "
                    f"{TARGET_LAUNCH_TO_FINAL:.1f} s",
                    "value": f"{value:.3f} s (first round opened "
                    f"{three['launch_to_first_round']['median'] * 1000:.1f} ms after the launch)",
                    "pass": value <= TARGET_LAUNCH_TO_FINAL,
                }
            )
        heavy = three.get("heavy")
        if heavy and heavy["overhead_share"] is not None:
            targets.append(
                {
                    "target": "overhead with ~1 s of site compute per round <= "
                    f"{TARGET_HEAVY_SHARE:.0%} of the round",
                    "value": f"{heavy['overhead_share']:.1%} (site compute "
                    f"{heavy['summary']['site_compute']['median']:.2f} s)",
                    "pass": heavy["overhead_share"] <= TARGET_HEAVY_SHARE,
                }
            )
    growth = result.get("growth_per_site")
    if growth is not None:
        targets.append(
            {
                "target": "growth of the overhead per additional site <= "
                f"{TARGET_GROWTH * 1000:.0f} ms",
                "value": f"{growth['overhead_incl_handoff'] * 1000:.1f} ms (outside compute "
                f"alone {growth['outside_compute'] * 1000:.1f} ms)",
                "pass": growth["overhead_incl_handoff"] <= TARGET_GROWTH,
            }
        )
    runs = list(result["scenarios"])
    equal = [s["check"]["final_params_equal"] for s in runs]
    equal += [s["heavy"]["check"]["final_params_equal"] for s in runs if s.get("heavy")]
    targets.append(
        {
            "target": "final parameters equal to the in-process loop",
            "value": ", ".join(
                f"{s['sites']} sites: {s['check']['rounds_equal']}/{s['check']['rounds']} rounds "
                "bit-identical"
                for s in runs
            ),
            "pass": all(equal),
        }
    )
    mem = result.get("memory")
    if mem:
        targets.append(
            {
                "target": "embedded demo (web server and workers) < 600 MB resident",
                "value": f"peak {mem['peak_rss_mb']:.0f} MB during a {mem['rounds']}-round run "
                f"({mem['demo_run_wall_seconds']:.1f} s from launch to final model)",
                "pass": mem["peak_rss_mb"] < TARGET_RSS_MB,
            }
        )
    return targets


# --- Main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--sites", default="3,6,10", help="Site counts, ascending (the demo has 3 hospitals)."
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="Timed runs per site count (figures pooled)."
    )
    parser.add_argument(
        "--no-heavy", action="store_true", help="Skip the ~1 s-per-round workload (3 sites)."
    )
    parser.add_argument("--memory-rounds", type=int, default=10)
    parser.add_argument("--no-memory", action="store_true", help="Skip the serve_demo memory run.")
    parser.add_argument(
        "--no-secure", action="store_true", help="Skip the securely aggregated three-site run."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the temporary state and logs.")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="Let the scheduler place the coordinator and the site workers (see Placement).",
    )
    args = parser.parse_args()
    placement = Placement(pin=not args.no_pin)

    stamp = datetime.datetime.now(datetime.UTC)
    database_url = os.environ.get("DATABASE_URL") or None
    admin_url = database_url  # where the throwaway database is created and dropped
    broker_url = os.environ.get("CELERY_BROKER_URL") or None
    db = scheme(database_url, "sqlite")
    broker = scheme(broker_url, "filesystem")
    if db == "sqlite":
        database_url = None  # the bench's own SQLite file in its temporary directory
    elif db != "postgresql":
        say(f"The bench creates its throwaway database on PostgreSQL only, not on {db}.")
        return 2
    if broker == "filesystem":
        broker_url = None
    tmp = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    logs = tmp / "logs"
    logs.mkdir()
    bench_db = f"bench_{os.getpid()}"
    created_db = False
    coordinator: Process | None = None
    started = time.monotonic()
    failed = True
    try:
        result: dict[str, Any] = {
            "config": {
                "problem": PROBLEM,
                "strategy": "fedavg",
                "rounds": args.rounds,
                "local_epochs": LOCAL_EPOCHS,
                "repeat": args.repeat,
                "coordinator": "celery worker -Q coordinator --pool solo",
                "site_worker": "one run_site_worker per site (its own queue, folder and key)",
                "placement": placement.describe(),
            },
            "machine": {
                "nproc": len(os.sched_getaffinity(0)),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "broker": broker,
                "db": db,
            },
            "started_at": stamp.isoformat(),
        }
        if database_url:
            database_url = throwaway_database(database_url, bench_db, result["machine"])
            created_db = True
        env = portal_env(tmp / "state", database_url, broker_url)
        memory_env = portal_env(tmp / "memory", None, None)
        say(f"Seeding the demo in {tmp} ...")
        with ThreadPoolExecutor(max_workers=2) as pool:
            main_seed = pool.submit(prepare, env)
            memory_seed = None if args.no_memory else pool.submit(prepare, memory_env)
            result["seed_seconds"] = round(main_seed.result(), 1)
            if memory_seed is not None:
                memory_seed.result()
        setup_django(env)
        from django.conf import settings
        from django.utils.text import slugify

        slugs = contributor_slugs()
        if broker_url:
            names = ["coordinator", *(f"site.{s}" for s in slugs)]
            names += [f"site.{slugify(n)}" for n, _d in EXTRA_HOSPITALS]
            purged = purge_queues(names)
            if purged:
                say(f"Purged {purged} stale messages from the bench's queues.")

        coordinator = Process(
            "coordinator",
            coordinator_argv(),
            env,
            logs / "coordinator.log",
            cpus=placement.coordinator,
        )
        coordinator.wait_for(" ready.")
        cpu_before = cpu_counters()
        scenarios = []
        load_before = os.getloadavg()
        secure_runs = []
        for count in sorted(int(n) for n in args.sites.split(",")):
            if count > len(slugs):
                slugs = grow_sites(Path(settings.SITE_DATA_ROOT), count)
            elif count < len(slugs):
                raise BenchFailed(f"The demo has {len(slugs)} sites; it cannot run {count}.")
            heavy = not args.no_heavy and not scenarios
            say(f"{len(slugs)} sites: {args.repeat} x {args.rounds} rounds ...")
            scenarios.append(
                scenario(env, slugs, args.rounds, logs, coordinator, placement, args.repeat, heavy)
            )
            say(f"  done, median run {scenarios[-1]['run_wall_seconds']:.2f} s")
            if not args.no_secure and not secure_runs:
                # Before the demo grows: every site of the problem has its worker.
                say(f"{len(slugs)} sites, securely aggregated: {args.rounds} rounds ...")
                secure_runs.append(
                    scenario(env, slugs, args.rounds, logs, coordinator, placement, secure=True)
                )
                say(f"  done, median run {secure_runs[-1]['run_wall_seconds']:.2f} s")
        result["machine"]["cpu_during_runs"] = cpu_share(cpu_before, cpu_counters())
        result["machine"]["load_average"] = {
            "before": [round(v, 2) for v in load_before],
            "after": [round(v, 2) for v in os.getloadavg()],
        }
        coordinator.stop()
        result["scenarios"] = scenarios
        if secure_runs:
            plain, secure = scenarios[0], secure_runs[0]
            # Four stages instead of one: three more broker round trips and the protocol.
            result["secure_aggregation"] = {
                "scenario": secure,
                "extra_seconds_per_round": {
                    key: round(
                        secure["summary"][key]["median"] - plain["summary"][key]["median"], 6
                    )
                    for key in ("wall", "outside_compute", "overhead_incl_handoff")
                },
            }
        if len(scenarios) >= 2:
            a, b = scenarios[0], scenarios[-1]
            extra = b["sites"] - a["sites"]
            result["growth_per_site"] = {
                key: round((b[f"median_{key}"] - a[f"median_{key}"]) / extra, 6)
                for key in ("period", "outside_compute", "overhead_incl_handoff")
            }
        if not args.no_memory:
            say(f"serve_demo memory: a {args.memory_rounds}-round run ...")
            result["memory"] = memory(memory_env, logs, args.memory_rounds)
        result["bench_seconds"] = round(time.monotonic() - started, 1)
        result["targets"] = evaluate(result)
        bad = [
            s["sites"] for s in [*scenarios, *secure_runs] if not s["check"]["final_params_equal"]
        ]
        path = save_results(
            result, f"federation-{broker}-{db}-{stamp.strftime('%Y%m%dT%H%M%SZ')}.json"
        )
        print_summary(result, path)
        say(f"Bench time {result['bench_seconds']:.0f} s.")
        if bad:
            say(f"The bench failed: parameters differ from the in-process loop ({bad} sites).")
            return 1
        failed = False
        return 0
    except BenchFailed as exc:
        say(f"\nThe bench failed: {exc}")
        return 1
    finally:
        if coordinator is not None:
            coordinator.stop()
        if broker_url and "django" in sys.modules:
            try:
                purge_queues(["coordinator"])  # its deadline checks, due long after the run
            except Exception as exc:  # cleaning up must not hide the outcome
                say(f"Could not purge the coordinator queue: {exc}")
        release_database(admin_url, bench_db, created_db)
        if args.keep or failed:
            say(f"State and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
