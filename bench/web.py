"""Web benchmark: the busiest pages at 100k candidates and 1M gallery faces, through a real WSGI server.

The script creates (or reuses) a PostgreSQL database, migrates it and seeds one organisation with
--faces reference faces (333k subjects with one reference photo each) and --candidates pending candidates
(1,000 cases x 4 probe photos x 5 faces, 5 candidates per search), all with INSERT ... SELECT over
generate_series in PostgreSQL: the rows are synthetic, their encodings a 1-byte dummy and their photos
and crops names of files that do not exist. No page measured here opens a file or an encoding.
Each candidate's bias-warning cache row is seeded too ("unknown", no audit run), which is the steady state
the queue reaches once `warnings_refresh` (500 rows per page view) has caught up.

It then starts gunicorn (2 workers, persistent database connections) on loopback and loads each URL with
wrk for --duration seconds, as a signed-in user (session cookie). The reviewer's second factor is off
in the server it starts (REQUIRE_TWO_FACTOR=false): the benchmark measures the pages, not the TOTP step,
and production keeps it on. The baseline, measured in the same run, is /healthz (one query through the
same middleware stack).

    .venv/bin/python bench/web.py
    .venv/bin/python bench/web.py --duration 5 --faces 100000 --candidates 10000 --database portal_bench_small
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_database import database_create  # bench/bench_database.py; the script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
ORG_SLUG = "bench-web"
CASES, PHOTOS_PER_CASE = 1000, 4

WRK_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.errors.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), summary.duration))
end
"""


def environment_set(args: argparse.Namespace) -> dict[str, str]:
    var = Path(args.var_dir)
    var.mkdir(parents=True, exist_ok=True)
    env = {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": f"{args.postgres}/{args.database}",
        "PORTAL_VAR_DIR": str(var),
        "MEDIA_ROOT": str(var / "media"),
        "ALLOWED_HOSTS": "localhost,127.0.0.1,testserver",
        # The benchmark measures the pages; production keeps the reviewer's TOTP step on.
        "REQUIRE_TWO_FACTOR": "false",
        # Persistent connections, as a production deployment would run.
        "DB_CONN_MAX_AGE": "60",
        "DEBUG": "false",
        # Throttle counters in Redis, as in production; wrk sends thousands of requests a minute from one
        # user, so the limit is raised: the counting is measured, the refusals are not.
        "CACHE_URL": args.redis,
        "API_THROTTLE_USER": "1000000/min",
    }
    os.environ.update(env)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return env


def _constant(field, value):
    from django.db import connection
    from django.db.models import JSONField
    from psycopg.types.json import Jsonb

    if isinstance(field, JSONField):
        return Jsonb(value)
    return field.get_db_prep_save(value, connection)


def insert_series(model, count: int, expressions: dict[str, str], constants: dict | None = None) -> int:
    """INSERT count rows of model in one statement; columns not named get the field's default (or '' / now).

    Returns the first id: ids are max(id) + g for g in 1..count.
    """
    from django.db import connection
    from django.db.models import CharField, DateTimeField, FileField, TextField
    from django.utils import timezone

    table = model._meta.db_table
    constants = constants or {}
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT COALESCE(MAX(id), 0) FROM "{table}"')
        base = cursor.fetchone()[0]
        columns, selects, params = [], [], []
        for field in model._meta.concrete_fields:
            columns.append(f'"{field.column}"')
            if field.attname == "id":
                selects.append(f"{base} + g")
            elif field.attname in expressions:
                # A literal % in SQL is %% beside the %s placeholders.
                selects.append(f"({expressions[field.attname].replace('%', '%%')})")
            else:
                if field.attname in constants:
                    value = constants[field.attname]
                elif field.has_default():
                    value = field.get_default()
                elif field.null:
                    value = None
                elif isinstance(field, DateTimeField):
                    value = timezone.now()
                elif isinstance(field, CharField | TextField | FileField):
                    value = ""
                else:
                    raise ValueError(f"{table}.{field.column} needs a value")
                selects.append(f"%s::{field.db_type(connection)}")
                params.append(_constant(field, value))
        cursor.execute(
            f'INSERT INTO "{table}" ({", ".join(columns)}) SELECT {", ".join(selects)} '
            f"FROM generate_series(1, {int(count)}) AS g",
            params,
        )
        cursor.execute(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), {base + count})")
    return base + 1


def seed(args: argparse.Namespace) -> dict:
    """The organisation, its members and the synthetic rows; reused when they are already there."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from matching.engine import ENGINE_NAME, engine_version
    from matching.models import Candidate, Case, Face, Gallery, Photo, Search, Subject
    from portal.models import Membership, Organisation
    from portal.services import organisation_create
    from reviews.models import CandidateWarning
    from reviews.services import training_record

    User = get_user_model()
    organisation = Organisation.objects.filter(slug=ORG_SLUG).first()
    if organisation is None:
        root = User.objects.filter(username="bench-root").first() or User.objects.create_superuser(
            "bench-root", "root@example.org", "bench-password-2026"
        )
        organisation = organisation_create(name="Web benchmark", slug=ORG_SLUG, acting_user=root)
    users = {}
    for username, role in [("bench-case", "caseworker"), ("bench-review", "reviewer"), ("bench-admin", "org_admin")]:
        user = User.objects.filter(username=username).first() or User.objects.create_user(username, password="x" * 20)
        Membership.objects.get_or_create(user=user, defaults={"organisation": organisation, "role": role})
        users[role] = user
    subjects = args.faces // 3
    if (
        Face.objects.filter(organisation=organisation, subject__isnull=False).count() == args.faces
        and Candidate.objects.filter(organisation=organisation).count() == args.candidates
    ):
        print(f"reusing {args.faces:,} faces and {args.candidates:,} candidates already in {args.database}")
    else:
        start = time.perf_counter()
        Case.objects.filter(organisation=organisation).delete()
        Gallery.objects.filter(organisation=organisation).delete()
        with transaction.atomic():
            gallery = Gallery.objects.create(organisation=organisation, name="Synthetic")
            org = {"organisation_id": organisation.pk}
            version = engine_version()
            s0 = insert_series(Subject, subjects, {"code": "'SYN-' || g"}, {"gallery_id": gallery.pk})
            p0 = insert_series(
                Photo,
                subjects,
                {"subject_id": f"{s0 - 1} + g"},
                {**org, "kind": "reference", "image": "synthetic.jpg", "width": 1, "height": 1, "status": "done"},
            )
            face_constants = {
                **org, "top": 0, "right": 1, "bottom": 1, "left": 0, "crop": "synthetic.jpg", "encoding": b"\0",
                "engine": ENGINE_NAME, "engine_version": version, "detector": "hog", "face_width": 1,
                "face_height": 1, "blur": 100.0,
            }  # fmt: skip
            f0 = insert_series(
                Face,
                args.faces,
                {
                    "photo_id": f"{p0} + (g - 1) % {subjects}",
                    "subject_id": f"{s0} + (g - 1) % {subjects}",
                    "index": f"(g - 1) / {subjects}",
                },
                face_constants,
            )
            c0 = insert_series(
                Case,
                CASES,
                {"reference": "'WEB-' || g", "created_at": "now() - make_interval(hours => g)"},
                {**org, "title": "Missing person", "purpose": "Benchmark", "created_by_id": users["caseworker"].pk},
            )
            probe_photos = CASES * PHOTOS_PER_CASE
            pp0 = insert_series(
                Photo,
                probe_photos,
                {"case_id": f"{c0} + (g - 1) % {CASES}"},
                {**org, "kind": "probe", "image": "synthetic.jpg", "width": 1, "height": 1, "status": "done"},
            )
            searches = args.candidates // 5
            pf0 = insert_series(
                Face,
                searches,
                {"photo_id": f"{pp0} + (g - 1) % {probe_photos}", "index": f"(g - 1) / {probe_photos}"},
                face_constants,
            )
            se0 = insert_series(
                Search,
                searches,
                {"face_id": f"{pf0 - 1} + g"},
                {**org, "threshold": 0.6, "max_candidates": 5, "engine_version": version, "gallery_version": 1,
                 "gallery_faces": args.faces, "candidate_count": 5},
            )  # fmt: skip
            ca0 = insert_series(
                Candidate,
                args.candidates,
                {
                    "search_id": f"{se0} + (g - 1) / 5",
                    # the case of the search's face's photo (see the Photo and Face expressions above)
                    "case_id": f"{c0} + (((g - 1) / 5) % {probe_photos}) % {CASES}",
                    "subject_id": f"{s0} + (g * 7919) % {subjects}",
                    "reference_face_id": f"{f0} + (g * 7919) % {subjects}",
                    "rank": "(g - 1) % 5 + 1",
                    "distance": "0.3 + (g % 100) / 400.0",
                    "created_at": f"now() - make_interval(secs => {args.candidates} - g)",
                },
                org,
            )
            insert_series(
                CandidateWarning, args.candidates, {"candidate_id": f"{ca0 - 1} + g"}, {"severity": "unknown"}
            )
            # Some confirmed matches on the case page that is measured.
            Candidate.objects.filter(case_id=c0, rank=1).update(
                outcome="confirmed",
                outcome_by=users["reviewer"],
                outcome_at=datetime.datetime.now(datetime.UTC),
                outcome_reason="Benchmark",
            )
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        print(
            f"seeded {args.faces:,} gallery faces, {args.candidates:,} candidates in "
            f"{time.perf_counter() - start:.0f} s"
        )
    training_record(
        organisation=organisation,
        reviewer=users["reviewer"],
        trained_on=datetime.date.today() - datetime.timedelta(days=10),
        course="Benchmark",
        acting_user=users["org_admin"],
    )
    first_case = Case.objects.filter(organisation=organisation).order_by("id").first()
    return {"users": users, "case_id": first_case.pk}


def session_cookie(user) -> str:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def wrk(url: str, cookie: str, duration: int, connections: int, script: str) -> dict[str, float]:
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", script, "-H", f"Cookie: {cookie}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", output)
    if not match:
        raise SystemExit(f"wrk printed no result:\n{output}")
    requests, bad, p50, p95, p99, micros = (int(x) for x in match.groups())
    return {"requests": requests, "non2xx": bad, "p50": p50 / 1e3, "p95": p95 / 1e3, "p99": p99 / 1e3,
            "rps": requests / (micros / 1e6)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=1_000_000, help="synthetic reference faces")
    parser.add_argument("--candidates", type=int, default=100_000, help="pending candidates (a multiple of 5)")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432", help="server URL, no database")
    parser.add_argument("--database", default="portal_bench_web", help="created if missing, then migrated")
    parser.add_argument("--fresh", action="store_true", help="drop and recreate the database first")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="the cache (API throttle counters)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--duration", type=int, default=20, help="seconds of load per URL")
    parser.add_argument("--connections", type=int, default=2, help="wrk connections (2 = one per gunicorn worker)")
    parser.add_argument("--var-dir", default="/tmp/perfvar/bench-web")
    args = parser.parse_args()

    env = environment_set(args)
    database_create(args)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    seeded = seed(args)
    users = seeded["users"]
    base = f"http://127.0.0.1:{args.port}"
    cookies = {role: session_cookie(user) for role, user in users.items()}
    urls = [
        ("baseline: /healthz", "/healthz", "caseworker"),
        ("review queue (reviewer)", "/admin/reviews/reviewitem/", "reviewer"),
        ("review queue, all open", "/admin/reviews/reviewitem/?items=open", "reviewer"),
        ("case page (caseworker)", f"/cases/{seeded['case_id']}/", "caseworker"),
        ("case list (caseworker)", "/cases/", "caseworker"),
        ("API /api/cases/", "/api/cases/", "caseworker"),
        ("API /api/matches/", "/api/matches/", "caseworker"),
        ("API /api/cases/<id>/", f"/api/cases/{seeded['case_id']}/", "caseworker"),
    ]
    log = Path(args.var_dir) / "gunicorn.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "portal.wsgi:application", "--workers", "2", "--bind",
         f"127.0.0.1:{args.port}", "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, **env}, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"gunicorn did not start; see {log}") from None
                time.sleep(0.3)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
            handle.write(WRK_SCRIPT)
        results = []
        for label, path, role in urls:
            request = urllib.request.Request(f"{base}{path}", headers={"Cookie": cookies[role]})
            for _ in range(3):  # warm both workers' connections and caches
                with urllib.request.urlopen(request, timeout=60) as response:
                    if response.status != 200:
                        raise SystemExit(f"{path}: {response.status}")
            results.append((label, path, wrk(f"{base}{path}", cookies[role], args.duration, args.connections,
                                             handle.name)))  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    print(
        f"\nweb benchmark: gunicorn 2 workers on 127.0.0.1, wrk 1 thread {args.connections} connections "
        f"{args.duration} s per URL; {args.faces:,} gallery faces, {args.candidates:,} candidates; cores "
        f"{os.cpu_count()}; load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    baseline = results[0][2]
    print(f"{'URL':<34}{'requests':>9}{'non-2xx':>8}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}"
          f"{'p95/base':>9}  p95 < 150 ms")  # fmt: skip
    for label, _, r in results:
        print(
            f"{label:<34}{r['requests']:>9}{r['non2xx']:>8}{r['rps']:>8.1f}{r['p50']:>8.1f}{r['p95']:>8.1f}"
            f"{r['p99']:>8.1f}{r['p95'] / baseline['p95']:>8.1f}x  {'yes' if r['p95'] < 150 else 'NO'}"
        )


if __name__ == "__main__":
    main()
