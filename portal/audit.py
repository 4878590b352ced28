"""The activity log: append-only, one HMAC-keyed hash chain per organisation, checkpointed outside the database.

Each organisation's events form their own chain (events with no organisation form chain 0), so that writers
in one organisation never wait on another's. Every row's hash is an HMAC-SHA256 under a key that lives in the
environment (AUDIT_LOG_KEYS, newest first), not in the database, and each row names the key it was signed with,
so that old rows still verify after a rotation. A database administrator can therefore neither forge a row nor
rehash the chain after an edit. What the key does not prevent, dropping the newest events and rewinding the head,
is caught by checkpoints: signed copies of every chain's head, exported to a file path or bucket the database
cannot rewrite (`audit_checkpoint_export`, on a beat and by `manage.py export_audit_checkpoint`).

Views of photos and crops are the bulk of the log (a queue page shows fifty thumbnails). They are recorded
without taking the chain's lock: each one is a signed row of its own, and `audit_views_seal` folds the pending
ones into their organisation's chain in batches (a seal event carries their count and a digest), so that a
deleted or altered view is caught once its batch is sealed, which happens before every checkpoint.

Until then a view's number proves it: each takes the next number of its chain's run of views, inside its signed
bytes, from a counter row (`AuditViewCounter`) locked until the view commits. Views therefore commit in the
order of their numbers, and a view rolled back gives its number back, so a committed chain's views are always
numbered 1 to the counter: a missing number is a deleted view, a repeated one an inserted copy. The seal and
`verify_audit_log` both check it. Only the newest views, deleted together with a rewind of the counter before
any seal has counted them, leave no trace (README, "Tamper-evident activity log").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection, models, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from portal.models import AuditChainHead, AuditEvent, AuditViewCounter, Organisation

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
NO_ORGANISATION = 0
SEAL_ACTION = "audit.seal"
# Views sealed by one seal event at most; a backlog is sealed in several.
SEAL_BATCH = 5000
CHECKPOINT_VERSION = 1


class AuditKeyError(ValueError):
    """A row or checkpoint names a key that is not configured."""


# Keys


def _key_id(secret: bytes) -> str:
    # Derived, not chosen, so that a key cannot be listed under the wrong name; it reveals nothing of the key.
    return hashlib.sha256(b"audit-log-key-id:" + secret).hexdigest()[:12]


@cache
def _keys(configured: tuple[str, ...], secret_key: str) -> tuple[tuple[str, bytes], ...]:
    secrets = [k.encode() for k in configured] or [hashlib.sha256(f"audit-log:{secret_key}".encode()).digest()]
    return tuple((_key_id(secret), secret) for secret in secrets)


def audit_keys() -> tuple[tuple[str, bytes], ...]:
    """(key id, secret) for every configured key, newest first. Locally a key is derived from SECRET_KEY."""
    configured = tuple(k.strip() for k in getattr(settings, "AUDIT_LOG_KEYS", []) if k.strip())
    return _keys(configured, settings.SECRET_KEY)


def _secret(key_id: str) -> bytes:
    for candidate, secret in audit_keys():
        if candidate == key_id:
            return secret
    raise AuditKeyError(f"signed with key {key_id or '(none)'}, which is not among the configured AUDIT_LOG_KEYS")


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False).encode()


def _mac(key_id: str, payload: dict[str, Any]) -> str:
    return hmac.new(_secret(key_id), _canonical(payload), hashlib.sha256).hexdigest()


def event_payload(event: AuditEvent) -> dict[str, Any]:
    """What a row's hash covers: its place in its chain (or a view's number), the key that signed it, and all of
    its content. Views written before views were numbered keep their version 2 payload."""
    payload = {
        "v": 2,
        "chain": event.chain,
        "seq": event.seq,
        "prev": event.prev_hash,
        "key": event.key_id,
        "created_at": event.created_at.isoformat(),
        "organisation_id": event.organisation_id,
        "actor_id": event.actor_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "detail": event.detail,
    }
    if event.view_seq is not None:
        payload.update(v=3, view=event.view_seq)
    return payload


def event_hash(event: AuditEvent) -> str:
    """HMAC-SHA256, under the key the row names, of the row's canonical JSON."""
    return _mac(event.key_id, event_payload(event))


# Writing


def chain_of(organisation_id: int | None) -> int:
    return organisation_id or NO_ORGANISATION


def _event_new(
    *,
    action: str,
    actor: Any,
    organisation: Organisation | None,
    organisation_id: int | None,
    target: models.Model | None,
    detail: dict[str, Any] | None,
) -> AuditEvent:
    organisation_id = organisation.pk if organisation is not None else organisation_id
    return AuditEvent(
        chain=chain_of(organisation_id),
        key_id=audit_keys()[0][0],
        action=action,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        organisation_id=organisation_id,
        target_type=target._meta.label if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        # Round-trip through JSON now, so the hash covers exactly what the database will hand back.
        detail=json.loads(json.dumps(detail or {}, default=str)),
        created_at=timezone.now(),
    )


def _head_lock(chain: int) -> AuditChainHead:
    # The lock is per chain: one organisation's writers never wait on another's.
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(chain=chain)
    return head


def _append(head: AuditChainHead, event: AuditEvent) -> AuditEvent:
    event.seq = head.last_seq + 1
    event.prev_hash = head.last_hash or GENESIS
    event.hash = event_hash(event)
    event.save()
    head.last_seq, head.last_hash = event.seq, event.hash
    head.save(update_fields=["last_seq", "last_hash"])
    return event


# How a row's detail reads to one viewer, by target type. The app that owns a target registers a view (reviews
# hides decisions from whoever may still decide the candidate); portal cannot import it, so it asks here.
DetailView = Callable[[Any, AuditEvent], dict[str, Any]]
_detail_views: dict[str, DetailView] = {}


def audit_detail_view_register(target_type: str, view: DetailView) -> None:
    _detail_views[target_type] = view


# Which rows one viewer may not see at all, even without their detail: that a row exists can say too much (a
# decision on a candidate the viewer may still decide tells them that someone has decided). The owning app
# registers a rule that returns the rows to leave out, as a Q, or None when it leaves out nothing.
RowsHidden = Callable[[Any], Q | None]
_rows_hidden: list[RowsHidden] = []


def audit_rows_hidden_register(rule: RowsHidden) -> None:
    _rows_hidden.append(rule)


def audit_events_for(user: Any, events: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
    """The rows of `events` this user may see listed."""
    for rule in _rows_hidden:
        hidden = rule(user)
        if hidden is not None:
            events = events.exclude(hidden)
    return events


def audit_detail_for(user: Any, event: AuditEvent) -> dict[str, Any]:
    """The row's detail as this user may read it. The stored row, and its hash, are never changed."""
    view = _detail_views.get(event.target_type)
    return view(user, event) if view is not None else event.detail


@transaction.atomic
def audit_record(
    *,
    action: str,
    actor: Any = None,
    organisation: Organisation | None = None,
    organisation_id: int | None = None,
    target: models.Model | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to its organisation's chain. Call it inside the service's transaction, so the row
    commits with the change; it holds that organisation's chain lock until then."""
    event = _event_new(
        action=action, actor=actor, organisation=organisation, organisation_id=organisation_id, target=target,
        detail=detail,
    )  # fmt: skip
    return _append(_head_lock(event.chain), event)


def _view_numbers(chain: int, count: int) -> int:
    """Take the next `count` numbers of the chain's run of views; returns the first.

    The counter's row stays locked until the caller's transaction ends, so the next view waits for this one to
    commit or roll back: numbers are never shared, views commit in their order, and a rolled-back number is
    taken again. Call it outside long transactions, and after any chain lock the transaction takes: one that
    took the counter and then a chain lock could deadlock with one that did the reverse.
    """
    # One statement takes the lock and the numbers (a read and then a write would be two round trips on every
    # page and image view); the ORM's update() cannot return the new value. A chain's first view creates its row.
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {AuditViewCounter._meta.db_table} SET last_view = last_view + %s WHERE chain = %s "
            "RETURNING last_view",
            [count, chain],
        )
        row = cursor.fetchone()
    if row is not None:
        return row[0] - count + 1
    counter, _ = AuditViewCounter.objects.select_for_update().get_or_create(chain=chain)
    first = counter.last_view + 1
    counter.last_view += count
    counter.save(update_fields=["last_view"])
    return first


@transaction.atomic
def audit_view_record(
    *,
    action: str,
    actor: Any,
    organisation: Organisation | None = None,
    organisation_id: int | None = None,
    target: models.Model | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Record that someone looked at something: one signed INSERT and the view counter, no chain lock.
    `audit_views_seal` chains it later.

    For reads that change nothing (an image, a page), where a chain lock per request would serialise every
    reader of the organisation behind its writers.
    """
    organisation_id = organisation.pk if organisation is not None else organisation_id
    number = _view_numbers(chain_of(organisation_id), 1)
    event = _event_new(
        action=action, actor=actor, organisation=None, organisation_id=organisation_id, target=target, detail=detail
    )
    event.view_seq = number
    event.hash = event_hash(event)
    event.save()
    return event


@transaction.atomic
def audit_views_record(*, action: str, actor: Any, organisation_id: int, targets: Iterable[models.Model]) -> int:
    """Record that someone looked at several things at once (a queue page's thumbnails): one INSERT of signed
    rows and the view counter, no chain lock, one row per target as if each had been viewed alone."""
    targets = list(targets)
    if not targets:
        return 0
    number = _view_numbers(chain_of(organisation_id), len(targets))
    events = []
    for offset, target in enumerate(targets):
        event = _event_new(
            action=action, actor=actor, organisation=None, organisation_id=organisation_id, target=target, detail=None
        )
        event.view_seq = number + offset
        event.hash = event_hash(event)
        events.append(event)
    AuditEvent.objects.bulk_create(events)
    return len(events)


def _views_digest(rows: Iterable[tuple[int, str]]) -> str:
    digest = hashlib.sha256()
    for pk, row_hash in rows:
        digest.update(f"{pk}:{row_hash}\n".encode())
    return digest.hexdigest()


def _numbers_text(runs: Iterable[Iterable[int]]) -> str:
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _views_sealed_through(chain: int) -> int:
    """The highest view number a seal of this chain has counted (0 before any seal counted numbered views)."""
    through = (
        AuditEvent.objects.filter(chain=chain, seq__isnull=False, action=SEAL_ACTION, detail__has_key="views_through")
        .order_by("-seq")
        .values_list("detail__views_through", flat=True)
        .first()
    )
    return int(through or 0)


def _views_counted(chain: int) -> int:
    return AuditViewCounter.objects.filter(chain=chain).values_list("last_view", flat=True).first() or 0


def _pending_views(chain: int) -> bool:
    """Whether the chain has views to seal, or numbers counted that no seal has accounted for (cheap, no lock)."""
    pending = AuditEvent.objects.filter(chain=chain, seq__isnull=True, sealed_by__isnull=True)
    return pending.exists() or _views_counted(chain) > _views_sealed_through(chain)


@transaction.atomic
def _seal_batch(chain: int) -> int:
    head = _head_lock(chain)
    # Under the chain's lock, so that two sealers never take the same views. The counter is read before the
    # views: views commit in the order of their numbers, so every view it counts is visible to the next query,
    # and a view still being committed is neither counted nor seen; it waits for the next seal.
    base = _views_sealed_through(chain)
    counted = _views_counted(chain)
    rows = list(
        AuditEvent.objects.filter(chain=chain, seq__isnull=True, sealed_by__isnull=True)
        .order_by(models.F("view_seq").asc(nulls_first=True), "id")
        .values_list("id", "hash", "view_seq")[:SEAL_BATCH]
    )
    numbers = [n for _, _, n in rows if n is not None]
    # A full batch may stop short of the counter; the rest is the next batch's.
    through = max([base, *numbers] if len(rows) == SEAL_BATCH else [base, counted, *numbers])
    if not rows and through == base:
        return 0
    present = Counter(numbers)
    missing, expected = [], base + 1
    for n in sorted(n for n in present if n > base):
        if n > expected:
            missing.append([expected, n - 1])
        expected = n + 1
    if through >= expected:
        missing.append([expected, through])
    duplicates = sorted(n for n, times in present.items() if n <= base or times > 1)
    detail: dict[str, Any] = {"views": len(rows), "views_through": through}
    if rows:
        detail.update(first_id=rows[0][0], last_id=rows[-1][0], digest=_views_digest((pk, h) for pk, h, _ in rows))
    if missing:
        detail["missing"] = missing
    if duplicates:
        detail["duplicates"] = duplicates
    if missing or duplicates:
        logger.error(
            "Activity log, chain %s: view numbers missing: %s; held more than once: %s. Views were deleted or "
            "copied; sealed as found, and verify_audit_log reports it.",
            chain,
            _numbers_text(missing) or "none",
            _numbers_text([n, n] for n in duplicates) or "none",
        )
    seal = _event_new(
        action=SEAL_ACTION, actor=None, organisation=None, organisation_id=chain or None, target=None, detail=detail
    )
    _append(head, seal)
    AuditEvent.objects.filter(id__in=[pk for pk, _, _ in rows]).update(sealed_by=seal)
    return len(rows)


def audit_views_seal(*, chain: int | None = None) -> int:
    """Fold every pending view into its chain, one seal event per batch. Returns how many views were sealed.

    A seal also accounts for the numbers no view holds any more (deleted) or that two views hold (a copy), so
    that the signed chain records them."""
    if chain is None:
        chains = set(
            AuditEvent.objects.filter(seq__isnull=True, sealed_by__isnull=True)
            .values_list("chain", flat=True)
            .distinct()
        )
        chains |= set(AuditViewCounter.objects.values_list("chain", flat=True))
        return sum(audit_views_seal(chain=c) for c in sorted(chains))
    if not _pending_views(chain):
        return 0
    sealed = 0
    while batch := _seal_batch(chain):
        sealed += batch
    return sealed


# Checkpoints


def checkpoint_storage():
    from django.core.files.storage import storages

    return storages["audit_checkpoints"]


def _checkpoint_signature(document: dict[str, Any]) -> str:
    unsigned = {k: v for k, v in document.items() if k != "signature"}
    return _mac(document.get("key_id", ""), unsigned)


def audit_checkpoint_document() -> dict[str, Any]:
    """Every chain's head as it stands (after sealing pending views), signed with the newest key."""
    audit_views_seal()
    heads = [
        {"chain": head.chain, "seq": head.last_seq, "hash": head.last_hash}
        for head in AuditChainHead.objects.filter(last_seq__gt=0).order_by("chain")
    ]
    document = {
        "version": CHECKPOINT_VERSION,
        "created_at": timezone.now().isoformat(),
        "key_id": audit_keys()[0][0],
        "heads": heads,
    }
    document["signature"] = _checkpoint_signature(document)
    return document


def audit_checkpoint_export(*, storage: Any = None) -> str:
    """Write a signed checkpoint to the checkpoint storage (AUDIT_CHECKPOINT_DIR, or the S3 bucket). Returns its
    name. Never overwrites: each export is a new file, so that an older checkpoint cannot be replaced."""
    document = audit_checkpoint_document()
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S%fZ")
    content = ContentFile(json.dumps(document, indent=1, sort_keys=True).encode())
    return (storage or checkpoint_storage()).save(f"audit-checkpoint-{stamp}.json", content)


# Verifying


@dataclass(frozen=True)
class ChainBreak:
    chain: int | None
    seq: int | None
    event_id: int | None
    problem: str

    def where(self) -> str:
        if self.event_id is not None:
            place = f"event {self.seq} of chain {self.chain}" if self.seq is not None else "a view"
            return f"{place} (id {self.event_id})"
        return f"chain {self.chain}" if self.chain is not None else "a checkpoint"


@dataclass
class Verification:
    events: int = 0
    views: int = 0
    unsealed_views: int = 0
    chains: int = 0
    checkpoints: int = 0
    breaks: list[ChainBreak] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.breaks


def _mac_problem(event: AuditEvent) -> str | None:
    try:
        expected = event_hash(event)
    except AuditKeyError as error:
        return f"it was {error}"
    if not hmac.compare_digest(expected, event.hash):
        return "its content does not match its HMAC: it was altered, or rehashed without the key"
    return None


def checkpoint_check(document: dict[str, Any]) -> str | None:
    """Why a checkpoint cannot be trusted, or None if it carries a valid signature."""
    if document.get("version") != CHECKPOINT_VERSION or not isinstance(document.get("heads"), list):
        return "it is not an audit checkpoint this portal writes"
    try:
        expected = _checkpoint_signature(document)
    except AuditKeyError as error:
        return f"it is {error}"
    if not hmac.compare_digest(expected, str(document.get("signature", ""))):
        return "its signature does not match: it was altered, or not written by this portal"
    return None


def audit_chain_verify(checkpoints: Iterable[tuple[str, dict[str, Any]]] = ()) -> Verification:
    """Walk every chain, every view and every seal; then hold each chain to every checkpoint given.

    `checkpoints` are (name, document) pairs. A chain is broken by a row whose HMAC does not match (an edit, or
    a rehash without the key), a gap or a wrong link (a deletion or insertion), a head that disagrees with the
    last row, a seal whose views no longer add up, and a checkpoint whose head the chain no longer contains
    (a truncation, or a rewrite by someone holding the key).
    """
    result = Verification()
    broken_chains: set[int] = set()

    def fail(chain: int | None, seq: int | None, event_id: int | None, problem: str) -> None:
        result.breaks.append(ChainBreak(chain, seq, event_id, problem))
        if chain is not None:
            broken_chains.add(chain)

    # What the checkpoints say each chain held: {chain: {seq: [(checkpoint name, hash)]}}.
    wanted: dict[int, dict[int, list[tuple[str, str]]]] = {}
    for name, document in checkpoints:
        problem = checkpoint_check(document)
        if problem is not None:
            fail(None, None, None, f"checkpoint {name}: {problem}")
            continue
        result.checkpoints += 1
        for head in document["heads"]:
            if head["seq"]:
                wanted.setdefault(head["chain"], {}).setdefault(head["seq"], []).append((name, head["hash"]))

    heads = {head.chain: head for head in AuditChainHead.objects.all()}
    seals: dict[int, dict[str, Any]] = {}
    # The highest view number each chain's seals counted: its views must reach it, whatever the counter says.
    claimed: dict[int, int] = {}
    lengths: dict[int, int] = {}
    last_hashes: dict[int, str] = {}
    chain, prev, expected_seq = None, GENESIS, 1
    chained = AuditEvent.objects.filter(seq__isnull=False).order_by("chain", "seq")
    for event in chained.iterator(chunk_size=2000):
        if event.chain != chain:
            chain, prev, expected_seq = event.chain, GENESIS, 1
            result.chains += 1
        if chain in broken_chains:
            continue
        if event.seq != expected_seq:
            fail(chain, event.seq, event.pk, f"expected event {expected_seq} next, found {event.seq}: "
                 "an event was deleted or inserted")  # fmt: skip
            continue
        if event.chain != chain_of(event.organisation_id):
            fail(chain, event.seq, event.pk, "it was moved from another organisation's chain")
            continue
        problem = _mac_problem(event) or (
            "its link to the previous event does not match" if event.prev_hash != prev else None
        )
        if problem:
            fail(chain, event.seq, event.pk, problem)
            continue
        for checkpoint, recorded in wanted.get(chain, {}).pop(event.seq, []):
            if recorded != event.hash:
                fail(chain, event.seq, event.pk, f"it differs from checkpoint {checkpoint}: the chain was rewritten")
        if event.action == SEAL_ACTION:
            seals[event.pk] = event.detail
            claimed[chain] = max(claimed.get(chain, 0), int(event.detail.get("views_through") or 0))
            found = _seal_findings(event.detail)
            if found:
                # The seal itself is sound, and so is the rest of its chain: only what it found is reported.
                result.breaks.append(ChainBreak(chain, event.seq, event.pk, found))
        prev, expected_seq = event.hash, expected_seq + 1
        lengths[chain], last_hashes[chain] = event.seq, event.hash
        result.events += 1

    for chain_id in sorted(set(heads) | set(lengths) | set(wanted)):
        if chain_id in broken_chains:
            continue
        length = lengths.get(chain_id, 0)
        head = heads.get(chain_id)
        if head is None and length:
            fail(chain_id, None, None, f"its head row is missing ({length} events)")
        elif head is not None and head.last_seq != length:
            fail(chain_id, None, None, f"its head records {head.last_seq} events but the chain holds {length}")
        elif head is not None and length and head.last_hash != last_hashes[chain_id]:
            fail(chain_id, None, None, "its head's hash is not the hash of its last event")
        for seq, records in sorted(wanted.get(chain_id, {}).items()):
            if seq > length:
                fail(chain_id, None, None, f"checkpoint {records[0][0]} recorded {seq} events, the chain now holds "
                     f"{length}: events were deleted from its end")  # fmt: skip
                break

    _views_verify(result, seals, fail)
    _view_numbers_verify(claimed, lambda chain, problem: fail(chain, None, None, problem))
    return result


def _seal_findings(detail: dict[str, Any]) -> str | None:
    missing, copied = detail.get("missing"), detail.get("duplicates")
    if not (missing or copied):
        return None
    found = []
    if missing:
        found.append(f"views {_numbers_text(missing)} missing")
    if copied:
        found.append(f"views {_numbers_text([n, n] for n in copied)} there more than once")
    return f"when it sealed its views it found {' and '.join(found)}: they were deleted or copied before the seal"


def _view_numbers_verify(claimed: dict[int, int], report: Callable[[int, str], None]) -> None:
    """Every chain's views numbered 1, 2, 3... with none missing and none twice, up to the highest number its
    counter or any of its seals counted. Sealed or not: a view is accounted for from the moment it is written."""
    from itertools import groupby
    from operator import itemgetter

    counters = dict(AuditViewCounter.objects.values_list("chain", "last_view"))

    def missing(chain: int, first: int, last: int) -> None:
        if first == last:
            report(chain, f"view {first} is missing: it was deleted")
        else:
            report(chain, f"views {first}-{last} are missing: they were deleted")

    def tail(chain: int, newest: int) -> None:
        counted = counters.get(chain)
        if max(counted or 0, claimed.get(chain, 0)) > newest:
            missing(chain, newest + 1, max(counted or 0, claimed.get(chain, 0)))
        if counted is None and newest:
            report(chain, f"its view counter is missing; its views go up to {newest}")
        elif counted is not None and counted < newest:
            report(chain, f"its view counter says {counted} views, but view {newest} exists: the counter was rewound")

    numbered = (
        AuditEvent.objects.filter(seq__isnull=True, view_seq__isnull=False)
        .order_by("chain", "view_seq", "id")
        .values_list("chain", "view_seq", "id")
    )
    seen: set[int] = set()
    for chain, rows in groupby(numbered.iterator(chunk_size=5000), key=itemgetter(0)):
        seen.add(chain)
        newest = 0
        for number, same in groupby(rows, key=itemgetter(1)):
            ids = [pk for _, _, pk in same]
            if number > newest + 1:
                missing(chain, newest + 1, number - 1)
            if len(ids) > 1:
                listed = ", ".join(map(str, ids))
                report(chain, f"view {number} is there {len(ids)} times (ids {listed}): a copy was inserted")
            newest = number
        tail(chain, newest)
    for chain in sorted((set(counters) | set(claimed)) - seen):
        tail(chain, 0)


def _views_verify(result: Verification, seals: dict[int, dict[str, Any]], fail) -> None:
    """Every view's own HMAC, then every seal against the views that name it, in one pass."""
    views = AuditEvent.objects.filter(seq__isnull=True).order_by("sealed_by_id", "id")
    current, rows = None, []

    def close(seal_id: int | None, rows: list[tuple[int, str]]) -> None:
        if seal_id is None:
            return
        seal = seals.pop(seal_id, None)
        if seal is None:
            fail(None, None, rows[0][0], f"it names seal {seal_id}, which is not a valid seal in any chain")
        elif seal.get("views") != len(rows) or seal.get("digest") != _views_digest(rows):
            fail(None, None, seal_id, f"seal {seal_id} covered {seal.get('views')} views, {len(rows)} now name it "
                 "or their content changed: views were deleted, moved or altered")  # fmt: skip

    for view in views.iterator(chunk_size=5000):
        if view.sealed_by_id != current:
            close(current, rows)
            current, rows = view.sealed_by_id, []
        problem = _mac_problem(view)
        if problem is None and view.chain != chain_of(view.organisation_id):
            problem = "it was moved from another organisation's chain"
        if problem:
            fail(None, None, view.pk, problem)
        result.views += 1
        if view.sealed_by_id is None:
            result.unsealed_views += 1
        rows.append((view.pk, view.hash))
    close(current, rows)
    for seal_id, seal in seals.items():
        if seal.get("views"):
            fail(None, None, seal_id, f"seal {seal_id} covered {seal['views']} views and none are left: "
                 "they were deleted")  # fmt: skip


def checkpoints_read(path: str) -> list[tuple[str, dict[str, Any]]]:
    """Checkpoint documents from a file, or from every *.json file in a folder, oldest first."""
    from pathlib import Path

    root = Path(path)
    files = sorted(root.glob("*.json")) if root.is_dir() else [root]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"No checkpoint files at {path}.")
    documents = []
    for file in files:
        try:
            documents.append((file.name, json.loads(file.read_text())))
        except (ValueError, UnicodeDecodeError):
            documents.append((file.name, {}))
    return documents


def checkpoints_stored(storage: Any = None) -> list[tuple[str, dict[str, Any]]]:
    """Every checkpoint in the checkpoint storage, through the storage API (a folder or an S3 bucket)."""
    storage = storage or checkpoint_storage()
    _, names = storage.listdir("")
    documents = []
    for name in sorted(n for n in names if n.endswith(".json")):
        with storage.open(name, "rb") as handle:
            try:
                documents.append((name, json.loads(handle.read())))
            except (ValueError, UnicodeDecodeError):
                documents.append((name, {}))
    return documents
