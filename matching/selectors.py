from __future__ import annotations

from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from matching.models import Candidate, Case, Face, Gallery, Outcome, Photo, PhotoKind, PhotoStatus
from portal import access

NO_FACE = "no_face"


def cases_for(user) -> QuerySet[Case]:
    organisation = access.organisation_of(user)
    if organisation is None:
        return Case.objects.none()
    return Case.objects.filter(organisation=organisation)


def case_list_rows(cases: list[Case]) -> list[dict]:
    """Each case of a list page with its photo and candidate counts: two queries, whatever the page size."""
    ids = [case.pk for case in cases]
    photos = {case_id: {} for case_id in ids}
    with_face = Exists(Face.objects.filter(photo=OuterRef("pk")))
    for row in (
        Photo.objects.filter(case_id__in=ids)
        .annotate(with_face=with_face)
        .values("case_id", "status", "with_face")
        .annotate(n=Count("id"))
        .order_by()
    ):
        # A finished photo without a face ran no search: counted apart, so that it never reads as done.
        status = NO_FACE if row["status"] == PhotoStatus.DONE and not row["with_face"] else row["status"]
        counts = photos[row["case_id"]]
        counts[status] = counts.get(status, 0) + row["n"]
    candidates = {
        row["case_id"]: row
        for row in Candidate.objects.filter(case_id__in=ids)
        .values("case_id")
        .annotate(
            pending=Count("id", filter=Candidate.open_q()),
            confirmed=Count("id", filter=Q(outcome=Outcome.CONFIRMED)),
        )
        .order_by()
    }
    rows = []
    for case in cases:
        counts = photos[case.pk]
        done, failed = counts.get(PhotoStatus.DONE, 0), counts.get(PhotoStatus.FAILED, 0)
        no_face = counts.get(NO_FACE, 0)
        row = candidates.get(case.pk, {})
        rows.append(
            {
                "case": case,
                "photos_done": done,
                "photos_failed": failed,
                "photos_no_face": no_face,
                "photos_working": sum(counts.values()) - done - failed - no_face,
                "pending": row.get("pending", 0),
                "confirmed": row.get("confirmed", 0),
            }
        )
    return rows


def case_confirmed_matches(case: Case) -> QuerySet[Candidate]:
    """The only candidates a caseworker may see: those a reviewer confirmed."""
    return (
        case.candidates.confirmed()
        .select_related("subject", "reference_face", "search__face", "outcome_by")
        .prefetch_related("confirmed_by")
        .defer("reference_face__encoding", "search__face__encoding")
        .order_by("outcome_at")
    )


def case_candidate_counts(case: Case) -> dict[str, int]:
    counts = case.candidates.aggregate(
        pending=Count("id", filter=Candidate.open_q()),
        confirmed=Count("id", filter=Q(outcome=Outcome.CONFIRMED)),
        rejected=Count("id", filter=Q(outcome=Outcome.REJECTED)),
        not_comparable=Count("id", filter=Q(outcome=Outcome.UNSUITABLE)),
    )
    return {key: value or 0 for key, value in counts.items()}


def case_photos(case: Case) -> QuerySet[Photo]:
    # `unsuitable_faces`: faces a reviewer judged of no value for comparison (their candidates were closed).
    return case.photos.annotate(
        face_count=Count("faces"),
        unsuitable_faces=Count("faces", filter=Q(faces__unsuitable_at__isnull=False)),
    ).order_by("id")


def photo_unsuitable_reasons(photo: Photo) -> list[str]:
    """Why the photo's faces were judged unsuitable for comparison, for the caseworker's page."""
    return list(photo.faces.filter(unsuitable_at__isnull=False).values_list("unsuitable_reason", flat=True))


def may_view_photo(user, photo: Photo) -> bool:
    """Probe photos: anyone in the organisation. Reference photos: reviewers and admins,
    and caseworkers only once a reviewer has confirmed that subject for one of the cases."""
    if not access.same_organisation(user, photo.organisation_id):
        return False
    if photo.kind == PhotoKind.PROBE or access.can_review(user) or access.can_manage_galleries(user):
        return True
    return (
        Candidate.objects.confirmed()
        .filter(organisation_id=photo.organisation_id, reference_face__photo=photo)
        .exists()
    )


def may_view_face(user, face: Face) -> bool:
    if not access.same_organisation(user, face.organisation_id):
        return False
    if face.subject_id is None or access.can_review(user) or access.can_manage_galleries(user):
        return True
    return Candidate.objects.confirmed().filter(organisation_id=face.organisation_id, reference_face=face).exists()


def galleries_for(organisation) -> QuerySet:
    return Gallery.objects.filter(organisation=organisation).annotate(subject_count=Count("subjects")).order_by("name")


def gallery_subjects(gallery) -> QuerySet:
    return gallery.subjects.annotate(
        photo_count=Count("photos", distinct=True),
        face_count=Count("faces", distinct=True),
        failed_count=Count("photos", filter=Q(photos__status="failed"), distinct=True),
    ).order_by("code")
