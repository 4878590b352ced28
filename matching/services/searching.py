"""Searching a photo's faces against the organisation's gallery: in one worker, or fanned out in shards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from matching.engine import engine_version
from matching.models import (
    Candidate,
    Face,
    Photo,
    PhotoStatus,
    Search,
)
from matching.sealing import encodings_open
from matching.search import GalleryMatrix, Hit, Shard, gallery_cache, hits_merge, search_gallery, shards_plan
from portal.audit import audit_record
from portal.models import Organisation


def gallery_matrix_load(
    organisation: Organisation, version: str, *, subject_from: int | None = None, subject_to: int | None = None
) -> GalleryMatrix:
    """The organisation's reference faces as a matrix; with a subject-id range, only that shard's rows."""
    faces = Face.objects.filter(
        organisation=organisation, subject__isnull=False, engine_version=version, purged_at__isnull=True
    )
    if subject_from:
        faces = faces.filter(subject_id__gte=subject_from)
    if subject_to is not None:
        faces = faces.filter(subject_id__lt=subject_to)
    rows = list(faces.values_list("id", "subject_id", "encoding"))
    if not rows:
        return GalleryMatrix.build(np.zeros(0), np.zeros(0), np.zeros((0, 128)))
    face_ids, subject_ids, blobs = zip(*rows, strict=True)
    encodings = encodings_open(blobs)
    return GalleryMatrix.build(np.array(face_ids), np.array(subject_ids), encodings)


def gallery_shards(organisation: Organisation, version: str) -> list[Shard]:
    """How the organisation's gallery is cut for search: one shard when it fits one worker's budget.

    Cached per process with the gallery version, like the matrix, so a warm search costs no query here.
    """
    max_faces = settings.SEARCH_SHARD_MAX_FACES

    def plan() -> list[Shard]:
        faces = Face.objects.filter(
            organisation=organisation, subject__isnull=False, engine_version=version, purged_at__isnull=True
        )
        total = faces.count()
        if total <= max_faces:
            return [Shard(index=0, subject_from=0, subject_to=None, faces=total)]
        counts = list(faces.values_list("subject_id").annotate(n=Count("id")).order_by("subject_id"))
        subject_ids, face_counts = zip(*counts, strict=True)
        return shards_plan(np.array(subject_ids), np.array(face_counts), max_faces)

    return gallery_cache.plan(organisation.id, version, _cache_stamp(organisation), max_faces, plan)


def _cache_stamp(organisation: Organisation) -> tuple:
    """What a cached matrix must match: the gallery version, and which organisation row holds that id.

    SQLite hands a deleted row's id to the next row, so an id alone could name another organisation whose
    counter has reached the same number; its creation time tells the two apart.
    """
    return (organisation.gallery_version, organisation.created_at.isoformat() if organisation.created_at else "")


def organisation_gallery(organisation: Organisation, shard: Shard | None = None) -> GalleryMatrix:
    """The cached matrix of the whole gallery, or of one shard; rebuilt whenever gallery_version moves."""
    version = engine_version()
    if shard is None:
        return gallery_cache.get(
            organisation.id,
            version,
            _cache_stamp(organisation),
            lambda: gallery_matrix_load(organisation, version),
        )
    return gallery_cache.get(
        organisation.id,
        version,
        _cache_stamp(organisation),
        lambda: gallery_matrix_load(
            organisation, version, subject_from=shard.subject_from, subject_to=shard.subject_to
        ),
        shard=(shard.subject_from, shard.subject_to),
        max_faces=settings.SEARCH_SHARD_MAX_FACES,
    )


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
    pending = list(photo.faces.filter(search__isnull=True).order_by("index"))
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
    hits = search_gallery(gallery, np.stack([face.vector for face in pending]), threshold=threshold, k=k)
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
    hits = search_gallery(gallery, np.stack([f.vector for f in probes]), threshold=threshold, k=k) if probes else []
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
    """Store a Search per face and its Candidates, and finish the photo. Safe to run twice."""
    with transaction.atomic():
        locked = Photo.objects.select_for_update(no_key=True).get(id=photo_id)
        if locked.status == PhotoStatus.DONE:
            return
        organisation = Organisation.objects.get(id=locked.organisation_id)
        already = set(Search.objects.filter(face__photo=locked).values_list("face_id", flat=True))
        faces = Face.objects.filter(id__in=list(face_hits)).order_by("index")
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
