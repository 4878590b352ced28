"""Searching a photo's faces against the organisation's gallery: in one worker, or fanned out in shards."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from matching.engine import engine_version
from matching.models import (
    Candidate,
    Face,
    GalleryChange,
    GalleryChangeKind,
    Photo,
    PhotoStatus,
    Search,
    Subject,
)
from matching.quantised import GalleryIndex
from matching.sealing import encoding_keys, encoding_open, encodings_open
from matching.search import Hit, Shard, gallery_cache, hits_merge, shards_plan
from portal.audit import audit_record
from portal.models import Organisation

# Faces read per query while a gallery loads: decrypted and quantised chunk by chunk, never all at once.
LOAD_CHUNK = 20_000
# A shard plan is made again once this share of a shard's budget has been enrolled since it was made.
PLAN_SLACK = 0.1


def searchable_faces(organisation_id: int, version: str):
    """The faces a search may return: reference faces of the engine version, neither purged nor of an erased
    subject. `searchable_by_id` applies the same rule in Python; a change here goes there too (a test compares
    the two)."""
    return Face.objects.filter(
        organisation_id=organisation_id,
        subject__isnull=False,
        engine_version=version,
        purged_at__isnull=True,
        subject__erased_at__isnull=True,
    )


def searchable_by_id(
    organisation_id: int,
    version: str,
    face_ids: Iterable[int],
    *fields: str,
    subject_from: int | None = None,
    subject_to: int | None = None,
) -> list[tuple]:
    """(id, *fields) of those of face_ids that `searchable_faces` holds (within a shard's subject range, if
    given), read by primary key alone and then held to the same rule here.

    Asked with the organisation and the engine version beside the ids, PostgreSQL without statistics on the faces
    (a table just filled, or a server with autovacuum off) guesses those two columns to be selective, and reads
    every face of the organisation through a bitmap of their indexes: 1.1 s for 30 ids at 1M faces, where the
    primary key takes a few milliseconds. With the ids as the only condition on the faces, the primary key is
    the only plan.
    """
    ids = sorted({int(face_id) for face_id in face_ids})
    if not ids:
        return []
    columns = ("id", "organisation_id", "engine_version", "purged_at", "subject_id", "subject__erased_at")
    rows = Face.objects.filter(id__in=ids).order_by().values_list(*columns, *fields)
    width = len(columns)
    return [
        (row[0], *row[width:])
        for row in rows
        if row[1] == organisation_id
        and row[2] == version
        and row[3] is None
        and row[4] is not None
        and row[5] is None
        and (not subject_from or row[4] >= subject_from)
        and (subject_to is None or row[4] < subject_to)
    ]


def _in_shard(faces, subject_from: int | None, subject_to: int | None):
    if subject_from:
        faces = faces.filter(subject_id__gte=subject_from)
    if subject_to is not None:
        faces = faces.filter(subject_id__lt=subject_to)
    return faces


def _chunks(rows) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    batch: list[tuple[int, int, bytes]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == LOAD_CHUNK:
            yield _decrypted(batch)
            batch = []
    if batch:
        yield _decrypted(batch)


def _decrypted(rows: list[tuple[int, int, bytes]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    face_ids, subject_ids, blobs = zip(*rows, strict=True)
    return np.array(face_ids), np.array(subject_ids), encodings_open(blobs)


def gallery_index_load(
    organisation: Organisation, version: str, *, subject_from: int | None = None, subject_to: int | None = None
) -> tuple[GalleryIndex, int]:
    """The organisation's searchable faces as an index (with a subject-id range, one shard's), and the gallery
    version it holds at least.

    The version is read before the faces, so the faces include every change up to it; changes committed between
    the two reads may be in the index already, and applying them again (gallery_changes_apply) changes nothing.
    """
    position = Organisation.objects.values_list("gallery_version", flat=True).get(pk=organisation.pk)
    faces = _in_shard(searchable_faces(organisation.pk, version), subject_from, subject_to)
    expected = faces.count()
    rows = faces.order_by("id").values_list("id", "subject_id", "encoding").iterator(chunk_size=LOAD_CHUNK)
    return GalleryIndex.build(_chunks(rows), expected=expected), position


def gallery_changes_apply(
    index: GalleryIndex,
    organisation: Organisation,
    version: str,
    *,
    after: int,
    upto: int,
    subject_from: int | None = None,
    subject_to: int | None = None,
) -> int | None:
    """Bring index from gallery version `after` to `upto` with the change log; None if it cannot (a version that
    logged no change), and the caller loads the gallery again.

    Additions are read back from the faces, as searchable now (a face erased since is not added); removals mark the
    faces' rows. Both are idempotent, so a change already in the index is harmless.
    """
    changes = list(
        GalleryChange.objects.filter(organisation_id=organisation.pk, seq__gt=after, seq__lte=upto).values_list(
            "seq", "face_id", "kind"
        )
    )
    if {seq for seq, _, _ in changes} != set(range(after + 1, upto + 1)):
        return None
    added = [face_id for _, face_id, kind in changes if kind == GalleryChangeKind.ADD]
    removed = [face_id for _, face_id, kind in changes if kind == GalleryChangeKind.REMOVE]
    for start in range(0, len(added), LOAD_CHUNK):
        rows = searchable_by_id(
            organisation.pk,
            version,
            added[start : start + LOAD_CHUNK],
            "subject_id",
            "encoding",
            subject_from=subject_from,
            subject_to=subject_to,
        )
        if rows:
            index.add(*_decrypted(rows))
    if removed:
        index.remove(removed)
    return upto


def gallery_change_record(*, organisation_id: int, added: Sequence[int] = (), removed: Sequence[int] = ()) -> int:
    """Move the organisation's gallery version on by one and log the faces that entered or left its gallery.

    Called inside the transaction that adds or removes the faces: the UPDATE holds the organisation's row until it
    commits, so versions commit in order (see GalleryChange). Returns the new version.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("gallery_change_record must run inside the transaction that changes the faces.")
    Organisation.objects.filter(pk=organisation_id).update(gallery_version=F("gallery_version") + 1)
    seq = Organisation.objects.values_list("gallery_version", flat=True).get(pk=organisation_id)
    rows = [
        GalleryChange(organisation_id=organisation_id, seq=seq, face_id=face_id, kind=GalleryChangeKind.ADD)
        for face_id in added
    ] + [
        GalleryChange(organisation_id=organisation_id, seq=seq, face_id=face_id, kind=GalleryChangeKind.REMOVE)
        for face_id in removed
    ]
    GalleryChange.objects.bulk_create(
        rows or [GalleryChange(organisation_id=organisation_id, seq=seq, kind=GalleryChangeKind.NONE)]
    )
    return seq


def gallery_shards(organisation: Organisation, version: str) -> list[Shard]:
    """How the organisation's gallery is cut for search: one shard when it fits one worker's budget.

    Cached per process. A plan stays while the faces enrolled since it was made (counted in the change log) keep
    a single shard within the budget, or add less than a tenth of a shard's budget to a sharded gallery: new
    subjects go to the open-ended last shard. An erasure only makes shards smaller.
    """
    max_faces = settings.SEARCH_SHARD_MAX_FACES
    target = organisation.gallery_version

    def added_since(position: int) -> int:
        return GalleryChange.objects.filter(
            organisation_id=organisation.pk, seq__gt=position, kind=GalleryChangeKind.ADD
        ).count()

    def valid(plan: ShardPlan) -> bool:
        if plan.stamp != _cache_stamp(organisation):
            return False
        if plan.position >= target:
            return True
        added = added_since(plan.position)
        if len(plan.shards) == 1:
            return plan.shards[0].faces + added <= max_faces
        return added <= max_faces * PLAN_SLACK

    def make() -> ShardPlan:
        position = Organisation.objects.values_list("gallery_version", flat=True).get(pk=organisation.pk)
        faces = searchable_faces(organisation.pk, version)
        total = faces.count()
        if total <= max_faces:
            shards = [Shard(index=0, subject_from=0, subject_to=None, faces=total)]
        else:
            counts = list(faces.values_list("subject_id").annotate(n=Count("id")).order_by("subject_id"))
            subject_ids, face_counts = zip(*counts, strict=True)
            shards = shards_plan(np.array(subject_ids), np.array(face_counts), max_faces)
        return ShardPlan(stamp=_cache_stamp(organisation), position=position, shards=shards)

    return gallery_cache.plan((organisation.pk, version, max_faces), valid, make).shards


@dataclass(frozen=True)
class ShardPlan:
    stamp: str
    position: int
    shards: list[Shard]


def _cache_stamp(organisation: Organisation) -> str:
    """Which organisation row a cached index belongs to.

    SQLite hands a deleted row's id to the next row, so an id alone could name another organisation; its creation
    time tells the two apart.
    """
    return organisation.created_at.isoformat() if organisation.created_at else ""


def _keys_stamp() -> str:
    """A digest of the encoding keys: an index is loaded again when they change (its faces were read with them)."""
    return hashlib.sha256("\n".join(encoding_keys()).encode()).hexdigest()[:16]


def organisation_gallery(organisation: Organisation, shard: Shard | None = None) -> GalleryIndex:
    """The cached index of the whole gallery, or of one shard, at the organisation's gallery version (read by the
    caller at the start of its task): caught up with the change log, loaded only the first time, or when the
    engine version or the encoding keys change."""
    version = engine_version()
    subject_from = shard.subject_from if shard is not None else None
    subject_to = shard.subject_to if shard is not None else None
    key = (organisation.pk, version, _keys_stamp(), None if shard is None else (subject_from, subject_to))
    return gallery_cache.get(
        key,
        stamp=_cache_stamp(organisation),
        target=organisation.gallery_version,
        load=lambda: gallery_index_load(organisation, version, subject_from=subject_from, subject_to=subject_to),
        update=lambda index, after, upto: gallery_changes_apply(
            index, organisation, version, after=after, upto=upto, subject_from=subject_from, subject_to=subject_to
        ),
        max_faces=settings.SEARCH_SHARD_MAX_FACES if shard is not None else None,
    )


def exact_encodings(organisation_id: int, version: str) -> Callable[[np.ndarray], dict[int, np.ndarray]]:
    """What a search re-ranks with: the float64 encodings of the faces it asks for, decrypted from the database,
    of those still searchable (a face erased meanwhile is left out, and the search drops it)."""

    def fetch(face_ids: np.ndarray) -> dict[int, np.ndarray]:
        rows = searchable_by_id(organisation_id, version, face_ids, "encoding")
        return {face_id: encoding_open(blob) for face_id, blob in rows}

    return fetch


def gallery_search(
    organisation: Organisation, gallery: GalleryIndex, probes: np.ndarray, *, threshold: float, k: int
) -> list[list[Hit]]:
    """Search probes against an index of the organisation's gallery, re-ranking with its encodings."""
    return gallery.search(
        probes,
        threshold=threshold,
        k=k,
        exact=exact_encodings(organisation.pk, engine_version()),
        threads=search_threads(),
    )


def search_threads() -> int:
    """Threads for one search: SEARCH_BLAS_THREADS, 0 meaning one per core."""
    return settings.SEARCH_BLAS_THREADS if settings.SEARCH_BLAS_THREADS > 0 else (os.cpu_count() or 1)


def probe_photo_search(*, photo_id: int) -> None:
    """Search the photo's new faces against the gallery and store the results (or fan out, see below).

    A gallery within one worker's budget (SEARCH_SHARD_MAX_FACES) is searched here, in this task. A larger
    one is searched as a chord of shard tasks on the "search" queue whose callback stores the results; this
    task returns at once rather than waiting on the group, so a single worker never blocks on work that
    only it could run. Until the callback runs, the photo stays "matching" (and the stale-photo sweeper
    sends it again if the chord is lost).
    """
    photo = Photo.objects.select_related("organisation").get(id=photo_id)
    organisation = Organisation.objects.get(id=photo.organisation_id)
    # A purged face has no encoding left to search with; search_results_store finishes its photo.
    pending = list(photo.faces.filter(search__isnull=True, purged_at__isnull=True).order_by("index"))
    threshold, k = organisation.distance_threshold, organisation.max_candidates
    if not pending:
        search_results_store(
            photo_id=photo_id,
            face_hits={},
            threshold=threshold,
            max_candidates=k,
            gallery_version=organisation.gallery_version,
            gallery_faces=0,
        )
        return
    shards = gallery_shards(organisation, engine_version())
    if len(shards) > 1:
        _search_fan_out(photo_id, [face.id for face in pending], shards, organisation, threshold, k)
        return
    gallery = organisation_gallery(organisation)
    hits = gallery_search(organisation, gallery, np.stack([face.vector for face in pending]), threshold=threshold, k=k)
    search_results_store(
        photo_id=photo_id,
        face_hits={face.id: face_hits for face, face_hits in zip(pending, hits, strict=True)},
        threshold=threshold,
        max_candidates=k,
        gallery_version=organisation.gallery_version,
        gallery_faces=gallery.size,
    )


def _search_fan_out(
    photo_id: int, face_ids: list[int], shards: list[Shard], organisation: Organisation, threshold: float, k: int
) -> None:
    # Sent straight from the worker, not through the outbox: this runs in a task, not in a request's
    # transaction, and if the broker refuses the chord the task fails and the photo is retried.
    from celery import chord

    from matching.tasks import search_shard, store_search_results

    header = [
        search_shard.s(organisation.id, face_ids, shard.subject_from, shard.subject_to, threshold, k)
        for shard in shards
    ]
    chord(header)(store_search_results.s(photo_id, threshold, k, organisation.gallery_version))


def gallery_shard_search(
    *,
    organisation_id: int,
    face_ids: list[int],
    subject_from: int,
    subject_to: int | None,
    threshold: float,
    k: int,
) -> dict[str, Any]:
    """One shard's hits for the given probe faces, as JSON for the chord's callback."""
    organisation = Organisation.objects.get(id=organisation_id)  # fresh: an erasure counts at once
    faces = {face.id: face for face in Face.objects.filter(id__in=face_ids)}
    probes = [faces[i] for i in face_ids if i in faces]
    shard = Shard(index=-1, subject_from=subject_from, subject_to=subject_to, faces=0)
    gallery = organisation_gallery(organisation, shard)
    hits = (
        gallery_search(organisation, gallery, np.stack([f.vector for f in probes]), threshold=threshold, k=k)
        if probes
        else []
    )
    return {
        "faces": gallery.size,
        "hits": [
            [face.id, [[h.subject_id, h.face_id, h.distance] for h in face_hits]]
            for face, face_hits in zip(probes, hits, strict=True)
        ],
    }


def shard_results_store(
    *, photo_id: int, shard_results: list[dict[str, Any]], threshold: float, k: int, gallery_version: int
) -> None:
    """Merge the shards' top k per face (subjects never straddle shards, so this is exact) and store them."""
    per_face: dict[int, list[list[Hit]]] = {}
    for result in shard_results:
        for face_id, hits in result["hits"]:
            per_face.setdefault(face_id, []).append([Hit(int(s), int(f), float(d)) for s, f, d in hits])
    search_results_store(
        photo_id=photo_id,
        face_hits={face_id: hits_merge(parts, k) for face_id, parts in per_face.items()},
        threshold=threshold,
        max_candidates=k,
        gallery_version=gallery_version,
        gallery_faces=sum(result["faces"] for result in shard_results),
        shards=len(shard_results),
    )


def _hits_still_searchable(face_hits: dict[int, list[Hit]]) -> dict[int, list[Hit]]:
    """The hits whose gallery face is still searchable, under a lock on their subjects, ranked again from 1."""
    subject_ids = sorted({hit.subject_id for hits in face_hits.values() for hit in hits})
    if not subject_ids:
        return face_hits
    list(Subject.objects.select_for_update(no_key=True).filter(id__in=subject_ids).order_by("id").values_list("id"))
    face_ids = {hit.face_id for hits in face_hits.values() for hit in hits}
    live = set(
        Face.objects.filter(id__in=face_ids, purged_at__isnull=True, subject__erased_at__isnull=True).values_list(
            "id", flat=True
        )
    )
    return {face_id: [hit for hit in hits if hit.face_id in live] for face_id, hits in face_hits.items()}


@dataclass(frozen=True)
class CandidatesStored:
    """New candidates of one photo's search, for the apps that keep something per candidate (reviews' warnings)."""

    organisation_id: int
    candidate_ids: list[int]


_candidates_listeners: list[Callable[[CandidatesStored], None]] = []


def candidates_listener_register(listener: Callable[[CandidatesStored], None]) -> None:
    """Called from an app's ready(): the listener runs inside the transaction that stores the candidates."""
    if listener not in _candidates_listeners:
        _candidates_listeners.append(listener)


def search_results_store(
    *,
    photo_id: int,
    face_hits: dict[int, list[Hit]],
    threshold: float,
    max_candidates: int,
    gallery_version: int,
    gallery_faces: int,
    shards: int = 1,
) -> None:
    """Store a Search per face and its Candidates, and finish the photo. Safe to run twice.

    The search ran without a lock, so what changed since is decided here: a photo purged meanwhile stores
    nothing, and a subject erased meanwhile is no candidate. The hits' subjects are locked (in id order), so an
    erasure either finds the candidates stored here, and closes them, or is seen here."""
    with transaction.atomic():
        locked = Photo.objects.select_for_update(no_key=True).get(id=photo_id)
        if locked.status == PhotoStatus.DONE:
            return
        if locked.purged_at is not None:
            locked.status = PhotoStatus.FAILED
            locked.failure_reason = "The case's photos were purged while this photo was being searched."
            locked.status_changed_at = timezone.now()
            locked.save(update_fields=["status", "failure_reason", "status_changed_at"])
            return
        face_hits = _hits_still_searchable(face_hits)
        organisation = Organisation.objects.get(id=locked.organisation_id)
        already = set(Search.objects.filter(face__photo=locked).values_list("face_id", flat=True))
        faces = Face.objects.filter(id__in=list(face_hits), purged_at__isnull=True).order_by("index")
        stored: list[int] = []
        for face in faces:
            if face.id in already:
                continue
            hits = face_hits[face.id]
            search = Search.objects.create(
                face=face,
                organisation=organisation,
                threshold=threshold,
                max_candidates=max_candidates,
                engine_version=engine_version(),
                gallery_version=gallery_version,
                gallery_faces=gallery_faces,
                candidate_count=len(hits),
            )
            Candidate.objects.bulk_create(
                Candidate(
                    search=search,
                    organisation=organisation,
                    case_id=locked.case_id,
                    subject_id=hit.subject_id,
                    reference_face_id=hit.face_id,
                    rank=rank,
                    distance=hit.distance,
                )
                for rank, hit in enumerate(hits, start=1)
            )
            if hits:
                stored.extend(Candidate.objects.filter(search=search).values_list("id", flat=True))
        if stored:
            event = CandidatesStored(organisation_id=organisation.pk, candidate_ids=stored)
            for listener in _candidates_listeners:
                listener(event)
        locked.status = PhotoStatus.DONE
        locked.status_changed_at = timezone.now()
        locked.save(update_fields=["status", "status_changed_at"])
        detail = {
            "faces": len(face_hits),
            "candidates": sum(len(h) for h in face_hits.values()),
            "threshold": threshold,
            "engine_version": engine_version(),
        }
        if shards > 1:
            detail["shards"] = shards
        audit_record(action="search.run", organisation=organisation, target=locked, detail=detail)
