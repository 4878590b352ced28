"""Mail survives an SMTP outage: a real SMTP server (aiosmtpd) that the test stops and starts, a real worker.

Decision notices and invitations are sent by tasks queued through the outbox. With the mail server down, the
reviewer's decision and the org admin's invitation still commit and answer normally; the worker retries, and
the mail goes out once the server is back.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from django.urls import reverse

from matching.models import Outcome
from portal.models import Invitation, TaskOutbox
from reviews.services import review_policy_update
from tests.conftest import OBAMA, OBAMA_2, admin_review, review_post, wait_for
from tests.faults.conftest import _free_port, elapsed, record_figures


class SmtpServer:
    """aiosmtpd on a fixed loopback port, keeping every message it accepts; stop() makes the port refuse."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[tuple[list[str], str]] = []
        self._lock = threading.Lock()
        self._controller = None

    async def handle_DATA(self, server, session, envelope) -> str:
        with self._lock:
            self.messages.append((list(envelope.rcpt_tos), envelope.content.decode("utf-8", "replace")))
        return "250 Message accepted for delivery"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def received(self) -> list[tuple[list[str], str]]:
        with self._lock:
            return list(self.messages)


@pytest.fixture
def smtp_server():
    pytest.importorskip("aiosmtpd")
    server = SmtpServer(_free_port())
    yield server
    server.stop()


def _smtp_settings(port: int) -> dict[str, str]:
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(port),
        "EMAIL_TIMEOUT": "2",
        "MAIL_RETRY_BASE_SECONDS": "1",
        "MAIL_RETRY_MAX_SECONDS": "2",
    }


@pytest.mark.django_db(transaction=True)
def test_decisions_and_invitations_stand_while_smtp_is_down_and_the_mail_follows(
    client, settings, smtp_server, start_worker, enrol, open_case, reviewers, alice, dana, tmp_path
):
    # given: the mail server is down (its port refuses), for the web process and for a real worker
    smtp = _smtp_settings(smtp_server.port)
    settings.EMAIL_BACKEND = smtp["EMAIL_BACKEND"]
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", smtp_server.port, 2
    start_worker(**smtp)
    alice.email = "alice@example.org"
    alice.save(update_fields=["email"])
    review_policy_update(organisation=dana.membership.organisation, acting_user=dana, required_confirmations=1)
    subject = enrol("OBAMA-REF", OBAMA, display_name="Barack Obama")
    # The worker may claim either photo before this process does. The probe is opened once the reference face is
    # stored (else its search, in this process, could find an empty gallery); either way one search then makes
    # the candidate.
    wait_for(lambda: subject.faces.exists(), timeout=60, message="the reference face")
    case = open_case(OBAMA_2)
    candidate = wait_for(lambda: case.candidates.first(), timeout=60, message="the candidate")

    # when: a reviewer confirms, and an org admin invites someone, through their pages
    client.force_login(reviewers[0])
    decided = admin_review(client, candidate, review_post(), follow=True)
    client.force_login(dana)
    invited = client.post(
        reverse("admin:portal_invitation_add"), {"email": "nina@example.org", "role": "reviewer", "_save": "Save"}
    )

    # then: both committed and answered normally, and nothing was mailed
    assert decided.status_code == 200
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.CONFIRMED
    assert invited.status_code == 302 and Invitation.objects.filter(email="nina@example.org").exists()
    mail_tasks = TaskOutbox.objects.filter(
        task_name__in=["reviews.tasks.notify_caseworker", "portal.tasks.send_invitation_mail"]
    )
    assert mail_tasks.count() == 2
    # The worker takes both tasks and keeps retrying them while the port refuses.
    wait_for(lambda: not mail_tasks.filter(sent_at__isnull=True).exists(), timeout=30, message="mail tasks sent")
    wait_for(
        lambda: (tmp_path / "worker.log").read_text(errors="replace").count("Retry in") >= 4,
        timeout=30,
        message="the worker retrying both mails",
    )
    assert smtp_server.received() == []

    # when: the mail server comes back
    started = time.monotonic()
    smtp_server.start()

    # then: both mails go out, the decision notice to the caseworker and the invitation with a working link
    received = wait_for(lambda: len(smtp_server.received()) >= 2 and smtp_server.received(), timeout=60)
    record_figures("mail after SMTP returns", seconds=elapsed(started), messages=len(received))
    by_recipient = {tuple(rcpt): body for rcpt, body in received}
    assert set(by_recipient) == {("alice@example.org",), ("nina@example.org",)}
    assert "confirmed match is available" in by_recipient[("alice@example.org",)]
    assert "OBAMA-REF" not in by_recipient[("alice@example.org",)]
    link = re.search(r"/accounts/invitations/[^/\s]+/", by_recipient[("nina@example.org",)]).group(0)
    client.logout()
    assert client.get(link).status_code == 200
    time.sleep(3)
    assert len(smtp_server.received()) == 2  # sent once each, not once per retry
