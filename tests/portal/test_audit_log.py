from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading

import pytest
from django.core.files.storage import FileSystemStorage
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection, transaction
from django.db.models.deletion import ProtectedError

from portal.audit import (
    _canonical,
    audit_chain_verify,
    audit_checkpoint_export,
    audit_record,
    audit_view_record,
    audit_views_seal,
    checkpoints_read,
    event_payload,
)
from portal.models import AuditChainHead, AuditEvent, AuditViewCounter

EVENTS = AuditEvent._meta.db_table
HEADS = AuditChainHead._meta.db_table
COUNTERS = AuditViewCounter._meta.db_table


@pytest.fixture(autouse=True)
def audit_key(settings) -> str:
    key = secrets.token_urlsafe(32)
    settings.AUDIT_LOG_KEYS = [key]
    return key


@pytest.fixture(autouse=True)
def _only_this_tests_log(db) -> None:
    # Verification covers the whole log, and rows committed by other processes (a worker finishing a task after
    # an earlier test) would be signed with another key. Emptied inside the test's transaction, so rolled back.
    sql(f"DELETE FROM {HEADS}")
    sql(f"DELETE FROM {COUNTERS}")
    sql(f"DELETE FROM {EVENTS}")


@pytest.fixture
def checkpoints(tmp_path, settings):
    """The checkpoint folder: in production a path or bucket the database administrator cannot write."""
    folder = tmp_path / "checkpoints"
    settings.STORAGES = {
        **settings.STORAGES,
        "audit_checkpoints": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(folder)},
        },
    }
    return folder


@pytest.fixture
def events(org, alice):
    return [audit_record(action=f"test.{n}", actor=alice, organisation=org, detail={"n": n}) for n in range(5)]


def verify(checkpoints=None, *args: str) -> str:
    """Run verify_audit_log as an operator would; return its output, or raise CommandError with its report."""
    from io import StringIO

    out, err = StringIO(), StringIO()
    args = [*(["--checkpoints", str(checkpoints)] if checkpoints else []), *args]
    try:
        call_command("verify_audit_log", *args, stdout=out, stderr=err)
    except CommandError as error:
        raise CommandError(f"{error}\n{err.getvalue()}") from None
    return out.getvalue()


def sql(statement: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def rehash_from(event: AuditEvent, digest) -> None:
    """The database administrator's rewrite: recompute every hash from `event` to the end of its chain with
    `digest(payload) -> hex`, relink them, and move the head, all in SQL."""
    rows = list(AuditEvent.objects.filter(chain=event.chain, seq__gte=event.seq).order_by("seq"))
    prev = event.prev_hash
    for row in rows:
        row.prev_hash = prev
        row.hash = digest(event_payload(row))
        sql(f"UPDATE {EVENTS} SET prev_hash = %s, hash = %s WHERE id = %s", [row.prev_hash, row.hash, row.pk])
        prev = row.hash
    sql(f"UPDATE {HEADS} SET last_hash = %s WHERE chain = %s", [prev, event.chain])


# An honest log


def test_an_honest_log_verifies_against_its_checkpoints(org, other_org, alice, charlie, checkpoints, events):
    # Given events in two organisations and none, views of images, a checkpoint, and more events after it
    audit_record(action="test.other", actor=charlie, organisation=other_org)
    audit_record(action="test.global")
    audit_view_record(action="media.face", actor=alice, organisation=org)
    audit_checkpoint_export()
    audit_record(action="test.later", actor=alice, organisation=org)
    audit_view_record(action="media.photo", actor=alice, organisation=org)

    output = verify(checkpoints)

    assert "Activity log intact: 9 events in 3 chains, 2 views (1 not sealed yet), 1 checkpoints" in output


def test_each_organisation_has_its_own_chain(org, other_org, alice, charlie):
    first = audit_record(action="test.a", actor=alice, organisation=org)
    other = audit_record(action="test.b", actor=charlie, organisation=other_org)
    second = audit_record(action="test.c", actor=alice, organisation=org)

    assert (first.chain, first.seq, other.chain, other.seq) == (org.pk, 1, other_org.pk, 1)
    assert (second.seq, second.prev_hash) == (2, first.hash)


# The three tamperings


def test_editing_a_row_is_detected(events, checkpoints):
    # Given a checkpoint, and then someone with database access rewrites what an event says
    audit_checkpoint_export()
    sql(f"UPDATE {EVENTS} SET detail = %s WHERE id = %s", [json.dumps({"n": 99}), events[2].pk])

    with pytest.raises(CommandError, match=rf"event {events[2].seq} of chain {events[2].chain}.*altered"):
        verify(checkpoints)


def test_a_full_rehash_with_sha256_is_detected(events, checkpoints):
    # Given the attacker edits a row, then rehashes it and everything after it with plain SHA-256 (the old
    # algorithm) and moves the head to match
    audit_checkpoint_export()
    sql(f"UPDATE {EVENTS} SET action = 'test.innocent' WHERE id = %s", [events[1].pk])
    rehash_from(AuditEvent.objects.get(pk=events[1].pk), lambda p: hashlib.sha256(_canonical(p)).hexdigest())

    with pytest.raises(CommandError, match=r"event 2 of chain .*rehashed without the key"):
        verify(checkpoints)
    # And without checkpoints too: the key alone catches it
    with pytest.raises(CommandError, match="rehashed without the key"):
        verify()


def test_a_full_rehash_with_a_guessed_key_is_detected(events, checkpoints, settings):
    # Given the attacker guesses a key (here the development default derived from SECRET_KEY)
    audit_checkpoint_export()
    guess = hashlib.sha256(f"audit-log:{settings.SECRET_KEY}".encode()).digest()
    sql(f"UPDATE {EVENTS} SET actor_id = NULL WHERE id = %s", [events[0].pk])
    rehash_from(
        AuditEvent.objects.get(pk=events[0].pk), lambda p: hmac.new(guess, _canonical(p), hashlib.sha256).hexdigest()
    )

    with pytest.raises(CommandError, match="rehashed without the key"):
        verify(checkpoints)


def test_a_rewrite_by_the_key_holder_is_caught_by_an_earlier_checkpoint(events, checkpoints, audit_key):
    # Given even someone holding the key rewrites history that a checkpoint already covers
    from portal.audit import event_hash

    audit_checkpoint_export()
    sql(f"UPDATE {EVENTS} SET action = 'test.innocent' WHERE id = %s", [events[3].pk])
    rehash_from(AuditEvent.objects.get(pk=events[3].pk), lambda p: event_hash(AuditEvent(**_fields(p))))

    with pytest.raises(CommandError, match=r"differs from checkpoint .*rewritten"):
        verify(checkpoints)


def _fields(payload: dict) -> dict:
    import datetime

    return {
        "chain": payload["chain"], "seq": payload["seq"], "prev_hash": payload["prev"], "key_id": payload["key"],
        "created_at": datetime.datetime.fromisoformat(payload["created_at"]),
        "organisation_id": payload["organisation_id"], "actor_id": payload["actor_id"], "action": payload["action"],
        "target_type": payload["target_type"], "target_id": payload["target_id"], "detail": payload["detail"],
    }  # fmt: skip


def test_a_truncation_is_detected_with_checkpoints(events, checkpoints):
    # Given a checkpoint, then the last two events are deleted and the head is rewound to the third
    audit_checkpoint_export()
    sql(f"DELETE FROM {EVENTS} WHERE id IN (%s, %s)", [events[3].pk, events[4].pk])
    sql(
        f"UPDATE {HEADS} SET last_seq = %s, last_hash = %s WHERE chain = %s",
        [events[2].seq, events[2].hash, events[2].chain],
    )

    # Then the chain alone still looks whole: only the checkpoint can tell
    assert "Activity log intact" in verify()
    with pytest.raises(CommandError, match=r"recorded 5 events, the chain now holds 3: events were deleted from"):
        verify(checkpoints)


def test_deleting_a_row_inside_a_chain_is_detected(events):
    sql(f"DELETE FROM {EVENTS} WHERE id = %s", [events[1].pk])

    result = audit_chain_verify()

    assert result.events == 1 and "deleted or inserted" in result.breaks[0].problem


def test_a_deleted_head_row_is_detected(events):
    sql(f"DELETE FROM {HEADS} WHERE chain = %s", [events[0].chain])

    with pytest.raises(CommandError, match=r"chain \d+: its head row is missing \(5 events\)"):
        verify()


def test_a_forged_checkpoint_is_refused(events, checkpoints):
    # Given the attacker also rewrites the checkpoint to match a truncated chain
    name = audit_checkpoint_export()
    path = checkpoints / name
    document = json.loads(path.read_text())
    document["heads"][0]["seq"] = 3
    path.write_text(json.dumps(document))

    with pytest.raises(CommandError, match="signature does not match"):
        verify(checkpoints)


# Keys


def test_rotating_the_key_keeps_old_rows_verifiable(events, checkpoints, settings, audit_key, org, alice):
    # Given rows and a checkpoint under the old key, then a new key put first
    audit_checkpoint_export()
    settings.AUDIT_LOG_KEYS = [secrets.token_urlsafe(32), audit_key]
    audit_record(action="test.after_rotation", actor=alice, organisation=org)
    audit_checkpoint_export()

    # Then both keys' rows and checkpoints verify, and each row names the key that signed it
    assert "Activity log intact: 6 events in 1 chains" in verify(checkpoints)
    assert AuditEvent.objects.values("key_id").distinct().count() == 2
    # And dropping the old key too early is reported, not ignored
    settings.AUDIT_LOG_KEYS = settings.AUDIT_LOG_KEYS[:1]
    with pytest.raises(CommandError, match="not among the configured AUDIT_LOG_KEYS"):
        verify(checkpoints)


# Views: recorded without the chain's lock, sealed into it later


def test_image_views_are_recorded_without_chaining_and_sealed_later(client, alice, org, settings):
    # Given a real crop on disk, of a probe face in Alice's organisation
    from pathlib import Path

    from PIL import Image

    from tests.factories import candidate_with

    candidate = candidate_with(organisation=org)
    crop = Path(settings.MEDIA_ROOT) / candidate.search.face.crop.name
    crop.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(crop, "JPEG")
    client.force_login(alice)

    response = client.get(f"/media/faces/{candidate.search.face_id}/")

    assert response.status_code == 200
    view = AuditEvent.objects.get(action="media.face")
    assert (view.actor, view.chain, view.seq, view.sealed_by) == (alice, org.pk, None, None)
    assert audit_views_seal() == 1
    view.refresh_from_db()
    assert view.sealed_by.action == "audit.seal" and view.sealed_by.detail["views"] == 1


def test_a_deleted_view_is_detected_once_sealed(org, alice, checkpoints):
    views = [audit_view_record(action="media.face", actor=alice, organisation=org) for _ in range(3)]
    audit_checkpoint_export()  # seals them first
    sql(f"DELETE FROM {EVENTS} WHERE id = %s", [views[1].pk])

    with pytest.raises(CommandError, match=r"covered 3 views, 2 now name it.*deleted"):
        verify(checkpoints)


def test_an_edited_view_is_detected(org, alice):
    view = audit_view_record(action="media.face", actor=alice, organisation=org)
    sql(f"UPDATE {EVENTS} SET target_id = '1' WHERE id = %s", [view.pk])

    with pytest.raises(CommandError, match=rf"a view \(id {view.pk}\).*altered"):
        verify()


@pytest.mark.postgresql_only("Row locks need PostgreSQL; SQLite locks the whole database.")
@pytest.mark.django_db(transaction=True)
def test_no_write_waits_on_another_organisations_chain(org, other_org, alice, bob, charlie):
    # Given one of Acme's services holds Acme's chain lock in an open transaction
    holding, release = threading.Event(), threading.Event()

    def long_service() -> None:
        from django.db import connection as own

        try:
            with transaction.atomic():
                audit_record(action="test.long", actor=alice, organisation=org)
                holding.set()
                release.wait(15)
        finally:
            own.close()

    thread = threading.Thread(target=long_service)
    thread.start()
    assert holding.wait(10)
    try:
        # When the other organisation writes, and an Acme reviewer views an image, neither may wait
        with transaction.atomic():
            sql("SET LOCAL lock_timeout = '2s'")
            audit_record(action="test.elsewhere", actor=charlie, organisation=other_org)
            audit_view_record(action="media.face", actor=bob, organisation=org)
        # While another Acme write does wait for the lock (so the lock was really held)
        with pytest.raises(OperationalError, match="lock timeout"), transaction.atomic():
            sql("SET LOCAL lock_timeout = '300ms'")
            audit_record(action="test.same_org", actor=bob, organisation=org)
    finally:
        release.set()
        thread.join(20)


# Views are numbered from the moment they are written: what a database administrator can and cannot do to them
# before they are sealed (README, "Tamper-evident activity log")


def views(org, user, count: int) -> list[AuditEvent]:
    return [audit_view_record(action="media.face", actor=user, organisation=org) for _ in range(count)]


def test_each_view_takes_the_next_number_of_its_organisation(org, other_org, alice, charlie, bob):
    from portal.audit import audit_views_record

    first = views(org, alice, 2)
    elsewhere = views(other_org, charlie, 1)
    audit_views_record(action="media.face", actor=bob, organisation_id=org.pk, targets=[org, org, org])

    numbered = list(AuditEvent.objects.filter(chain=org.pk).order_by("view_seq").values_list("view_seq", flat=True))
    assert [v.view_seq for v in first] == [1, 2] and elsewhere[0].view_seq == 1
    assert numbered == [1, 2, 3, 4, 5]
    assert AuditViewCounter.objects.get(chain=org.pk).last_view == 5


def test_the_number_is_signed(org, alice):
    # Given a view whose number is changed to fill a gap left by a deleted one
    first, second = views(org, alice, 2)
    sql(f"DELETE FROM {EVENTS} WHERE id = %s", [first.pk])
    sql(f"UPDATE {EVENTS} SET view_seq = 1 WHERE id = %s", [second.pk])
    sql(f"UPDATE {COUNTERS} SET last_view = 1 WHERE chain = %s", [org.pk])

    with pytest.raises(CommandError, match=rf"a view \(id {second.pk}\).*altered"):
        verify()


def test_an_unsealed_view_moved_to_another_organisation_is_detected(org, other_org, alice):
    view = views(org, alice, 1)[0]
    sql(f"UPDATE {EVENTS} SET chain = %s, organisation_id = %s WHERE id = %s", [other_org.pk, other_org.pk, view.pk])

    with pytest.raises(CommandError, match=rf"a view \(id {view.pk}\).*altered"):
        verify()


def test_deleting_an_unsealed_view_is_detected_before_it_is_sealed(org, alice):
    # Given three views that the beat has not sealed yet, and the middle one is deleted
    recorded = views(org, alice, 3)
    sql(f"DELETE FROM {EVENTS} WHERE id = %s", [recorded[1].pk])

    # Then verification finds the gap at once, with no seal and no checkpoint
    with pytest.raises(CommandError, match=rf"chain {org.pk}: view 2 is missing: it was deleted"):
        verify()


def test_deleting_the_newest_unsealed_view_is_detected_while_the_counter_counts_it(org, alice):
    recorded = views(org, alice, 3)
    sql(f"DELETE FROM {EVENTS} WHERE id = %s", [recorded[2].pk])

    with pytest.raises(CommandError, match=rf"chain {org.pk}: view 3 is missing: it was deleted"):
        verify()


def test_deleting_the_newest_unsealed_views_and_rewinding_the_counter_is_not_detected(org, alice):
    # Given the newest two views, which no later view or seal has counted yet, are deleted and the counter is
    # rewound to match: the one deletion this log cannot see (as with a chain's newest events and no checkpoint)
    recorded = views(org, alice, 4)
    sql(f"DELETE FROM {EVENTS} WHERE id IN (%s, %s)", [recorded[2].pk, recorded[3].pk])
    sql(f"UPDATE {COUNTERS} SET last_view = 2 WHERE chain = %s", [org.pk])

    assert "Activity log intact" in verify()
    # And the next view takes the deleted number: from then on the erasure cannot be told from a shorter history
    assert views(org, alice, 1)[0].view_seq == 3
    assert "Activity log intact" in verify()


def test_once_a_later_view_exists_an_earlier_one_cannot_be_deleted_unseen(org, alice):
    # Given view 2 is deleted after view 3 was written, and the counter rewound as far as it can go without
    # hiding view 3
    recorded = views(org, alice, 3)
    sql(f"DELETE FROM {EVENTS} WHERE id = %s", [recorded[1].pk])
    sql(f"UPDATE {COUNTERS} SET last_view = 3 WHERE chain = %s", [org.pk])

    with pytest.raises(CommandError, match="view 2 is missing"):
        verify()


def test_once_sealed_views_cannot_be_cut_from_the_end_by_rewinding_the_counter(org, alice):
    # Given three views are sealed, then the newest is taken out of its seal and deleted, and the counter rewound
    recorded = views(org, alice, 3)
    audit_views_seal()
    sql(f"UPDATE {EVENTS} SET sealed_by_id = NULL WHERE id = %s", [recorded[2].pk])
    sql(f"DELETE FROM {EVENTS} WHERE id = %s", [recorded[2].pk])
    sql(f"UPDATE {COUNTERS} SET last_view = 2 WHERE chain = %s", [org.pk])

    with pytest.raises(CommandError, match=rf"chain {org.pk}: view 3 is missing: it was deleted"):
        verify()


def _copy_view(view: AuditEvent) -> None:
    """The database administrator's replay: the same signed row inserted again, under a new id. They drop the
    unique index that would refuse it first, as they can."""
    sql("DROP INDEX IF EXISTS auditevent_unique_chain_view_seq")
    columns = [f.column for f in AuditEvent._meta.concrete_fields if f.column not in ("id", "sealed_by_id")]
    listed = ", ".join(columns)
    sql(f"INSERT INTO {EVENTS} ({listed}) SELECT {listed} FROM {EVENTS} WHERE id = %s", [view.pk])


@pytest.mark.parametrize("sealed", [False, True], ids=["unsealed", "sealed"])
def test_a_replayed_copy_of_a_view_is_detected(org, alice, sealed):
    # Given a copy of an old view re-inserted, while the original is still unsealed or after it was sealed
    recorded = views(org, alice, 3)
    if sealed:
        audit_views_seal()
    _copy_view(recorded[0])

    with pytest.raises(CommandError, match=rf"chain {org.pk}: view 1 is there 2 times .*a copy was inserted"):
        verify()


def test_a_view_deleted_and_inserted_again_under_a_new_id_changes_nothing(org, alice):
    recorded = views(org, alice, 2)
    _copy_view(recorded[0])
    sql(f"DELETE FROM {EVENTS} WHERE id = %s", [recorded[0].pk])

    assert "Activity log intact: 0 events in 0 chains, 2 views" in verify()


def test_the_seal_records_the_gaps_and_copies_it_finds(org, alice, caplog):
    # Given one view deleted in the middle, the newest deleted, and a copy of the first inserted
    recorded = views(org, alice, 5)
    sql(f"DELETE FROM {EVENTS} WHERE id IN (%s, %s)", [recorded[1].pk, recorded[4].pk])
    _copy_view(recorded[0])

    # When the beat seals them
    assert audit_views_seal() == 4

    # Then the signed seal says what was missing and what was there twice, and verification reports it
    seal = AuditEvent.objects.get(action="audit.seal")
    assert seal.detail["views_through"] == 5
    assert seal.detail["missing"] == [[2, 2], [5, 5]] and seal.detail["duplicates"] == [1]
    assert "view numbers missing: 2, 5; held more than once: 1." in caplog.text
    with pytest.raises(CommandError, match=rf"event {seal.seq} of chain {org.pk}.*found views 2, 5 missing"):
        verify()


def test_a_seal_counts_views_even_when_every_pending_one_was_deleted(org, alice):
    recorded = views(org, alice, 2)
    audit_views_seal()
    newest = views(org, alice, 2)
    sql(f"DELETE FROM {EVENTS} WHERE id IN (%s, %s)", [newest[0].pk, newest[1].pk])

    assert audit_views_seal() == 0
    seal = AuditEvent.objects.filter(action="audit.seal").order_by("-seq").first()
    assert (seal.detail["views"], seal.detail["views_through"], seal.detail["missing"]) == (0, 4, [[3, 4]])
    assert recorded[0].view_seq == 1


def test_a_rolled_back_view_leaves_no_gap(org, alice):
    # Given a view recorded inside a transaction that is then rolled back
    views(org, alice, 1)
    with pytest.raises(RuntimeError), transaction.atomic():
        views(org, alice, 1)
        raise RuntimeError("the request failed")

    # Then its number is given to the next view, and the log verifies
    assert views(org, alice, 1)[0].view_seq == 2
    assert "Activity log intact: 0 events in 0 chains, 2 views (2 not sealed yet)" in verify()


@pytest.mark.postgresql_only("Row locks need PostgreSQL; SQLite locks the whole database.")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("first_commits", [True, False], ids=["commit", "rollback"])
def test_concurrent_views_get_consecutive_numbers_and_the_sealer_sees_no_false_gap(org, alice, bob, first_commits):
    from django.db import connections

    from tests.conftest import wait_for

    # Given view 1 is committed, and one reviewer's request has recorded view 2 but not committed yet
    views(org, alice, 1)
    recorded, release, errors, pids = threading.Event(), threading.Event(), [], []

    def first_request() -> None:
        try:
            with transaction.atomic():
                views(org, alice, 1)
                recorded.set()
                assert release.wait(30)
                if not first_commits:
                    raise RuntimeError("the first request fails")
        except RuntimeError:
            pass
        except BaseException as error:
            errors.append(error)
        finally:
            recorded.set()
            connections.close_all()

    def second_request() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids.append(cursor.fetchone()[0])
            views(org, bob, 1)
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    first = threading.Thread(target=first_request)
    first.start()
    assert recorded.wait(30)
    second = threading.Thread(target=second_request)
    second.start()

    def second_waits_for_the_counter() -> bool:
        if not pids:
            return False
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted", [pids[0]])
            return cursor.fetchone() is not None

    try:
        # When another reviewer's request records a view meanwhile, it waits for the counter
        wait_for(second_waits_for_the_counter, timeout=30, message="the second view to wait for the counter")
        # And the beat seals now: it seals view 1 and sees no gap, though view 2 is taken and not yet committed
        assert audit_views_seal() == 1
        assert "missing" not in AuditEvent.objects.get(action="audit.seal").detail
    finally:
        release.set()
        first.join(30)
        second.join(30)
    assert not errors, errors

    # Then the second view took the next number after the first committed, or the first's number if it rolled back
    numbers = sorted(AuditEvent.objects.filter(action="media.face").values_list("view_seq", "actor__username"))
    assert numbers == ([(1, "alice"), (2, "alice"), (3, "bob")] if first_commits else [(1, "alice"), (2, "bob")])
    audit_views_seal()
    assert "Activity log intact" in verify()


# Actors are kept


def test_a_user_the_log_names_cannot_be_deleted(alice, events):
    with pytest.raises(ProtectedError):
        alice.delete()


def test_the_admin_deactivates_rather_than_deletes_a_user_with_events(client, alice, events):
    from django.contrib.auth import get_user_model

    root = get_user_model().objects.create_superuser("root", "root@example.org", "a-long-password-2026")
    client.force_login(root)

    refused = client.post(f"/admin/auth/user/{alice.pk}/delete/", {"post": "yes"}, follow=True)
    deactivated = client.post(
        "/admin/auth/user/", {"action": "deactivate", "_selected_action": [alice.pk]}, follow=True
    )

    alice.refresh_from_db()
    assert refused.status_code == 200 and "cannot be deleted: the activity log names them" in refused.content.decode()
    assert deactivated.status_code == 200 and alice.is_active is False
    assert AuditEvent.objects.filter(action="user.deactivate", target_id=str(alice.pk), actor=root).exists()
    assert "delete_selected" not in client.get("/admin/auth/user/").content.decode()


def test_the_admin_log_is_read_only(client, dana, events):
    client.force_login(dana)

    listing = client.get("/admin/portal/auditevent/?action=test.1")
    edit = client.post(f"/admin/portal/auditevent/{events[0].pk}/change/", {"action": "x"})

    assert listing.status_code == 200 and "test.1" in listing.content.decode()
    assert edit.status_code == 403
    assert client.post(f"/admin/portal/auditevent/{events[0].pk}/delete/", {"post": "yes"}).status_code == 403


# Checkpoints: on demand and on the beat


def test_the_export_command_writes_a_signed_checkpoint(events, tmp_path, capsys):
    call_command("export_audit_checkpoint", "--to", str(tmp_path))

    [(name, document)] = checkpoints_read(str(tmp_path))
    assert f"Checkpoint written: {name}" in capsys.readouterr().out
    assert document["heads"] == [{"chain": events[0].chain, "seq": 5, "hash": events[4].hash}]


def test_the_beat_seals_views_and_exports_checkpoints(settings, org, alice, checkpoints):
    from portal import tasks

    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    audit_view_record(action="media.photo", actor=alice, organisation=org)

    assert {"portal.tasks.audit_views_seal", "portal.tasks.audit_checkpoint_export"} <= schedule
    assert tasks.audit_views_seal.apply().get() == 1
    name = tasks.audit_checkpoint_export.apply().get()
    assert FileSystemStorage(location=str(checkpoints)).exists(name)


# Migrating an existing log


def _legacy_log(apps, *, tamper: bool) -> int:
    """Rows as the old code wrote them: one global SHA-256 chain over two organisations and none."""
    Organisation = apps.get_model("portal", "Organisation")
    AuditEvent = apps.get_model("portal", "AuditEvent")
    AuditChainHead = apps.get_model("portal", "AuditChainHead")
    User = apps.get_model("auth", "User")
    acme = Organisation.objects.create(name="Acme", slug="acme")
    other = Organisation.objects.create(name="Other", slug="other")
    alice = User.objects.create(username="alice")
    prev = "0" * 64
    for seq, organisation in enumerate([acme, other, None, acme, other, acme], start=1):
        event = AuditEvent(
            seq=seq, prev_hash=prev, organisation=organisation, actor=alice, action=f"legacy.{seq}",
            detail={"n": seq},
        )  # fmt: skip
        event.save()
        payload = {
            "seq": seq, "prev": prev, "created_at": event.created_at.isoformat(),
            "organisation_id": event.organisation_id, "actor_id": event.actor_id, "action": event.action,
            "target_type": "", "target_id": "", "detail": event.detail,
        }  # fmt: skip
        event.hash = hashlib.sha256(_canonical(payload)).hexdigest()
        event.save(update_fields=["hash"])
        prev = event.hash
    AuditChainHead.objects.update_or_create(pk=1, defaults={"last_seq": 6, "last_hash": prev})
    if tamper:
        AuditEvent.objects.filter(seq=2).update(action="legacy.innocent")
    return acme.pk


@pytest.mark.parametrize("tamper", [False, True], ids=["honest", "already-tampered"])
@pytest.mark.django_db(transaction=True)
def test_the_migration_rechains_an_existing_log_per_organisation(tamper):
    from django.db.migrations.executor import MigrationExecutor

    # Given a log written by the old code, with the schema before this change
    before = [("portal", "0007_invitations_and_use_case")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    acme = _legacy_log(executor.loader.project_state(before).apps, tamper=tamper)

    # When the database is migrated
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    # Then every chain verifies under the HMAC key, Acme's events form a chain of their own in the old order,
    # and the re-anchoring is itself logged with what the old chain's check found
    assert audit_chain_verify().intact
    acme_actions = list(AuditEvent.objects.filter(chain=acme).order_by("seq").values_list("action", flat=True))
    assert acme_actions[0] == "legacy.1" and acme_actions[1:] == ["legacy.4", "legacy.6"]
    note = AuditEvent.objects.get(action="audit.rechain")
    assert note.chain == 0 and note.detail["legacy_events"] == 6
    assert note.detail["legacy_verified"] is (not tamper)
    assert ("event 2" in note.detail["legacy_problem"]) is tamper


def test_verify_reads_the_checkpoints_from_the_configured_storage(events, checkpoints):
    audit_checkpoint_export()
    sql(f"DELETE FROM {EVENTS} WHERE id = %s", [events[4].pk])
    sql(f"UPDATE {HEADS} SET last_seq = 4, last_hash = %s WHERE chain = %s", [events[3].hash, events[3].chain])

    with pytest.raises(CommandError, match="recorded 5 events, the chain now holds 4"):
        verify(None, "--stored-checkpoints")


def test_checkpoints_go_to_the_s3_bucket_when_one_is_configured():
    import os
    import subprocess
    import sys

    from django.conf import settings

    # Given a media bucket is configured (boto3 is not imported: only the storage's settings are read)
    env = {**os.environ, "AWS_STORAGE_BUCKET_NAME": "portal-media", "DJANGO_SETTINGS_MODULE": "portal.settings"}
    code = "from django.conf import settings as s; c = s.STORAGES['audit_checkpoints']; "
    code += "print(c['BACKEND'], c['OPTIONS']['bucket_name'], c['OPTIONS']['location'])"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.stdout.split() == ["storages.backends.s3.S3Storage", "portal-media", "audit-checkpoints"]
