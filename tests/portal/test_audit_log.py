from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from portal.audit import audit_chain_verify, audit_record
from portal.models import AuditEvent


@pytest.fixture
def events(org, alice):
    return [audit_record(action=f"test.{n}", actor=alice, organisation=org, detail={"n": n}) for n in range(5)]


def test_an_intact_log_verifies(events, capsys):
    call_command("verify_audit_log")

    assert f"Audit log intact: {AuditEvent.objects.count()} events" in capsys.readouterr().out


def test_editing_a_row_in_the_database_is_detected(events):
    # Given someone with database access rewrites an event's detail behind the portal's back
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {AuditEvent._meta.db_table} SET action = %s WHERE id = %s", ["test.innocent", events[2].pk]
        )

    with pytest.raises(CommandError, match=rf"broken at event {events[2].seq} .*altered"):
        call_command("verify_audit_log")


def test_deleting_a_row_is_detected(events):
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {AuditEvent._meta.db_table} WHERE id = %s", [events[1].pk])

    checked, broken = audit_chain_verify()

    assert checked == events[0].seq and broken.seq == events[2].seq and "deleted or inserted" in broken.problem


def test_rewriting_a_row_and_its_hash_breaks_the_next_link(events):
    from portal.audit import event_hash

    forged = AuditEvent.objects.get(pk=events[1].pk)
    forged.action = "test.forged"
    forged.hash = event_hash(forged, forged.prev_hash)
    AuditEvent.objects.filter(pk=forged.pk).update(action=forged.action, hash=forged.hash)

    _, broken = audit_chain_verify()

    assert broken.seq == events[2].seq and "link to the previous event" in broken.problem


def test_the_admin_log_is_read_only(client, dana, events):
    client.force_login(dana)

    listing = client.get("/admin/portal/auditevent/?action=test.1")
    edit = client.post(f"/admin/portal/auditevent/{events[0].pk}/change/", {"action": "x"})

    assert listing.status_code == 200 and "test.1" in listing.content.decode()
    assert edit.status_code == 403
    assert client.post(f"/admin/portal/auditevent/{events[0].pk}/delete/", {"post": "yes"}).status_code == 403
