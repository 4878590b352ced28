"""Fault fixtures: a private Redis server the tests stop and start, and Celery workers they start and kill.

Nothing here touches the shared Redis on 6379: each test that needs a broker
gets its own redis-server on a free port, and the app in this process is
pointed at it. Tests that need no broker get an in-memory one, so that no
session-wide worker elsewhere in the suite picks up their tasks.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import ROOT, WorkerProcess, _database_url, wait_for

# Figures the fault tests measure, printed at the end of the run.
FIGURES: dict[str, dict[str, object]] = {}


def record_figures(name: str, **values: object) -> None:
    FIGURES[name] = values


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if FIGURES:
        terminalreporter.section("fault test figures")
        for name, values in FIGURES.items():
            terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A redis-server of our own, without persistence: a restart loses every message, as a crash would."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=(self.workdir / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for(self.ping, timeout=10, interval=0.05, message=f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def freeze(self) -> None:
        """Still accepting connections, never answering: a hung server or a paused VM."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping())
        except redis.RedisError:
            return False

    def llen(self, queue: str = "celery") -> int:
        import redis

        return int(redis.Redis.from_url(self.url, socket_connect_timeout=1).llen(queue))


def point_app_at(url: str) -> tuple[str, dict]:
    """Send this process's tasks to `url`, with the settings' timeouts; returns what was there before."""
    from portal.celery import app

    before = (app.conf.broker_url, dict(app.conf.broker_transport_options or {}))
    app.conf.broker_url = url
    app.conf.broker_transport_options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    # The connection and producer pools are keyed by URL but cached on the app.
    app._pool = None
    app.amqp._producer_pool = None
    return before


def restore_app(before: tuple[str, dict]) -> None:
    from portal.celery import app

    app.conf.broker_url, app.conf.broker_transport_options = before
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture(autouse=True)
def _memory_broker():
    import portal.outbox

    before = point_app_at("memory://")
    portal.outbox._paused_until = 0.0
    yield
    restore_app(before)
    portal.outbox._paused_until = 0.0


@pytest.fixture
def redis_server(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed; the fault tests start their own.")
    server = RedisServer(tmp_path)
    server.start()
    before = point_app_at(server.url)
    yield server
    restore_app(before)
    server.stop()


class FaultWorker(WorkerProcess):
    """A prefork worker with embedded beat, in its own process group, so that SIGKILL takes all of it."""

    def __init__(self, env: dict[str, str], log: Path, hostname: str, concurrency: int = 2) -> None:
        super().__init__(env, log)
        self.hostname = hostname
        self.concurrency = concurrency

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "-B",
                f"--schedule={self.log.parent / f'beat-{self.hostname}'}",
                "--pool=prefork",
                f"--concurrency={self.concurrency}",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--hostname",
                self.hostname,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    restarts = 0

    def wait_ready(self, timeout: float = 60) -> None:
        from portal.models import WorkerHeartbeat

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.hostname} exited; see {self.log}")
            return WorkerHeartbeat.objects.filter(hostname=self.hostname, pid=self.process.pid).exists()

        wait_for(ready, timeout=timeout, interval=0.2, message=f"worker {self.hostname} heartbeat")

    def restart_if_dead(self) -> None:
        """What a process supervisor (systemd's Restart=always) does for a worker that exited."""
        if self.process is not None and self.process.poll() is not None:
            self.restarts += 1
            self.start()
            self.wait_ready()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@pytest.fixture
def start_worker(transactional_db, redis_server, media_root, tmp_path):
    """Starts workers on the test database and the private Redis; kills any still running at the end.

    Depends on transactional_db so that the workers are gone before the database is flushed.
    """
    from django.db import connection

    if connection.vendor == "sqlite" and connection.settings_dict["OPTIONS"].get("transaction_mode") != "IMMEDIATE":
        # With SQLite's default deferred transactions, a writer that read first is refused at once
        # ("database is locked") while a worker writes, so these tests would measure SQLite, not the portal.
        pytest.skip("Several processes writing at once need PostgreSQL, or SQLite with transaction_mode IMMEDIATE.")
    workers: list[FaultWorker] = []
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(connection.settings_dict),
        "CELERY_BROKER_URL": redis_server.url,
        "MEDIA_ROOT": str(media_root),
        "FACES_DIR": str(settings.FACES_DIR),
        "PORTAL_VAR_DIR": str(tmp_path),
        # Short enough for a test; each is far longer than a small photo takes.
        "PHOTO_STALE_AFTER_SECONDS": "6",
        "PHOTO_QUEUED_RESEND_SECONDS": "6",
        "PHOTO_SWEEP_SECONDS": "2",
        "OUTBOX_FLUSH_SECONDS": "2",
        "WORKER_HEARTBEAT_SECONDS": "2",
    }

    def _start(name: str | None = None, **extra_env: str) -> FaultWorker:
        hostname = f"{name or f'fault{len(workers) + 1}'}-{os.getpid()}@{socket.gethostname()}"
        worker = FaultWorker({**env, **extra_env}, tmp_path / "worker.log", hostname)
        worker.start()
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield _start
    for worker in workers:
        worker.kill(signal.SIGKILL)


def photo_counts(photo_ids: list[int]) -> dict[str, int]:
    """Completed photos and rows beyond one face, one search per face and the candidates each search counted."""
    from django.db.models import Sum

    from matching.models import Candidate, Face, Photo, PhotoStatus, Search

    photos = Photo.objects.filter(id__in=photo_ids)
    faces = Face.objects.filter(photo__in=photos)
    searches = Search.objects.filter(face__in=faces)
    counted = searches.aggregate(total=Sum("candidate_count"))["total"] or 0
    return {
        "submitted": len(photo_ids),
        "completed": photos.filter(status=PhotoStatus.DONE).count(),
        "failed": photos.filter(status=PhotoStatus.FAILED).count(),
        "faces": faces.count(),
        "searches": searches.count(),
        "duplicated": (faces.count() - faces.values("photo").distinct().count())
        + (searches.count() - searches.values("face").distinct().count())
        + (Candidate.objects.filter(search__in=searches).count() - counted),
    }


def all_finished(photo_ids: list[int]) -> bool:
    from matching.models import Photo, PhotoStatus

    return (
        not Photo.objects.filter(id__in=photo_ids).exclude(status__in=[PhotoStatus.DONE, PhotoStatus.FAILED]).exists()
    )


def one_face_photos(faces, count: int) -> list[str]:
    rows = [r["file"] for r in faces.rows if r["file"].startswith("utkface/") and r["faces_found_hog"] == "1"]
    if len(rows) < count:
        pytest.skip(f"Only {len(rows)} one-face UTKFace photos in {faces.root}; {count} are needed.")
    return rows[:count]


def elapsed(start: float) -> float:
    return round(time.monotonic() - start, 1)
