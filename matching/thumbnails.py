"""Face thumbnails embedded in a page, so that a list of faces is one request and one log INSERT.

A review queue page shows fifty faces. As fifty image requests, each one passed the whole middleware stack,
the session, the user and the membership, and wrote its own log row: on two cores, eight reviewers spent
more time fetching thumbnails than reading the queue. Embedded, the page reads the fifty thumbnails from
storage itself and records the fifty views in one statement, with the same rows the crop view writes.

The thumbnail is stored with the crop when the face is detected (`Face.thumbnail`), and erased with it.
A face detected before thumbnails were stored is shrunk from its crop on the fly (about 0.5 ms).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from django.core.files.storage import FileSystemStorage, default_storage
from django.db.models import QuerySet
from PIL import Image

from matching.imaging import thumbnail_jpeg
from matching.models import Face
from matching.selectors import may_view_face
from portal.audit import audit_views_record

# Reads at once from a bucket, which answers in tens of milliseconds; a local disk answers in microseconds and
# is read in turn (a pool would cost more than the reads).
READERS = 8


def _read(name: str) -> bytes | None:
    try:
        with default_storage.open(name, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, OSError):
        return None


def _thumbnail(face: Face) -> bytes | None:
    """The stored thumbnail, else the crop shrunk; None if neither can be read as a JPEG."""
    if face.thumbnail:
        stored = _read(face.thumbnail.name)
        if stored and stored.startswith(b"\xff\xd8"):
            return stored
    content = _read(face.crop.name)
    if not content:
        return None
    try:
        with Image.open(io.BytesIO(content)) as image:
            return thumbnail_jpeg(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def face_thumbnails(user, faces: Iterable[Face]) -> dict[int, str | None]:
    """`data:` URIs of the faces' crops, by face id, with one activity-log row per face shown. `faces` is a
    queryset (read here, with whether each is live) or faces already read (checked in a query of their own).

    None for a face this user may not see, or whose crop was erased or purged (or is unreadable): the page
    says so in place of the image. Views are recorded only for the faces actually shown.
    """
    read_here = isinstance(faces, QuerySet)
    if read_here:
        # Asked in the same query, rather than in a second one for the faces read here.
        faces = faces.with_liveness()
    unique = {face.pk: face for face in faces}
    shown = {pk: face for pk, face in unique.items() if face.purged_at is None and face.crop}
    if shown:
        # Faces of an erased subject or a purged photo are gone too, whatever their own row says.
        if read_here:
            live = {pk for pk, face in shown.items() if face.is_live}
        else:
            live = set(Face.objects.live().filter(pk__in=shown).values_list("pk", flat=True))
        shown = {pk: face for pk, face in shown.items() if pk in live and may_view_face(user, face)}
    if isinstance(default_storage, FileSystemStorage) or len(shown) < 2:
        contents = [_thumbnail(face) for face in shown.values()]
    else:
        with ThreadPoolExecutor(max_workers=min(READERS, len(shown))) as pool:
            contents = list(pool.map(_thumbnail, shown.values()))
    thumbnails: dict[int, str | None] = dict.fromkeys(unique)
    viewed: dict[int, list[Face]] = {}
    for (pk, face), small in zip(shown.items(), contents, strict=True):
        if small is None:
            continue
        thumbnails[pk] = "data:image/jpeg;base64," + base64.b64encode(small).decode("ascii")
        viewed.setdefault(face.organisation_id, []).append(face)
    # In one order, as every writer takes the organisations' view counters (portal.audit._view_numbers).
    for organisation_id, seen in sorted(viewed.items()):
        audit_views_record(action="media.face", actor=user, organisation_id=organisation_id, targets=seen)
    return thumbnails
