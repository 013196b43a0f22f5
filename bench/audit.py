"""`make bench`: audit verification, events per second, on a large seeded audit trail.

Everything runs in a throwaway state directory. With DATABASE_URL (PostgreSQL) the bench creates
a database ``bench_<pid>`` on that server and drops it at the end; without it, it runs on its own
SQLite file in the temporary directory (the 100,000 events a second target is set for PostgreSQL).

Steps: migrate, ``seed_bench`` with ``--events`` audit events (100,000 by default; few
institutions and rounds, as only the trail is timed), which also signs the first checkpoint.
Then each measure runs ``--repeat`` times in this process and its median is reported:

* ``verify_audit``: ``audit_verify()``, the whole hash chain and the Merkle tree recomputed from
  streamed rows and compared with the newest signed checkpoint (what the command and the badge
  after tampering do);
* ``verify_audit --checkpoint``: ``audit_verify_checkpoint()`` against the signed checkpoint,
  chain, tree and the consistency proof;
* ``chain only``: the hash chain alone over the streamed rows;
* ``tree from scratch``: the signer extending an empty tree over every event (what an upgrade
  over an existing trail does once), stored subtrees included, rolled back;
* ``ORM instances``: the chain checked through one model instance per event, as before (for
  comparison).

Besides wall-clock events a second, each measure reports events per second of this process's
own CPU time: on a machine shared with other work, wall time counts the time spent waiting for a
core, which the CPU figure does not (the database server's work is in its own process).

The figures go to ``bench/results/audit-<db>-<UTC timestamp>.json`` and a summary is printed.
The exit status is non-zero only when the bench itself failed.
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Sibling scripts, not a package: found through the path above.
from federation import BenchFailed, cpu_counters, cpu_share, save_results, say
from seeded import database_kind, seed_args, seeded_alliance

TARGET = 100_000  # events a second


class _Rollback(Exception):
    pass


def measures() -> dict[str, Callable[[], int]]:
    from django.db import transaction

    from alliance import tlog
    from alliance.models import AuditEvent, AuditLogHead, AuditTreeNode
    from alliance.services import audit_log
    from alliance.services.audit import audit_verify, verify_events, verify_stored

    note = audit_log.audit_checkpoint_latest().note

    def full() -> int:
        result = audit_verify()
        assert result.ok, result
        return result.count

    def against_checkpoint() -> int:
        result = audit_log.audit_verify_checkpoint(note)
        assert result.ok, result.problem
        return result.log_size

    def chain() -> int:
        result = verify_stored()
        assert result.ok, result
        return result.count

    def tree_from_scratch() -> int:
        counted = {}
        try:
            with transaction.atomic():
                AuditTreeNode.objects.all().delete()
                AuditLogHead.objects.all().delete()
                head = audit_log._head_for_update(skip_locked=False)
                audit_log._extend(head)
                counted["n"] = head.size
                raise _Rollback
        except _Rollback:
            pass
        return counted["n"]

    def orm() -> int:
        result = verify_events(AuditEvent.objects.order_by("seq").iterator(chunk_size=2000))
        assert result.ok, result
        return result.count

    def tree_only() -> int:
        tree = tlog.CompactTree()
        for _ in range(100_000):
            tree.append(b"\0" * 32)
        return 100_000

    return {
        "verify_audit (chain + Merkle tree vs signed checkpoint)": full,
        "verify_audit --checkpoint (chain + tree + consistency proof)": against_checkpoint,
        "chain only (streamed rows)": chain,
        "tree from scratch (signer, stored subtrees)": tree_from_scratch,
        "ORM instances (before)": orm,
        "Merkle appends alone (no database)": tree_only,
    }


def measure(repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, run in measures().items():
        times, cpu, count = [], [], 0
        for _ in range(repeat):
            started, started_cpu = time.perf_counter(), time.process_time()
            count = run()
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        median, median_cpu = statistics.median(times), statistics.median(cpu)
        out[name] = {
            "events": count,
            "seconds": [round(t, 3) for t in times],
            "median_s": round(median, 3),
            "events_per_s": round(count / median),
            "bench_process_cpu_s": round(median_cpu, 3),
            "events_per_cpu_s": round(count / median_cpu),
        }
        say(
            f"  {name:<62} {count / median:>10,.0f} events/s  (median {median:.2f} s; "
            f"{count / median_cpu:,.0f} per second of this process's CPU)"
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="Keep the temporary state.")
    args = parser.parse_args()

    stamp = datetime.datetime.now(datetime.UTC)
    db = database_kind()
    if db not in ("postgresql", "sqlite"):
        say(f"The bench creates its throwaway database on PostgreSQL only, not on {db}.")
        return 2
    started = time.monotonic()
    result: dict[str, Any] = {
        "config": {"events": args.events, "repeat": args.repeat, "target": TARGET},
        "machine": {
            "nproc": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "db": db,
            "loadavg_before": os.getloadavg(),
        },
        "started_at": stamp.isoformat(),
    }
    # Few institutions and rounds: only the trail is timed.
    seeding = seed_args(institutions=6, rounds=20, events=args.events)
    try:
        with seeded_alliance(
            "portal-bench-audit-", result["machine"], seeding, keep=args.keep
        ) as seeded:
            result["seed_output"] = seeded.seed_output
            say(f"Timing ({args.repeat} runs each, median):")
            before = cpu_counters()
            result["measures"] = measure(args.repeat)
            result["machine"]["cpu_during_timing"] = cpu_share(before, cpu_counters())
        main_figure = result["measures"]["verify_audit (chain + Merkle tree vs signed checkpoint)"]
        result["target_met"] = main_figure["events_per_s"] >= TARGET
        result["bench_seconds"] = round(time.monotonic() - started, 1)
        path = save_results(result, f"audit-{db}-{stamp.strftime('%Y%m%dT%H%M%SZ')}.json")
        verdict = "PASS" if result["target_met"] else "MISS"
        say(
            f"{verdict}: verify_audit {main_figure['events_per_s']:,} events/s "
            f"(target {TARGET:,}); results in {path}"
        )
        return 0
    except BenchFailed as exc:
        say(f"\nThe bench failed: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
