"""`make run` on a machine where apt cannot install Pango: it warns, and the portal starts anyway.

The test runs the Makefile's own `run` target (migrate, collectstatic, seed_demo, pdflibs, bin/run) in a fresh
var folder with the embedded defaults (SQLite, filesystem broker), on a PATH where `ldconfig` lists no Pango
and `apt-get` fails as it does while another apt holds the dpkg lock. `id -u` answers 0, so the root path (the
one that calls apt-get) is taken whoever runs the suite. Only the pip install is skipped (`-o`): `make test`
has just done it, and a test must not reinstall the shared virtualenv.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from django.conf import settings

from reviews.management.commands.seed_demo import DEMO_PASSWORD
from tests.browser.conftest import SCREENSHOTS
from tests.conftest import ROOT

pytestmark = [pytest.mark.browser]

# Bounds: the whole target (migrations on a new SQLite file, static files, the demo with its evaluation set, about
# a minute of face encoding) must answer within this on the 2-core CI machine, or the test fails with the log.
START_TIMEOUT = 480
STOP_TIMEOUT = 30

APT_GET_LOCKED = """#!/bin/sh
echo "apt-get $*" >> "{log}"
echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)" >&2
echo "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?" >&2
exit 100
"""
# `ldconfig -p` on a machine without Pango: the cache lists other libraries only.
LDCONFIG_WITHOUT_PANGO = """#!/bin/sh
printf '2 libs found in cache `/etc/ld.so.cache'"'"'\\n'
printf '\\tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6\\n'
printf '\\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1\\n'
"""
ID_AS_ROOT = """#!/bin/sh
if [ "$1" = "-u" ]; then echo 0; else exec /usr/bin/id "$@"; fi
"""


def _stub(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _stop(process: subprocess.Popen) -> None:
    """Stop make, bin/run, its worker and the web server: they share the process group started here."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)


def test_make_run_starts_the_portal_when_apt_cannot_install_pango(browser, tmp_path):
    # Given a PATH on which apt is locked and the loader's cache has no Pango, and a fresh var folder
    stubs = tmp_path / "bin"
    stubs.mkdir()
    apt_log = tmp_path / "apt-get.log"
    _stub(stubs, "apt-get", APT_GET_LOCKED.format(log=apt_log))
    _stub(stubs, "ldconfig", LDCONFIG_WITHOUT_PANGO)
    _stub(stubs, "id", ID_AS_ROOT)
    port = _free_port()
    env = {
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "LANG": "C.UTF-8",
        "PORTAL_VAR_DIR": str(tmp_path / "var"),
        "FACES_DIR": str(settings.FACES_DIR),
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    log = tmp_path / "make-run.log"

    # When a newcomer runs `make run`
    with log.open("wb") as output:
        process = subprocess.Popen(
            ["make", "-o", ".venv/.installed", "run"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(port):
            assert process.poll() is None, f"make run stopped (exit {process.returncode}):\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no server after {START_TIMEOUT} s:\n{log.read_text()}"
            time.sleep(0.5)

        # Then the Pango step tried apt, warned, and went on
        text = log.read_text()
        assert "apt-get update" in apt_log.read_text()
        assert "warning: Pango is missing, so disclosure reports will have no PDF" in text
        assert "Could not get lock /var/lib/dpkg/lock-frontend" in text
        assert "Error" not in text.split("warning: Pango is missing")[1].split("Portal on")[0], text

        # and the login page opens in a browser, and the demo's caseworker signs in
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"http://127.0.0.1:{port}/accounts/login/")
        page.wait_for_selector("input[name=username]")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "make-run-without-pango-login.png"), full_page=True)
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", DEMO_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"http://127.0.0.1:{port}/cases/")
        assert "New case" in page.inner_text("body")
        context.close()
    finally:
        _stop(process)
