"""Web benchmark: the busiest pages at 100k candidates and 1M gallery faces, through a real WSGI server.

The script creates (or reuses) a PostgreSQL database, migrates it and seeds one organisation with
--faces reference faces (333k subjects with one reference photo each) and --candidates pending candidates
(1,000 cases x 4 probe photos x 5 faces, 5 candidates per search), all with INSERT ... SELECT over
generate_series in PostgreSQL: the rows are synthetic, their encodings a 1-byte dummy, and their photos,
crops, aligned faces and thumbnails name three real JPEGs (a 300 px crop of about 30 KB, the 480x576 aligned
face, the 96 px thumbnail). No page measured here opens an encoding.
Each candidate's bias-warning cache row is seeded too ("unknown", no audit run), which is the steady state
the queue reads once the `reviews.tasks.refresh_warnings` sweep has caught up.

It then starts gunicorn (2 workers, persistent database connections) on loopback and loads each URL with
wrk for --duration seconds, as a signed-in user (session cookie). The reviewer's second factor is off
in the server it starts (REQUIRE_TWO_FACTOR=false): the benchmark measures the pages, not the TOTP step,
and production keeps it on. The baseline, measured in the same run, is /healthz (one query through the
same middleware stack).

    .venv/bin/python bench/web.py
    .venv/bin/python bench/web.py --duration 5 --faces 100000 --candidates 10000 --database portal_bench_small

The reviewers scenario (--scenario reviewers, or all) has --reviewers reviewers (8) across --organisations
organisations (2) work at once: each loads the review queue, then a candidate's page, and every image on each
page (a browser's --image-connections parallel requests, 6), waits about --think seconds (0.5 to 1.5 times it,
at random), and starts again, for --duration seconds (after an untimed warm-up of two rounds; each reviewer
starts at their own point of the first think time), while a probe requests /healthz every 20 ms. It reports
the page alone, the page with its images, each image, and the queue per organisation, each with its ratio to
/healthz during the same load, and the pages and images as gunicorn timed them (its access log), apart from the
client's own waits.
The images are real file responses (the queue's are embedded in the page) and each one records its view in
the activity log, as in production; views are sealed every --seal-seconds meanwhile, as the beat would
(views logged before the run, by the warm-up or an earlier run, are sealed first). --writer-hold-ms adds a long
writer in the last organisation, which holds an activity-log write's transaction open (as a bulk enrolment
does): no other organisation's request may wait for it. A
reduced size for a busy machine:

    .venv/bin/python bench/web.py --scenario reviewers --faces 30000 --candidates 10000 --duration 40 --workers 4
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
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


# The sealing loop, run in its own process by the reviewers scenario: prints "views ms" per run.
SEALER = """
import sys, time
import django
django.setup()
from portal.audit import audit_views_seal
seconds, deadline = float(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    time.sleep(min(seconds, max(0.0, deadline - time.monotonic())))
    start = time.perf_counter()
    sealed = audit_views_seal()
    print(sealed, (time.perf_counter() - start) * 1e3, flush=True)
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


def seed(
    args: argparse.Namespace, *, slug: str = ORG_SLUG, name: str = "Web benchmark", suffix: str = "", reviewers: int = 1
) -> dict:
    """One organisation, its members and the synthetic rows; reused when they are already there.

    The first organisation's members are bench-case, bench-review and bench-admin; another organisation's carry
    `suffix`, and reviewers after the first are numbered (bench-review-2, ...).
    """
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from matching.engine import ENGINE_NAME, engine_version
    from matching.models import Candidate, Case, Face, Gallery, Photo, Search, Subject
    from portal.models import Membership, Organisation
    from portal.services import organisation_create
    from reviews.models import CandidateWarning
    from reviews.services import training_record

    User = get_user_model()
    organisation = Organisation.objects.filter(slug=slug).first()
    if organisation is None:
        root = User.objects.filter(username="bench-root").first() or User.objects.create_superuser(
            "bench-root", "root@example.org", "bench-password-2026"
        )
        organisation = organisation_create(name=name, slug=slug, acting_user=root)
    users = {}
    members = [(f"bench-case{suffix}", "caseworker"), (f"bench-review{suffix}", "reviewer")]
    members += [(f"bench-review{suffix}-{n}", f"reviewer-{n}") for n in range(2, reviewers + 1)]
    members += [(f"bench-admin{suffix}", "org_admin")]
    for username, key in members:
        user = User.objects.filter(username=username).first() or User.objects.create_user(username, password="x" * 20)
        role = key.split("-")[0]
        Membership.objects.get_or_create(user=user, defaults={"organisation": organisation, "role": role})
        users[key] = user
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
                "aligned": "synthetic-aligned.jpg", "thumbnail": "synthetic-thumbnail.jpg",
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
    for key, user in users.items():
        if key.startswith("reviewer"):
            training_record(
                organisation=organisation,
                reviewer=user,
                trained_on=datetime.date.today() - datetime.timedelta(days=10),
                course="Benchmark",
                acting_user=users["org_admin"],
            )
    first_case = Case.objects.filter(organisation=organisation).order_by("id").first()
    first_candidate = Candidate.objects.filter(organisation=organisation, outcome="pending").order_by("id").first()
    return {
        "users": users,
        "case_id": first_case.pk,
        "candidate_id": first_candidate.pk,
        "organisation_id": organisation.pk,
    }


def thumbnail_write(media_root: Path) -> None:
    """The one JPEG every synthetic photo and crop names, so that images are real file responses: 300 px
    and about 30 KB, the size of a real face crop from a phone photo (crops from the test photos are 10-40 KB);
    and the aligned image and thumbnail every synthetic face names."""
    from PIL import Image

    from matching.alignment import HEIGHT, WIDTH
    from matching.imaging import thumbnail_jpeg

    path = media_root / "synthetic.jpg"
    if not path.exists():
        media_root.mkdir(parents=True, exist_ok=True)
        skin = Image.new("RGB", (300, 300), (176, 132, 110))
        grain = Image.merge("RGB", [Image.effect_noise((300, 300), 24)] * 3)
        crop = Image.blend(skin, grain, 0.35)
        crop.save(path, "JPEG", quality=90)
        # What the worker stores beside each crop: the aligned face and the queue's thumbnail.
        crop.resize((WIDTH, HEIGHT)).save(media_root / "synthetic-aligned.jpg", "JPEG", quality=90)
        (media_root / "synthetic-thumbnail.jpg").write_bytes(thumbnail_jpeg(crop))


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


IMG_SRC = re.compile(r'<img[^>]*\ssrc="(/media/[^"]+)"')  # static files are cached by a browser


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Browser:
    """One reviewer's browser: a keep-alive connection for pages and a few for images, as a browser opens."""

    def __init__(self, port: int, cookie: str, image_connections: int) -> None:
        import http.client
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.port, self.cookie = port, cookie
        self.local = threading.local()
        self.page = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.pool = ThreadPoolExecutor(max_workers=image_connections)

    def _get(self, connection, path: str) -> tuple[float, int, bytes]:
        start = time.perf_counter()
        connection.request("GET", path, headers={"Cookie": self.cookie})
        response = connection.getresponse()
        body = response.read()
        return (time.perf_counter() - start) * 1e3, response.status, body

    def _image(self, path: str) -> tuple[float, int]:
        import http.client

        if not hasattr(self.local, "connection"):
            self.local.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        elapsed, status, _ = self._get(self.local.connection, path)
        return elapsed, status

    def load(self, path: str) -> tuple[float, list[tuple[float, int]], float, int]:
        """The page, then every <img> on it in parallel: page ms, each image (ms, status), total ms, status."""
        start = time.perf_counter()
        page_ms, status, body = self._get(self.page, path)
        sources = IMG_SRC.findall(body.decode("utf-8", "replace"))
        images = list(self.pool.map(self._image, sources))
        return page_ms, images, (time.perf_counter() - start) * 1e3, status


def warm_up(args: argparse.Namespace, base_port: int, reviewers: list[dict]) -> None:
    """Every reviewer loads both pages twice, untimed and all at once, so that every gunicorn worker has
    compiled its templates and opened its connections before the clock starts (the first queue page a worker
    serves takes several times as long as the next). The server's own log restarts after it."""
    from concurrent.futures import ThreadPoolExecutor

    def load(person: dict) -> None:
        browser = Browser(base_port, person["cookie"], args.image_connections)
        for _ in range(2):
            for path in ("/admin/reviews/reviewitem/", person["candidate_path"]):
                browser.load(path)
        browser.pool.shutdown()

    with ThreadPoolExecutor(max_workers=len(reviewers)) as pool:
        list(pool.map(load, reviewers))
    access_log = Path(args.var_dir) / "access.log"
    if access_log.exists():
        access_log.write_text("")


def reviewers_run(args: argparse.Namespace, base_port: int, reviewers: list[dict]) -> dict:
    """Each reviewer loads the queue and a candidate page, with their images, over and over for args.duration
    seconds, all at once; a probe requests /healthz every 20 ms meanwhile."""
    import http.client
    import threading

    samples: dict[str, list[float]] = {}
    lock = threading.Lock()
    errors: list[str] = []
    warm_up(args, base_port, reviewers)
    # Views are sealed where the code measured has the sealing (older commits, compared side by side, do not).
    sealing = hasattr(__import__("portal.audit").audit, "audit_views_seal")
    if sealing:
        # The beat's steady state: views logged before this run (earlier runs, the warm-up) are sealed first, or
        # the first sealing of the run would take a backlog's lock time with it.
        from portal.audit import audit_views_seal

        audit_views_seal()
    deadline = time.monotonic() + args.duration

    def add(key: str, value: float) -> None:
        with lock:
            samples.setdefault(key, []).append(value)

    def reviewer(person: dict, index: int) -> None:
        browser = Browser(base_port, person["cookie"], args.image_connections)
        pages = [("queue", "/admin/reviews/reviewitem/"), ("candidate", person["candidate_path"])]
        # People do not start in step: each reviewer begins at their own point of one think time, so that the
        # first rounds are not eight queue pages arriving in the same millisecond.
        time.sleep(args.think * index / len(reviewers))
        # Nor do they look at each page for the same time: a fixed think time locks the reviewers' cycles in step
        # with each other, so that which pages coincide (and so the tail) changed with any page's speed. Drawn
        # between half and one and a half think times, from a seed of the reviewer's own.
        thinking = random.Random(index)
        while time.monotonic() < deadline:
            for kind, path in pages:
                page_ms, images, total_ms, status = browser.load(path)
                bad = [s for _, s in images if s != 200]
                if status != 200 or bad:
                    errors.append(f"{person['username']} {path}: {status}, images {bad[:3]}")
                    return
                add(f"{kind} page", page_ms)
                add(f"{kind} with images", total_ms)
                add(f"{kind} with images, {person['organisation']}", total_ms)
                for image_ms, _ in images:
                    add("image", image_ms)
                add(f"{kind} images per page", len(images))
                time.sleep(args.think * thinking.uniform(0.5, 1.5))

    def probe() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", base_port, timeout=60)
        while time.monotonic() < deadline:
            start = time.perf_counter()
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            add("/healthz (during the load)", (time.perf_counter() - start) * 1e3)
            time.sleep(0.02)

    def sealer() -> None:
        # As the beat does, more often, and in a process of its own as the beat's worker is: in this one its
        # Python work would stall the reviewers' client threads and show up in their figures. The sealing's
        # own cost on the server (each chain's lock, briefly) is in the figures.
        process = subprocess.Popen(
            [sys.executable, "-c", SEALER, str(args.seal_seconds), str(max(0.0, deadline - time.monotonic()))],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        for line in process.stdout:
            sealed, ms = line.split()
            add("seal (views per run)", int(sealed))
            add("seal ms", float(ms))
        process.wait()

    def long_writer(organisation_id: int) -> None:
        # A long service transaction in the last organisation (a bulk enrolment, say): it writes its activity-log
        # row first and holds the transaction open for --writer-hold-ms, half of the time.
        from django.db import connection, transaction

        from portal.audit import audit_record

        hold = args.writer_hold_ms / 1e3
        while time.monotonic() < deadline:
            with transaction.atomic():
                audit_record(action="bench.long_write", organisation_id=organisation_id)
                time.sleep(hold)
            add("long writes", 1)
            time.sleep(hold)
        connection.close()

    threads = [threading.Thread(target=reviewer, args=(person, index)) for index, person in enumerate(reviewers)]
    threads.append(threading.Thread(target=probe))
    if args.writer_hold_ms:
        threads.append(threading.Thread(target=long_writer, args=(reviewers[-1]["organisation_id"],)))
    if sealing:
        threads.append(threading.Thread(target=sealer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit("reviewer load failed: " + "; ".join(errors[:5]))
    return samples


def server_times(access_log: Path) -> dict[str, list[float]]:
    """The reviewers' pages as gunicorn timed them, from arrival to the last byte written: the client's figures
    add its own waits (its threads share the cores and the GIL with each other and with the server)."""
    kinds = {
        "queue page, inside the server": re.compile(r"^/admin/reviews/reviewitem/$"),
        "candidate page, inside the server": re.compile(r"^/admin/reviews/reviewitem/\d+/change/$"),
        "image, inside the server": re.compile(r"^/media/"),
    }
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for line in access_log.read_text().splitlines() if access_log.exists() else []:
        path, _, ms = line.rpartition(" ")
        for kind, pattern in kinds.items():
            if pattern.match(path):
                times[kind].append(float(ms))
    return {kind: values for kind, values in times.items() if values}


def reviewers_report(args: argparse.Namespace, samples: dict[str, list[float]], reviewers: list[dict]) -> None:
    organisations = sorted({person["organisation"] for person in reviewers})
    print(
        f"\nreviewers: {len(reviewers)} at once across {len(organisations)} organisations, each loading the queue "
        f"and a candidate page with their images ({args.image_connections} image connections each), "
        f"{args.think} s think time (0.5-1.5x), {args.duration} s; "
        f"gunicorn {args.workers} workers x {args.threads} threads; "
        f"{args.faces:,} gallery faces and {args.candidates:,} candidates per organisation; "
        f"cores {os.cpu_count()}; load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    baseline = samples["/healthz (during the load)"]
    base95 = percentile(baseline, 0.95)
    print(f"{'measure':<42}{'count':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'p95/healthz':>12}  p95 < 150 ms")
    keys = ["/healthz (during the load)", "queue page", "queue with images", "candidate page",
            "candidate with images", "image"]  # fmt: skip
    keys += [f"queue with images, {organisation}" for organisation in organisations]
    keys += [key for key in ("queue page, inside the server", "candidate page, inside the server",
                             "image, inside the server") if key in samples]  # fmt: skip
    for key in keys:
        values = samples.get(key, [])
        p95 = percentile(values, 0.95)
        print(
            f"{key:<42}{len(values):>7}{percentile(values, 0.5):>9.1f}{p95:>9.1f}{percentile(values, 0.99):>9.1f}"
            f"{p95 / base95:>11.1f}x  {'yes' if p95 < 150 else 'NO'}"
        )
    per_page = samples.get("queue images per page", [0])
    print(f"images per queue page: {per_page[0]:.0f}")
    if samples.get("long writes"):
        print(
            f"meanwhile {len(samples['long writes'])} long writes in {organisations[-1]}, each holding its "
            f"transaction open {args.writer_hold_ms:.0f} ms"
        )
    if samples.get("seal ms"):
        print(
            f"views sealed every {args.seal_seconds:.0f} s meanwhile: {sum(samples['seal (views per run)']):.0f} "
            f"views, {len(samples['seal ms'])} runs, longest {max(samples['seal ms']):.0f} ms"
        )


def pages_profile(args: argparse.Namespace, reviewer: dict) -> None:
    """The queue and candidate pages in this process, timed one by one, then profiled: where the server's time goes,
    without the network, the WSGI server or other requests. pyinstrument's tree when it is installed
    (bench/requirements.txt), else cProfile's top functions; and each page's queries with their time."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username=reviewer["username"]))
    print(f"in-process profile: {args.profile} loads of each page as {reviewer['username']}")
    for kind, path in [("queue", "/admin/reviews/reviewitem/"), ("candidate", reviewer["candidate_path"])]:
        _page_profile(client, kind, path, args.profile)


def _page_profile(client, kind: str, path: str, loads: int) -> None:
    import cProfile
    import statistics

    from django.db import connection

    for _ in range(3):  # connections, caches, templates
        assert client.get(path).status_code == 200
    queries: dict[str, list[float]] = {}

    def timed(execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            key = re.sub(r"\s+", " ", sql.split(" WHERE ")[0])[:100]
            queries.setdefault(key, []).append((time.perf_counter() - start) * 1e3)

    with connection.execute_wrapper(timed):
        client.get(path)
    times = []
    for _ in range(loads):
        start = time.perf_counter()
        client.get(path)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    print(
        f"\n{kind} page {path}: {sum(len(v) for v in queries.values())} queries, "
        f"{sum(sum(v) for v in queries.values()):.1f} ms in the database (one load); "
        f"p50 {statistics.median(times):.1f} ms, p95 {times[int(0.95 * (len(times) - 1))]:.1f} ms "
        f"over {len(times)} loads"
    )
    for key, values in sorted(queries.items(), key=lambda item: -sum(item[1])):
        print(f"  {len(values):>3} x {sum(values):>6.1f} ms  {key}")
    try:
        from pyinstrument import Profiler
    except ImportError:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(loads):
            client.get(path)
        profile.disable()
        _cprofile_print(profile)
        return
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(loads):
        client.get(path)
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False)[:15000])


def _cprofile_print(profile) -> None:
    import io
    import pstats

    out = io.StringIO()
    pstats.Stats(profile, stream=out).strip_dirs().sort_stats("cumulative").print_stats(40)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))


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
    parser.add_argument(
        "--scenario",
        choices=["urls", "reviewers", "all"],
        default="all",
        help="urls: each URL alone under wrk; reviewers: concurrent reviewers loading pages with their images",
    )
    parser.add_argument("--reviewers", type=int, default=8, help="concurrent reviewers, split across organisations")
    parser.add_argument("--organisations", type=int, default=2, help="organisations the reviewers belong to")
    parser.add_argument("--image-connections", type=int, default=6, help="parallel image requests per reviewer")
    parser.add_argument("--think", type=float, default=1.0, help="seconds a reviewer looks at a page before the next")
    parser.add_argument(
        "--writer-hold-ms",
        type=float,
        default=0,
        help="a writer in the last organisation holds an activity-log write's transaction open this long, half of "
        "the time (0: none)",
    )
    parser.add_argument("--seal-seconds", type=float, default=10, help="how often views are sealed during the load")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker (above 1: gthread)")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        help="instead of the load: load the reviewer's queue and candidate pages this many times each in this "
        "process (Django's test client, DEBUG off) under cProfile, and print where the time goes",
    )
    args = parser.parse_args()

    env = environment_set(args)
    database_create(args)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.conf import settings

    thumbnail_write(Path(settings.MEDIA_ROOT))
    per_organisation = -(-args.reviewers // args.organisations)
    seeded = seed(args, reviewers=per_organisation)
    reviewers = []
    for index in range(args.organisations):
        organisation_seed = (
            seeded
            if index == 0
            else seed(
                args,
                slug=f"{ORG_SLUG}-{index + 1}",
                name=f"Web benchmark {index + 1}",
                suffix=f"-org{index + 1}",
                reviewers=per_organisation,
            )
        )
        for key, user in organisation_seed["users"].items():
            if key.startswith("reviewer") and len(reviewers) < args.reviewers * (index + 1) // args.organisations:
                reviewers.append(
                    {
                        "username": user.username,
                        "organisation": f"organisation {index + 1}",
                        "cookie": session_cookie(user),
                        "candidate_path": f"/admin/reviews/reviewitem/{organisation_seed['candidate_id']}/change/",
                        "organisation_id": organisation_seed["organisation_id"],
                    }
                )
    users = seeded["users"]
    if args.profile:
        pages_profile(args, reviewers[0])
        return
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
    # Each request's path and its time inside the server, in ms: the client's figures include its own waits.
    access_log = Path(args.var_dir) / "access.log"
    access_log.unlink(missing_ok=True)
    threads = ["--threads", str(args.threads)] if args.threads > 1 else []
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "portal.wsgi:application", "--workers", str(args.workers), *threads,
         "--bind", f"127.0.0.1:{args.port}", "--log-level", "warning",
         "--access-logfile", str(access_log), "--access-logformat", "%(U)s %(M)s"],
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
        samples = None
        if args.scenario in ("reviewers", "all"):
            samples = reviewers_run(args, args.port, reviewers)
        for label, path, role in urls if args.scenario in ("urls", "all") else []:
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

    if samples is not None:
        samples.update(server_times(access_log))
        reviewers_report(args, samples, reviewers)
    if not results:
        return
    print(
        f"\nweb benchmark: gunicorn {args.workers} workers on 127.0.0.1, wrk 1 thread {args.connections} connections "
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
