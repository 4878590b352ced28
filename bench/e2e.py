"""End-to-end benchmark: from a probe photo's upload to its candidates being stored, with real workers.

The script creates (or reuses) a PostgreSQL database, migrates it, seeds one organisation with a gallery of
synthetic encodings (rows inserted directly: no reference photo is ever detected, see --help), starts
`celery -A portal worker` processes against a Redis database, then uploads real one-face photos through the
case API (POST /api/cases/, multipart, authenticated with an organisation API key) and times each photo from
the moment its upload is sent to the moment the worker marks it done (candidates stored).

Each worker configuration is measured twice:
- one at a time: upload, wait until done, upload the next (latency with an idle worker);
- burst: every photo uploaded at once (latency under a queue, and throughput).

    .venv/bin/python bench/e2e.py                         # 100k faces, 30 photos, 1 then 2 worker processes
    .venv/bin/python bench/e2e.py --faces 20000 --photos 10 --concurrency 1

--scenario import times one-face probes on one worker process, first quietly, then while another process enrols
--import-subjects subjects (1,000) from a zip of real photos through the portal's bulk-enrolment service, and
compares the two p95s: every enrolment commits a gallery change that each search must take in.

    .venv/bin/python bench/e2e.py --faces 1000000 --photos 30 --scenario import
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bench_database import database_create  # bench/bench_database.py; the script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
ORG_SLUG = "bench-e2e"
IMPORT_GALLERY = "Bulk import"
# Spreads of real face_recognition encodings (as in bench/search.py): distances of about 0.43 within a
# person and 0.84 between people.
SD_MEAN, SD_SUBJECT, SD_FACE = 0.11, 0.045, 0.027


def environment_set(args: argparse.Namespace) -> None:
    var = Path(args.var_dir)
    (var / "media").mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DATABASE_URL": f"{args.postgres}/{args.database}",
            "CELERY_BROKER_URL": args.broker,
            "PORTAL_VAR_DIR": str(var),
            "MEDIA_ROOT": str(var / "media"),
            # The in-process test client calls itself "testserver".
            "ALLOWED_HOSTS": "localhost,127.0.0.1,testserver",
        }
    )
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def gallery_seed(n: int, seed: int) -> tuple[object, str]:
    """An organisation with n synthetic reference faces (reused when it already has them) and an API key."""
    from django.db import transaction
    from django.db.models import F

    from matching.engine import ENGINE_NAME, engine_version
    from matching.models import Face, Gallery, Photo, Subject
    from matching.sealing import encoding_seal
    from portal.keys import api_key_create
    from portal.models import Organisation

    organisation, _ = Organisation.objects.get_or_create(slug=ORG_SLUG, defaults={"name": "Benchmark"})
    version = engine_version()
    # A previous run's bulk import is dropped (its gallery and faces), so that every run starts from the same
    # gallery; the version moves without a logged change, so workers load it afresh.
    if Gallery.objects.filter(organisation=organisation, name=IMPORT_GALLERY).delete()[0]:
        Organisation.objects.filter(pk=organisation.pk).update(gallery_version=F("gallery_version") + 1)
    have = Face.objects.filter(
        organisation=organisation, subject__gallery__name="Synthetic", engine_version=version
    ).count()
    if have != n:
        Gallery.objects.filter(organisation=organisation).delete()
        gallery = Gallery.objects.create(organisation=organisation, name="Synthetic")
        rng = np.random.default_rng(seed)
        mean = rng.normal(0.0, SD_MEAN, 128)
        start = time.perf_counter()
        made = 0
        batch = 5000
        while made < n:
            with transaction.atomic():
                subjects, counts = [], []
                while sum(counts) < min(batch, n - made):
                    count = min(1 + int(rng.poisson(2.0)), n - made - sum(counts))
                    subjects.append(Subject(gallery=gallery, code=f"SYN-{made + sum(counts):07d}"))
                    counts.append(count)
                subjects = Subject.objects.bulk_create(subjects)
                photos = Photo.objects.bulk_create(
                    Photo(
                        organisation=organisation,
                        kind="reference",
                        subject=s,
                        image="synthetic.jpg",
                        width=1,
                        height=1,
                        status="done",
                    )
                    for s in subjects
                )
                faces = []
                for subject, photo, count in zip(subjects, photos, counts, strict=True):
                    centre = mean + rng.normal(0.0, SD_SUBJECT, 128)
                    for index in range(count):
                        faces.append(
                            Face(
                                photo=photo,
                                organisation=organisation,
                                subject=subject,
                                index=index,
                                top=0,
                                right=1,
                                bottom=1,
                                left=0,
                                crop="",
                                engine=ENGINE_NAME,
                                engine_version=version,
                                encoding=encoding_seal(centre + rng.normal(0.0, SD_FACE, 128)),
                                detector="hog",
                                face_width=1,
                                face_height=1,
                                blur=100.0,
                            )
                        )
                Face.objects.bulk_create(faces, batch_size=1000)
                made += len(faces)
        Organisation.objects.filter(pk=organisation.pk).update(gallery_version=organisation.gallery_version + 1)
        print(f"seeded {n:,} synthetic gallery faces in {time.perf_counter() - start:.0f} s")
    else:
        print(f"reusing the {n:,} synthetic gallery faces already in the database")
    from django.contrib.auth import get_user_model

    User = get_user_model()
    root = User.objects.filter(username="bench-root").first() or User.objects.create_superuser(
        "bench-root", "root@example.org", "bench-password-2026"
    )
    if getattr(organisation, "use_case_approved_at", True) is None:
        # Matching runs only for an organisation whose purpose and legal basis a superuser has recorded.
        from portal.services import organisation_use_case_approve

        organisation_use_case_approve(
            organisation=organisation,
            permitted_purpose="Benchmark of upload-to-candidates latency",
            legal_basis="Synthetic benchmark data; no real person is searched for",
            acting_user=root,
        )
    if organisation.threshold_confirmed_at is None:
        # Matching waits until an org admin confirms the threshold; the benchmark's organisation has no org admin,
        # so its default (0.6) is marked confirmed directly.
        from django.utils import timezone

        Organisation.objects.filter(pk=organisation.pk).update(threshold_confirmed_at=timezone.now())
    _, secret = api_key_create(organisation=organisation, name="bench", role="caseworker", acting_user=root)
    return organisation, secret


def photos_pick(faces_dir: Path, count: int) -> list[Path]:
    paths = sorted((faces_dir / "utkface").glob("*.jpg"))
    if len(paths) < count:
        paths += sorted((faces_dir / "lfw").rglob("*.jpg"))
    if len(paths) < count:
        raise SystemExit(f"need {count} photos under {faces_dir}/utkface or lfw")
    return paths[:: max(1, len(paths) // count)][:count]


class Workers:
    """`celery -A portal worker` with --concurrency processes; its own process group, stopped by its id."""

    def __init__(self, concurrency: int, log: Path) -> None:
        self.concurrency, self.log = concurrency, log
        self.name = f"bench-e2e-{os.getpid()}-{concurrency}@%h"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        from portal.celery import app

        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "--pool=prefork",
                f"--concurrency={self.concurrency}",
                "-Q",
                "celery,search,maintenance",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=WARNING",
                "-n",
                self.name,
            ],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if app.control.ping(timeout=0.5):
                return
            if self.process.poll() is not None:
                raise SystemExit(f"worker exited; see {self.log}")
        raise SystemExit(f"worker did not answer within 60 s; see {self.log}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@dataclass
class Run:
    label: str
    latencies: list[float]
    wall: float
    candidates: int
    failed: int


def upload(client, secret: str, path: Path, reference: str) -> tuple[float, int]:
    from django.core.files.uploadedfile import SimpleUploadedFile

    sent = time.time()
    response = client.post(
        "/api/cases/",
        {
            "reference": reference,
            "title": "Benchmark",
            "purpose": "Benchmark of upload to candidates",
            "photos": [SimpleUploadedFile(path.name, path.read_bytes(), content_type="image/jpeg")],
        },
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    if response.status_code != 201:
        raise SystemExit(f"upload refused: {response.status_code} {response.content[:300]!r}")
    return sent, response.json()["photos"][0]["id"]


def finished(photo_ids: list[int], timeout: float) -> dict[int, tuple[str, float]]:
    from matching.models import Photo

    deadline = time.monotonic() + timeout
    while True:
        rows = dict(
            (pk, (status, changed.timestamp()))
            for pk, status, changed in Photo.objects.filter(
                id__in=photo_ids, status__in=["done", "failed"]
            ).values_list("id", "status", "status_changed_at")
        )
        if len(rows) == len(photo_ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


def run_measure(label: str, client, secret: str, photos: list[Path], burst: bool, tag: str) -> Run:
    from matching.models import Candidate

    start = time.time()
    sent: dict[int, float] = {}
    done: dict[int, tuple[str, float]] = {}
    for i, path in enumerate(photos):
        at, photo_id = upload(client, secret, path, f"{tag}-{i}")
        sent[photo_id] = at
        if not burst:
            done.update(finished([photo_id], timeout=120))
    if burst:
        done = finished(list(sent), timeout=600)
    latencies = [done[pk][1] - sent[pk] for pk in sent if pk in done and done[pk][0] == "done"]
    wall = max((d[1] for d in done.values()), default=time.time()) - start
    candidates = Candidate.objects.filter(search__face__photo_id__in=list(sent)).count()
    failed = sum(1 for pk in sent if done.get(pk, ("?",))[0] != "done")
    return Run(label, latencies, wall, candidates, failed)


def baseline_measure(photos: list[Path]) -> Run:
    """Detection and encoding alone, in this process, with the portal's settings: the floor of any latency."""
    from django.conf import settings

    from matching.engine import detect_faces
    from matching.imaging import image_normalise, rgb_array

    def once(path: Path) -> float:
        start = time.perf_counter()
        image = image_normalise(
            path.read_bytes(), max_bytes=settings.UPLOAD_MAX_BYTES, max_pixels=settings.UPLOAD_MAX_PIXELS
        )
        detect_faces(
            rgb_array(image.content),
            model=settings.FACE_DETECTION_MODEL,
            upsample=settings.FACE_UPSAMPLE,
            max_side=settings.FACE_MAX_SIDE,
            crop_margin=settings.FACE_CROP_MARGIN,
        )
        return time.perf_counter() - start

    once(photos[0])  # loads the dlib models
    start = time.perf_counter()
    latencies = [once(path) for path in photos]
    return Run("baseline: detect+encode in-process", latencies, time.perf_counter() - start, 0, 0)


IMPORTER = """
import sys
import django
django.setup()
from matching.services import enrolment_batch_process
enrolment_batch_process(batch_id=int(sys.argv[1]))
"""


def import_prepare(organisation, count: int, faces_dir: Path, stamp: int):
    """An enrolment batch of `count` one-face photos (real photos, reused under new names past the ~500 there are),
    stored as an upload would be but not queued: the script runs it in a process of its own."""
    import io
    import zipfile

    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile

    from matching.models import EnrolmentBatch, Gallery

    paths = sorted((faces_dir / "utkface").glob("*.jpg")) + sorted((faces_dir / "lfw").rglob("*.jpg"))
    archive, manifest = io.BytesIO(), io.StringIO()
    manifest.write("code,file\n")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
        for i in range(count):
            path = paths[i % len(paths)]
            name = f"{i:05d}-{path.name}"
            zipped.writestr(name, path.read_bytes())
            manifest.write(f"IMP-{stamp}-{i:05d},{name}\n")
    gallery, _ = Gallery.objects.get_or_create(organisation=organisation, name=IMPORT_GALLERY)
    batch = EnrolmentBatch(
        gallery=gallery, rows_total=count, created_by=get_user_model().objects.get(username="bench-root")
    )
    batch.archive.save(f"bench-{stamp}.zip", ContentFile(archive.getvalue()), save=False)
    batch.manifest.save(f"bench-{stamp}.csv", ContentFile(manifest.getvalue().encode()), save=False)
    batch.save()
    return batch


def import_measure(client, secret: str, photos: list[Path], batch, stamp: int, limit: int) -> tuple[Run, dict]:
    """One-face probes, one at a time, while the batch is enrolled by another process: from its start until it
    ends or `limit` probes have been timed."""
    from matching.models import EnrolmentBatch, Search

    importer = subprocess.Popen([sys.executable, "-c", IMPORTER, str(batch.id)], cwd=ROOT, env=os.environ.copy())
    start = time.time()
    sent: dict[int, float] = {}
    done: dict[int, tuple[str, float]] = {}
    first_rows = EnrolmentBatch.objects.get(pk=batch.pk).rows_done
    i = 0
    while importer.poll() is None and len(sent) < limit:
        at, photo_id = upload(client, secret, photos[i % len(photos)], f"I{stamp}-{i}")
        sent[photo_id] = at
        done.update(finished([photo_id], timeout=120))
        i += 1
    rows_during = EnrolmentBatch.objects.get(pk=batch.pk).rows_done - first_rows
    importer_running = importer.poll() is None
    importer.wait()
    latencies = [done[pk][1] - sent[pk] for pk in sent if pk in done and done[pk][0] == "done"]
    faces_seen = list(Search.objects.filter(face__photo_id__in=list(sent)).values_list("gallery_faces", flat=True))
    run = Run(
        "1 process, one at a time, bulk import",
        latencies,
        time.time() - start,
        0,
        sum(1 for pk in sent if done.get(pk, ("?",))[0] != "done"),
    )
    batch.refresh_from_db()
    return run, {
        "rows_during": rows_during,
        "importer_still_running": importer_running,
        "faces_min": min(faces_seen, default=0),
        "faces_max": max(faces_seen, default=0),
        "enrolled": batch.accepted_count,
        "refused": batch.refused_count,
        "status": batch.status,
    }


LOAD_MEMORY = """
import json, sys, time
import django
django.setup()
import numpy as np
from contenders import rss_bytes as rss  # bench/contenders.py
from matching.engine import engine_version
from matching.models import Subject
from matching.quantised import GalleryIndex, memory_release
from matching.services import searching
from portal.models import Organisation
tiny = GalleryIndex.build([(np.arange(1, 11), np.arange(1, 11), np.zeros((10, 128)))], expected=10)
tiny.search(np.zeros((1, 128)), threshold=0.6, k=5, exact=lambda ids: {})
organisation = Organisation.objects.get(slug=sys.argv[1])
memory_release()
cold = rss()
# The loader's first use (the database cursor, the ORM, OpenSSL for Fernet) costs the same whatever the gallery's
# size: ten subjects' faces, then the whole gallery.
subjects = Subject.objects.filter(gallery__organisation=organisation).order_by("id")
first = list(subjects.values_list("id", flat=True)[:11])
searching.gallery_index_load(organisation, engine_version(), subject_from=first[0], subject_to=first[-1])
memory_release()
before, start = rss(), time.perf_counter()
index = searching.organisation_gallery(organisation)
seconds = time.perf_counter() - start
memory_release()
print(json.dumps({"faces": index.size, "cold": cold, "before": before, "after": rss(), "seconds": seconds,
                  "arrays": index.nbytes}))
"""


def load_memory(args: argparse.Namespace) -> None:
    """A worker's load of the seeded gallery from PostgreSQL (decrypting every face), in a fresh process: RSS after
    minus RSS before, per face, apart from the loader's first use, which costs the same at any size."""
    import json

    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}"}
    output = subprocess.run(
        [sys.executable, "-c", LOAD_MEMORY, ORG_SLUG], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(output.strip().splitlines()[-1])
    faces, mb = result["faces"], 2**20
    print(
        f"a worker's load of {faces:,} faces from PostgreSQL (read, decrypted, quantised) in a fresh process: "
        f"{result['seconds']:.0f} s; RSS {result['before'] / mb:.0f} MB before, {result['after'] / mb:.0f} MB after: "
        f"{(result['after'] - result['before']) / faces:.1f} bytes a face (its arrays: {result['arrays'] / faces:.0f});"
        f" the loader's first use cost {(result['before'] - result['cold']) / mb:.0f} MB more, once per process "
        f"({(result['after'] - result['cold']) / faces:.1f} bytes a face counting it)"
    )


def import_scenario(args: argparse.Namespace, client, secret: str, photos: list[Path], stamp: int) -> list[Run]:
    """Quiet one-at-a-time probes on one worker process, then the same while a bulk import runs beside it."""
    from portal.models import Organisation

    workers = Workers(1, Path(args.var_dir) / "worker-import.log")
    workers.start()
    try:
        warm = run_measure("warm-up", client, secret, photos[:1], True, f"WI{stamp}")
        if warm.failed:
            raise SystemExit(f"warm-up photo failed; see {workers.log}")
        print(f"1 worker process: warm-up (gallery load + first search) {max(warm.latencies):.2f} s")
        quiet = run_measure("1 process, one at a time, quiet", client, secret, photos, False, f"Q{stamp}")
        organisation = Organisation.objects.get(slug=ORG_SLUG)
        batch = import_prepare(organisation, args.import_subjects, Path(args.faces_dir), stamp)
        busy, facts = import_measure(client, secret, photos, batch, stamp, limit=max(len(photos), 200))
        # The same probes again with the import done: the gallery now holds the enrolled photos too, so these
        # searches find (and store) what the searches during the import found.
        after = run_measure("1 process, one at a time, quiet after", client, secret, photos, False, f"A{stamp}")
    finally:
        workers.stop()
    print(
        f"bulk import of {args.import_subjects} subjects in another process: {facts['rows_during']} rows enrolled "
        f"while the probes ran (the import {'was still running' if facts['importer_still_running'] else 'finished'} "
        f"when they stopped); it ended {facts['status']} with {facts['enrolled']} enrolled, {facts['refused']} "
        f"refused; the probes' searches saw {facts['faces_min']:,} to {facts['faces_max']:,} gallery faces"
    )
    return [quiet, busy, after]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=100_000, help="synthetic gallery faces")
    parser.add_argument("--photos", type=int, default=30, help="one-face photos uploaded per measure")
    parser.add_argument("--concurrency", default="1,2", help="worker processes to compare, comma-separated")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432", help="server URL, no database")
    parser.add_argument("--database", default="portal_bench", help="created if missing, then migrated")
    parser.add_argument("--fresh", action="store_true", help="drop and recreate the database first")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/12", help="Redis database, flushed first")
    parser.add_argument("--var-dir", default="/tmp/perfvar/bench-e2e", help="media and logs")
    parser.add_argument("--faces-dir", default=str(ROOT.parent / "shared" / "faces"))
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--scenario",
        choices=["latency", "import", "memory", "all"],
        default="latency",
        help="latency: one at a time and bursts per --concurrency; import: one-face probes on one worker process "
        "with and without a bulk import of --import-subjects running in another process; memory: a worker's "
        "load of the gallery in a fresh process, RSS per face",
    )
    parser.add_argument("--import-subjects", type=int, default=1000, help="subjects the bulk import enrols")

    args = parser.parse_args()

    environment_set(args)
    database_create(args)
    import django

    django.setup()
    import redis
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    redis.Redis.from_url(args.broker).flushdb()
    _, secret = gallery_seed(args.faces, args.seed)
    photos = photos_pick(Path(args.faces_dir), args.photos)
    client = Client()
    print(
        f"e2e benchmark: {args.faces:,} synthetic gallery faces (Fernet-sealed rows, not detected photos); "
        f"{len(photos)} real one-face photos from {args.faces_dir}; cores {os.cpu_count()}; load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    if args.scenario in ("memory", "all"):
        load_memory(args)
        if args.scenario == "memory":
            return
    runs: list[Run] = [baseline_measure(photos)]
    stamp = int(time.time())
    if args.scenario in ("import", "all"):
        runs += import_scenario(args, client, secret, photos, stamp)
    for concurrency in [int(c) for c in args.concurrency.split(",") if c.strip()] if args.scenario != "import" else []:
        workers = Workers(concurrency, Path(args.var_dir) / f"worker-{concurrency}.log")
        workers.start()
        try:
            # Each worker process loads and caches the gallery on its first search; those are left out.
            warm = run_measure("warm-up", client, secret, photos[:concurrency], True, f"W{stamp}-{concurrency}")
            if warm.failed:
                raise SystemExit(f"warm-up photos failed; see the photos' failure_reason and {workers.log}")
            print(
                f"{concurrency} worker process(es): warm-up (gallery load + first search) {max(warm.latencies):.2f} s"
            )
            label = f"{concurrency} process{'es' if concurrency > 1 else ''}"
            runs.append(
                run_measure(f"{label}, one at a time", client, secret, photos, False, f"S{stamp}-{concurrency}")
            )
            runs.append(run_measure(f"{label}, burst", client, secret, photos, True, f"B{stamp}-{concurrency}"))
        finally:
            workers.stop()

    print(
        f"\n{'measure':<34}{'photos':>7}{'p50 s':>8}{'p95 s':>8}{'max s':>8}{'wall s':>8}{'photos/s':>10}"
        f"{'cands':>7}{'failed':>7}"
    )
    for run in runs:
        lat = sorted(run.latencies)
        p50 = statistics.median(lat) if lat else float("nan")
        p95 = float(np.percentile(lat, 95)) if lat else float("nan")
        print(
            f"{run.label:<34}{len(lat):>7}{p50:>8.2f}{p95:>8.2f}{max(lat, default=float('nan')):>8.2f}"
            f"{run.wall:>8.1f}{len(lat) / run.wall:>10.2f}{run.candidates:>7}{run.failed:>7}"
        )
    busy = [r for r in runs if r.label.endswith("bulk import")]
    for quiet in [r for r in runs if r.label.startswith("1 process, one at a time, quiet")]:
        if busy and quiet.latencies and busy[0].latencies:
            ratio = float(np.percentile(busy[0].latencies, 95)) / float(np.percentile(quiet.latencies, 95))
            print(f"p95 during the bulk import / p95 {quiet.label[len('1 process, one at a time, '):]}: {ratio:.2f}x"
                  " (goal: at most 2x)")  # fmt: skip
    bursts = [r for r in runs if r.label.endswith("burst")]
    if len(bursts) == 2:
        print(
            f"burst throughput, {bursts[1].label} vs {bursts[0].label}: "
            f"{(len(bursts[1].latencies) / bursts[1].wall) / (len(bursts[0].latencies) / bursts[0].wall):.2f}x"
        )


if __name__ == "__main__":
    main()
