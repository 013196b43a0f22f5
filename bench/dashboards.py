"""`make bench`: the dashboards and the audit explorer timed on a large seeded alliance.

Everything runs in a throwaway state directory. With DATABASE_URL (PostgreSQL) the bench creates
a database ``bench_<pid>`` on that server and drops it at the end; without it, it runs on its own
SQLite file in the temporary directory (the 100 ms target is set for PostgreSQL).

Steps: migrate, ``seed_bench`` (100 institutions, 10,000 rounds, 100,000 audit events by
default), then each page is requested in this process through Django's test client (the whole
middleware stack, sessions and templates; no HTTP server or network in between), logged in as
the admin of the busiest institution, as staff or anonymously: a few warm-up requests (the
first is reported as "cold"), then ``--requests`` timed ones, and one more under a query
counter. A page whose URL name does not exist (yet) is reported as missing.

The figures go to ``bench/results/dashboards-<db>-<UTC timestamp>.json`` and a summary is
printed. The exit status is 0 whether or not a target is met, and non-zero only when the bench
itself failed (migrate or seed failed, the database could not be created).
"""

import argparse
import datetime
import os
import platform
import re
import sys
import time
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Sibling scripts, not a package: found through the path above.
from federation import BenchFailed, cpu_counters, cpu_share, save_results, say, stats
from seeded import database_kind, seed_args, seeded_alliance

TARGET_P95 = 0.100
# "The last page is as fast as the first": its median within this factor (plus a millisecond
# allowance for noise) of the first page's.
LAST_PAGE_FACTOR = 1.5
LAST_PAGE_ALLOWANCE = 0.005
SLOW_PAGE = 1.0  # seconds: a page this slow gets fewer timed requests, to keep the bench short


# --- Finding the pages --------------------------------------------------------------------------


def subjects() -> dict[str, Any]:
    """Who and what the pages are requested for: the busiest institution and its largest run."""
    from django.contrib.auth import get_user_model
    from django.db.models import Count

    from alliance.models import AuditEvent, Membership
    from projects.models import TrainingRun

    run = (
        TrainingRun.objects.annotate(n=Count("round_set"))
        .select_related("problem", "problem__proposer")
        .order_by("-n")
        .first()
    )
    if run is None:
        raise BenchFailed("seed_bench made no training run.")
    busy = run.problem.proposer
    member = Membership.objects.select_related("user").get(institution=busy, role="admin").user
    staff = get_user_model().objects.filter(is_staff=True, is_superuser=True).first()
    return {
        "run": run,
        "rounds": run.n,
        "problem": run.problem,
        "institution": busy,
        "member": member,
        "staff": staff,
        "last_seq": AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first(),
    }


def url_for(name: str, args: list[Any] | None = None) -> str | None:
    from django.urls import NoReverseMatch, reverse

    try:
        return reverse(name, args=args or [])
    except NoReverseMatch:
        return None


FIELD = re.compile(r"<(select|input)\b([^>]*)>", re.I)
ATTR = re.compile(r'([\w-]+)\s*=\s*"([^"]*)"')
OPTION = re.compile(r"<option\b([^>]*)>(.*?)</option>", re.I | re.S)


def form_fields(html: str) -> dict[str, list[tuple[str, str]]]:
    """The page's form fields by name, with their (value, text) options for selects."""
    fields: dict[str, list[tuple[str, str]]] = {}
    for match in FIELD.finditer(html):
        attrs = dict(ATTR.findall(match.group(2)))
        name = attrs.get("name")
        if not name or name == "csrfmiddlewaretoken":
            continue
        options: list[tuple[str, str]] = []
        if match.group(1).lower() == "select":
            body = html[match.end() : html.find("</select>", match.end())]
            for attrs_text, text in OPTION.findall(body):
                value = dict(ATTR.findall(attrs_text)).get("value", "")
                options.append((unescape(value), unescape(re.sub(r"<[^>]+>", "", text)).strip()))
        fields[name] = options
    return fields


def filtered_query(html: str, institution: Any) -> dict[str, str]:
    """A filter on the busiest institution's closed rounds, in the explorer's own field names."""
    fields = form_fields(html)
    query: dict[str, str] = {}
    for name, options in fields.items():
        lowered = name.lower()
        if "action" in lowered:
            values = [v for v, _t in options]
            query[name] = "round.closed" if not values or "round.closed" in values else values[1]
        elif "institution" in lowered:
            wanted = {institution.slug, str(institution.pk), institution.name}
            match = [v for v, t in options if v in wanted or t == institution.name]
            query[name] = match[0] if match else institution.slug
    return query or {"action": "round.closed", "institution": institution.slug}


CURSOR = re.compile(r'href="([^"]*[?&](?:amp;)?(before|after|cursor|page)=([\w-]+)[^"]*)"')


def last_page_url(first_url: str, html: str, last_seq: int) -> tuple[str, str]:
    """The explorer's oldest page, and how it pages ("cursor" or "offset").

    A cursor link on the first page (``before=`` / ``after=`` a sequence number) gives the page
    size; the oldest page is then one cursor away. Page-number links mean OFFSET paging.
    """
    links = [(unescape(m.group(1)), m.group(2), m.group(3)) for m in CURSOR.finditer(html)]
    cursors = [
        (href, key, int(value))
        for href, key, value in links
        if key in ("before", "after", "cursor") and value.isdigit()
    ]
    if cursors:
        href, key, value = min(cursors, key=lambda c: c[2])
        size = max(1, last_seq - value + 1)
        query = dict(parse_qsl(urlsplit(href).query))
        query[key] = str(size + 1)
        return f"{first_url}?{urlencode(query)}", "cursor"
    if any(key == "page" for _h, key, _v in links):
        return f"{first_url}?page=last", "offset"
    return "", "none"


# --- Timing -------------------------------------------------------------------------------------


def client_for(user: Any) -> Any:
    from django.test import Client

    # A host the portal allows, so that no test-only setting is needed.
    client = Client(HTTP_HOST="localhost", raise_request_exception=False)
    if user is not None:
        client.force_login(user)
    return client


def time_page(
    client: Any, url: str, *, warmup: int, requests: int, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    headers = headers or {}

    failure: list[str] = []

    def get() -> tuple[float, int]:
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        elapsed = time.perf_counter() - started
        if getattr(response, "exc_info", None):
            failure.append(repr(response.exc_info[1])[:500])
        return elapsed, response.status_code

    cold, status = get()
    if status != 200:
        row = {"url": url, "status": status, "cold_ms": round(cold * 1000, 1)}
        return {**row, "error": failure[0]} if failure else row
    if cold > SLOW_PAGE:
        warmup, requests = 1, min(requests, 10)
    for _ in range(warmup - 1):
        get()
    times = [get()[0] for _ in range(requests)]
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, headers=headers)
    queries = [
        {"ms": round(float(q["time"]) * 1000, 2), "sql": q["sql"][:600]}
        for q in captured.captured_queries
    ]
    slowest = sorted(queries, key=lambda q: -q["ms"])[:5]
    spread = stats(times)
    return {
        "url": url,
        "status": status,
        "bytes": len(response.content),
        "requests": len(times),
        "cold_ms": round(cold * 1000, 1),
        "median_ms": round(spread["median"] * 1000, 1),
        "p95_ms": round(spread["p95"] * 1000, 1),
        "max_ms": round(spread["max"] * 1000, 1),
        "queries": len(queries),
        "query_ms": round(sum(q["ms"] for q in queries), 1),
        "slowest_queries": slowest,
    }


def pages(s: dict[str, Any], member: Any, staff: Any, anonymous: Any) -> list[dict[str, Any]]:
    """Each page: a label, who asks, its URL (None if the name is missing), request headers."""
    problem, run = s["problem"], s["run"]
    return [
        {"page": "home", "as": "anonymous", "client": anonymous, "url": url_for("home")},
        {"page": "home", "as": "member", "client": member, "url": url_for("home")},
        {"page": "dashboard", "as": "member", "client": member, "url": url_for("dashboard")},
        {
            "page": "my-institution",
            "as": "member",
            "client": member,
            "url": url_for("my-institution"),
        },
        {
            "page": "problem-detail",
            "as": "member",
            "client": member,
            "url": url_for("problem-detail", [problem.slug]),
        },
        {
            "page": "run",
            "as": "member",
            "client": member,
            "url": url_for("run", [problem.slug, run.number]),
        },
        {
            "page": "run-live",
            "as": "member",
            "client": member,
            "url": url_for("run-live", [problem.slug, run.number]),
            "headers": {"HX-Request": "true"},
        },
        {"page": "audit-list", "as": "member", "client": member, "url": url_for("audit-list")},
        {"page": "audit-list", "as": "staff", "client": staff, "url": url_for("audit-list")},
        {"page": "audit-list last page", "as": "staff", "client": staff, "url": None},
        {"page": "audit-list filtered", "as": "staff", "client": staff, "url": None},
        {
            "page": "staff-overview",
            "as": "staff",
            "client": staff,
            "url": url_for("staff-overview"),
        },
        {"page": "admin:index", "as": "staff", "client": staff, "url": url_for("admin:index")},
    ]


def measure(s: dict[str, Any], warmup: int, requests: int) -> list[dict[str, Any]]:
    import logging

    # A page that fails is reported in one line (and its error kept in the results), not with
    # a traceback per request.
    logging.getLogger("django.request").setLevel(logging.CRITICAL)
    member = client_for(s["member"])
    staff = client_for(s["staff"])
    anonymous = client_for(None)
    audit_url = url_for("audit-list")
    rows = []
    for spec in pages(s, member, staff, anonymous):
        label = f"{spec['page']} ({spec['as']})"
        url = spec["url"]
        extra: dict[str, Any] = {}
        if spec["page"] in ("audit-list last page", "audit-list filtered") and audit_url:
            first = staff.get(audit_url).content.decode(errors="replace")
            if spec["page"].endswith("last page"):
                url, paging = last_page_url(audit_url, first, s["last_seq"] or 0)
                extra["paging"] = paging
                url = url or None
            else:
                url = f"{audit_url}?{urlencode(filtered_query(first, s['institution']))}"
        if url is None:
            say(f"  {label:<34} missing")
            rows.append({"page": spec["page"], "as": spec["as"], "status": "missing"})
            continue
        result = time_page(
            spec["client"], url, warmup=warmup, requests=requests, headers=spec.get("headers")
        )
        row = {"page": spec["page"], "as": spec["as"], **extra, **result}
        if "p95_ms" in row:
            say(
                f"  {label:<34} median {row['median_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms"
                f"  {row['queries']:3d} queries"
            )
        else:
            say(f"  {label:<34} status {row['status']} {row.get('error', '')}")
        rows.append(row)
    return rows


# --- Targets and summary ------------------------------------------------------------------------


def evaluate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    targets = []
    for row in rows:
        name = f"{row['page']} ({row['as']}) p95 <= {TARGET_P95 * 1000:.0f} ms"
        if "p95_ms" in row:
            value = f"{row['p95_ms']:.1f} ms ({row['queries']} queries)"
            ok: bool | None = row["p95_ms"] <= TARGET_P95 * 1000
        else:
            value, ok = str(row["status"]), None if row["status"] == "missing" else False
        targets.append({"target": name, "value": value, "pass": ok})
    first = next((r for r in rows if r["page"] == "audit-list" and r["as"] == "staff"), None)
    last = next((r for r in rows if r["page"] == "audit-list last page"), None)
    if first and last and "median_ms" in first and "median_ms" in last:
        limit = first["median_ms"] * LAST_PAGE_FACTOR + LAST_PAGE_ALLOWANCE * 1000
        targets.append(
            {
                "target": "audit explorer: the last page as fast as the first (cursor paging)",
                "value": f"median {last['median_ms']:.1f} ms vs {first['median_ms']:.1f} ms, "
                f"{last.get('paging', '?')} paging",
                "pass": last["median_ms"] <= limit and last.get("paging") == "cursor",
            }
        )
    return targets


def verdict(ok: bool | None) -> str:
    return "missing" if ok is None else ("PASS" if ok else "MISS")


def print_summary(result: dict[str, Any], path: Path) -> None:
    seed = result["seed"]
    say()
    say(
        f"Dashboards on {result['machine']['db']} ({result['machine']['nproc']} CPUs): "
        f"{seed['institutions']} institutions, {seed['rounds']} rounds, {seed['events']} audit "
        f"events, seeded in {result['seed_seconds']:.0f} s; largest run {result['largest_run']}."
    )
    say(f"{'page':<34} {'median':>9} {'p95':>9} {'cold':>9} {'queries':>8}  target")
    for row, target in zip(result["pages"], result["targets"], strict=False):
        label = f"{row['page']} ({row['as']})"
        if "p95_ms" in row:
            say(
                f"{label:<34} {row['median_ms']:7.1f}ms {row['p95_ms']:7.1f}ms "
                f"{row['cold_ms']:7.1f}ms {row['queries']:8d}  {verdict(target['pass'])}"
            )
        else:
            say(f"{label:<34} {row['status']!s:>9}{'':>30}  {verdict(target['pass'])}")
    for target in result["targets"][len(result["pages"]) :]:
        say(f"{target['target']}: {target['value']}  {verdict(target['pass'])}")
    share = result["machine"].get("cpu_during_timing")
    if share:
        say(
            f"CPU during the timing: bench {share['bench']:.0%}, database and others "
            f"{share['other']:.0%} of {result['machine']['nproc']} CPUs."
        )
    say(f"Results: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


# --- Main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--institutions", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=30, help="Timed requests per page.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed requests per page first.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary state.")
    args = parser.parse_args()

    stamp = datetime.datetime.now(datetime.UTC)
    db = database_kind()
    if db not in ("postgresql", "sqlite"):
        say(f"The bench creates its throwaway database on PostgreSQL only, not on {db}.")
        return 2
    started = time.monotonic()
    result: dict[str, Any] = {
        "config": {
            "client": "django.test.Client in process (no HTTP server)",
            "warmup": args.warmup,
            "requests": args.requests,
            "target_p95_ms": TARGET_P95 * 1000,
        },
        "seed": {
            "institutions": args.institutions,
            "rounds": args.rounds,
            "events": args.events,
            "seed": args.seed,
        },
        "machine": {
            "nproc": len(os.sched_getaffinity(0)),
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
            "portal-bench-dash-", result["machine"], seeding, keep=args.keep
        ) as seeded:
            result["seed_seconds"] = seeded.seed_seconds
            result["seed_output"] = seeded.seed_output
            s = subjects()
            result["largest_run"] = (
                f"{s['problem'].slug} run {s['run'].number} ({s['rounds']} rounds)"
            )
            result["as"] = {
                "member": f"{s['member'].username} (admin of {s['institution'].slug})",
                "staff": s["staff"].username,
            }
            say(f"Timing pages ({args.warmup} warm-up + {args.requests} requests each) ...")
            before = cpu_counters()
            result["pages"] = measure(s, args.warmup, args.requests)
            result["machine"]["cpu_during_timing"] = cpu_share(before, cpu_counters())
        result["targets"] = evaluate(result["pages"])
        result["bench_seconds"] = round(time.monotonic() - started, 1)
        path = save_results(result, f"dashboards-{db}-{stamp.strftime('%Y%m%dT%H%M%SZ')}.json")
        print_summary(result, path)
        say(f"Bench time {result['bench_seconds']:.0f} s.")
        return 0
    except BenchFailed as exc:
        say(f"\nThe bench failed: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
