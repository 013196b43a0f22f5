"""`make bench`: the main pages and API lists under concurrent load, over HTTP, on a large alliance.

The portal is served by gunicorn with the production settings (``portal/gunicorn_config.py``:
workers and threads as documented there, overridable with ``--workers``/``--threads``) on a
loopback port, on a throwaway database seeded by ``manage.py seed_bench`` (100 institutions,
10,000 rounds, 100,000 audit events by default; set up by ``bench/seeded.py`` as for the
dashboards and audit benches), or an already seeded database named with ``--database``.

The load client is this process: ``--concurrency`` threads (8), each with its own keep-alive HTTP
connection, request one URL as fast as they are answered until ``--requests`` answers (150) or
``--seconds`` (2) have passed, whichever comes first; a few untimed requests warm the workers
first. Each URL is measured ``--repeat`` times (3) in rounds over all URLs, so that a burst of
load from elsewhere on the machine touches one repetition of every URL rather than every
repetition of one. Reported per URL: the medians over the repetitions of p50, p95, requests
per second and the server's CPU time per answer (gunicorn's processes only, PostgreSQL's not: it
barely depends on what else runs on the machine), the queries of one request (counted in this
process through Django's test client), the response size, and any answer other than 200. The
machine's load average (``/proc/loadavg``) is recorded before and after, and the CPU share used
by other processes during the timing.

Members are the busiest institution's admin; staff an alliance superuser. Pages go with a session
cookie, API lists with a token, as a browser and an integrator would.

Figures go to ``bench/results/load-<db>-<UTC time>.json`` with a summary; the exit status is 0
whether or not the 100 ms target is met, non-zero only when the bench itself failed.
"""

import argparse
import datetime
import http.client
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Sibling scripts, not a package: found through the path above.
from dashboards import subjects, url_for
from federation import (
    ROOT,
    BenchFailed,
    cpu_counters,
    cpu_share,
    free_port,
    process_tree,
    save_results,
    say,
    stats,
)
from seeded import database_kind, seed_args, seeded_alliance

TARGET_P95_MS = 100.0
HOST = "127.0.0.1"


# --- What is requested --------------------------------------------------------------------------


def targets(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Each URL: a label, whether a page (session) or the API (token), and who asks."""
    problem, run = s["problem"], s["run"]
    slug, number = problem.slug, run.number
    pages = [
        ("home", url_for("home")),
        ("dashboard", url_for("dashboard")),
        ("my-institution", url_for("my-institution")),
        ("problem", url_for("problem-detail", [slug])),
        ("run", url_for("run", [slug, number])),
        ("audit", url_for("audit-list")),
        ("staff-overview", url_for("staff-overview")),
    ]
    api = [
        ("api problems", url_for("api:problem-list")),
        ("api institutions", url_for("api:institution-list")),
        ("api runs", url_for("api:run-list", [slug])),
        ("api rounds", url_for("api:run-rounds", [slug, number])),
        ("api site-rounds", url_for("api:run-site-rounds", [slug, number])),
        ("api models", url_for("api:run-models", [slug, number])),
        ("api audit-events", url_for("api:audit-event-list")),
        ("api inbox", url_for("api:inbox")),
    ]
    rows = []
    for who in ("member", "staff"):
        for name, url in pages:
            if name == "staff-overview" and who != "staff":
                continue
            if name == "my-institution" and who != "member":
                continue
            rows.append({"name": name, "as": who, "kind": "page", "url": url})
        for name, url in api:
            rows.append({"name": name, "as": who, "kind": "api", "url": url})
    return rows


def credentials(s: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Request headers per caller and kind: a session cookie for pages, a token for the API."""
    import logging

    from django.conf import settings
    from django.test import Client
    from rest_framework.authtoken.models import Token

    logging.getLogger("axes").setLevel(logging.WARNING)
    headers: dict[str, dict[str, str]] = {}
    for who in ("member", "staff"):
        client = Client()
        client.force_login(s[who])
        session = client.cookies[settings.SESSION_COOKIE_NAME].value
        token, _ = Token.objects.get_or_create(user=s[who])
        headers[f"{who} page"] = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={session}"}
        headers[f"{who} api"] = {"Authorization": f"Token {token.key}"}
    return headers


def query_counts(s: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Queries of one request to each row's URL, counted in this process (Django's test client)."""
    import logging

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    logging.getLogger("axes").setLevel(logging.WARNING)
    clients = {}
    for who in ("member", "staff"):
        clients[who] = APIClient(HTTP_HOST="localhost")
        clients[who].force_login(s[who])
    for row in rows:
        client = clients[row["as"]]
        client.get(row["url"])  # per-process caches fill once
        with CaptureQueriesContext(connection) as captured:
            response = client.get(row["url"])
        row["queries"] = len(captured) if response.status_code == 200 else None


# --- The server ---------------------------------------------------------------------------------


class Server:
    """gunicorn with the production configuration on a loopback port; stopped by its own pid."""

    def __init__(self, env: dict[str, str], app_dir: Path, log: Path, workers: int, threads: int):
        self.port = free_port()
        argv = [
            sys.executable, "-m", "gunicorn",
            "-c", str(app_dir / "portal" / "gunicorn_config.py"),
            "--bind", f"{HOST}:{self.port}",
            "portal.wsgi",
        ]  # fmt: skip
        env = {
            **env,
            "WEB_CONCURRENCY": str(workers),
            "GUNICORN_THREADS": str(threads),
            "ALLOWED_HOSTS": f"{HOST},localhost",
            "DEBUG": "0",
        }
        self.log = log
        self._handle = log.open("ab")
        self.popen = subprocess.Popen(
            argv, cwd=app_dir, env=env, stdout=self._handle, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        limit = time.monotonic() + timeout
        while time.monotonic() < limit:
            if self.popen.poll() is not None:
                raise BenchFailed(f"gunicorn exited:\n{self.log.read_text()[-2000:]}")
            try:
                connection = http.client.HTTPConnection(HOST, self.port, timeout=5)
                connection.request("GET", "/healthz", headers={"Host": "localhost"})
                connection.getresponse().read()
                connection.close()
                return
            except OSError:
                time.sleep(0.2)
        raise BenchFailed(f"gunicorn not answering after {timeout:.0f} s")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by gunicorn and its workers."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in process_tree(self.popen.pid):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(stat[11]) + int(stat[12])) / ticks
        return total

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._handle.close()


# --- The load client ----------------------------------------------------------------------------


def load(
    port: int, url: str, headers: dict[str, str], *, concurrency: int, requests: int, seconds: float
) -> dict[str, Any]:
    """``concurrency`` threads GET ``url`` back to back: ``requests`` answers or ``seconds``."""
    lock = threading.Lock()
    times: list[float] = []
    statuses: dict[int, int] = {}
    sizes: list[int] = []
    issued = [0]
    deadline = time.monotonic() + seconds
    sent = {**headers, "Host": "localhost", "Connection": "keep-alive"}

    def take() -> bool:
        with lock:
            if issued[0] >= requests or time.monotonic() >= deadline:
                return False
            issued[0] += 1
            return True

    def worker() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=30)
        while take():
            started = time.perf_counter()
            try:
                connection.request("GET", url, headers=sent)
                response = connection.getresponse()
                body = response.read()
                status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(HOST, port, timeout=30)
                status, body = 0, b""
            elapsed = time.perf_counter() - started
            with lock:
                times.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1
                sizes.append(len(body))
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    spread = stats(times) or {"median": 0.0, "p95": 0.0, "max": 0.0}
    return {
        "requests": len(times),
        "wall_s": round(wall, 3),
        "rps": round(len(times) / wall, 1) if wall else 0.0,
        "p50_ms": round(spread["median"] * 1000, 1),
        "p95_ms": round(spread["p95"] * 1000, 1),
        "max_ms": round(spread["max"] * 1000, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "bytes": int(median(sizes)) if sizes else 0,
    }


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def measure(
    server: Server, rows: list[dict[str, Any]], headers: dict[str, dict[str, str]], args: Any
) -> None:
    """Every URL ``args.repeat`` times, interleaved; medians of the repetitions onto each row."""
    for row in rows:
        row["runs"] = []
        for _ in range(args.warmup):
            load(server.port, row["url"], headers[f"{row['as']} {row['kind']}"], concurrency=1,
                 requests=1, seconds=10)  # fmt: skip
    for repetition in range(args.repeat):
        say(f"  repetition {repetition + 1}/{args.repeat}, load {loadavg()}")
        for row in rows:
            cpu = server.cpu_seconds()
            run = load(
                server.port,
                row["url"],
                headers[f"{row['as']} {row['kind']}"],
                concurrency=args.concurrency,
                requests=args.requests,
                seconds=args.seconds,
            )
            # The server's own CPU per answer: what the page costs, whatever else runs.
            used = server.cpu_seconds() - cpu
            run["server_cpu_ms"] = round(used * 1000 / max(run["requests"], 1), 1)
            row["runs"].append(run)
    for row in rows:
        runs = row["runs"]
        for key in ("p50_ms", "p95_ms", "rps", "server_cpu_ms"):
            row[key] = round(median(r[key] for r in runs), 1)
        row["requests"] = sum(r["requests"] for r in runs)
        row["bytes"] = runs[-1]["bytes"]
        errors: dict[str, int] = {}
        for r in runs:
            for status, n in r["statuses"].items():
                if status != "200":
                    errors[status] = errors.get(status, 0) + n
        row["errors"] = errors


def print_summary(result: dict[str, Any]) -> None:
    c = result["config"]
    say()
    say(
        f"Load on {result['machine']['db']} ({result['machine']['nproc']} CPUs), gunicorn "
        f"{c['workers']} workers x {c['threads']} threads, {c['concurrency']} concurrent, "
        f"median of {c['repeat']} runs; load average {result['load_before']} -> "
        f"{result['load_after']}; other processes {result['machine']['cpu_during_timing']}."
    )
    say(
        f"{'URL':<24}{'as':<8}{'p50 ms':>8}{'p95 ms':>8}{'req/s':>8}{'CPU ms':>8}{'queries':>8}"
        f"{'KB':>7}  target"
    )
    for row in result["rows"]:
        ok = row["p95_ms"] <= TARGET_P95_MS and not row["errors"]
        queries = "-" if row.get("queries") is None else str(row["queries"])
        note = f" errors {row['errors']}" if row["errors"] else ""
        say(
            f"{row['name']:<24}{row['as']:<8}{row['p50_ms']:8.1f}{row['p95_ms']:8.1f}"
            f"{row['rps']:8.1f}{row['server_cpu_ms']:8.1f}{queries:>8}{row['bytes'] / 1024:7.1f}  "
            f"{'PASS' if ok else 'MISS'}{note}"
        )


# --- Main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--institutions", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=150, help="At most, per URL and run.")
    parser.add_argument("--seconds", type=float, default=2.0, help="At most, per URL and run.")
    parser.add_argument("--repeat", type=int, default=3, help="Runs per URL; medians reported.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed requests per URL first.")
    parser.add_argument("--workers", type=int, default=None, help="Default: the config's.")
    parser.add_argument("--threads", type=int, default=None, help="Default: the config's.")
    parser.add_argument(
        "--database", help="An already seeded PostgreSQL database on DATABASE_URL's server."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the temporary state.")
    args = parser.parse_args()

    stamp = datetime.datetime.now(datetime.UTC)
    db = database_kind()
    if db != "postgresql":
        say("The load bench runs on PostgreSQL (DATABASE_URL), as production does: skipped.")
        return 0
    started = time.monotonic()
    cores = len(os.sched_getaffinity(0))
    workers = args.workers or cores + 1
    threads = args.threads or 4
    result: dict[str, Any] = {
        "config": {
            "client": "threads with keep-alive HTTP connections on loopback",
            "server": "gunicorn -c portal/gunicorn_config.py portal.wsgi",
            "workers": workers,
            "threads": threads,
            "concurrency": args.concurrency,
            "requests_max": args.requests,
            "seconds_max": args.seconds,
            "repeat": args.repeat,
            "warmup": args.warmup,
            "target_p95_ms": TARGET_P95_MS,
        },
        "seed": {
            "institutions": args.institutions,
            "rounds": args.rounds,
            "events": args.events,
            "seed": args.seed,
            "database": args.database or "throwaway",
        },
        "machine": {
            "nproc": cores,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "db": db,
        },
        "started_at": stamp.isoformat(),
    }
    seeding = seed_args(
        institutions=args.institutions, rounds=args.rounds, events=args.events, seed=args.seed
    )
    try:
        with seeded_alliance(
            "portal-bench-load-",
            result["machine"],
            seeding,
            keep=args.keep,
            database=args.database,
        ) as seeded:
            if not args.database:
                result["seed_seconds"] = seeded.seed_seconds
            s = subjects()
            result["largest_run"] = (
                f"{s['problem'].slug} run {s['run'].number} ({s['rounds']} rounds)"
            )
            rows = [row for row in targets(s) if row["url"]]
            headers = credentials(s)
            query_counts(s, rows)
            from django.db import connections

            connections.close_all()
            server = Server(seeded.env, ROOT, seeded.tmp / "gunicorn.log", workers, threads)
            try:
                server.wait_ready()
                say(
                    f"gunicorn {workers}x{threads} on port {server.port}; {len(rows)} URLs x "
                    f"{args.repeat} runs of <= {args.requests} requests / {args.seconds:.0f} s, "
                    f"{args.concurrency} concurrent ..."
                )
                result["load_before"] = loadavg()
                before = cpu_counters()
                measure(server, rows, headers, args)
                result["machine"]["cpu_during_timing"] = cpu_share(before, cpu_counters())
                result["load_after"] = loadavg()
            finally:
                server.stop()
        result["rows"] = rows
        result["bench_seconds"] = round(time.monotonic() - started, 1)
        path = save_results(result, f"load-{db}-{stamp.strftime('%Y%m%dT%H%M%SZ')}.json")
        print_summary(result)
        say(f"Figures in {path.relative_to(ROOT)}; bench time {result['bench_seconds']:.0f} s.")
        return 0
    except BenchFailed as exc:
        say(f"\nThe bench failed: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
