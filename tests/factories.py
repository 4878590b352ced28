from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from matching.models import Case, Gallery, Subject
from portal.models import Membership, Organisation, Role

PASSWORD = "correct horse battery"


class OrganisationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organisation
        django_get_or_create = ["slug"]

    name = factory.Sequence(lambda n: f"Organisation {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")
    permitted_purpose = "Locating missing children reported to the organisation"
    legal_basis = "GDPR Art. 9(2)(g), substantial public interest"
    use_case_approved_at = factory.LazyFunction(timezone.now)
    threshold_confirmed_at = factory.LazyFunction(timezone.now)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organisation = factory.SubFactory(OrganisationFactory)
    role = Role.CASEWORKER


class GalleryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Gallery

    organisation = factory.SubFactory(OrganisationFactory)
    name = factory.Sequence(lambda n: f"Gallery {n}")


class SubjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subject

    gallery = factory.SubFactory(GalleryFactory)
    code = factory.Sequence(lambda n: f"S{n:04d}")


class CaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Case

    organisation = factory.SubFactory(OrganisationFactory)
    reference = factory.Sequence(lambda n: f"CASE-{n:04d}")
    title = "Missing person"
    purpose = "Locate a missing child"


class FaceFactory(factory.django.DjangoModelFactory):
    """A face row with no image behind it: a 10-pixel box, a sealed zero encoding and a crop name."""

    class Meta:
        model = "matching.Face"

    organisation = factory.SelfAttribute("photo.organisation")
    subject = factory.SelfAttribute("photo.subject")
    index = 0
    top, right, bottom, left = 0, 10, 10, 0
    crop = "crops/none.jpg"
    encoding = factory.LazyFunction(lambda: _zero_encoding())
    engine = "face_recognition"
    engine_version = "test"
    detector = "hog"
    face_width = face_height = 10
    blur = 1.0


def _zero_encoding() -> bytes:
    import numpy as np

    from matching.sealing import encoding_seal

    return encoding_seal(np.zeros(128))


def candidate_with(
    *,
    organisation,
    created_by=None,
    distance: float = 0.45,
    subject: dict | None = None,
    probe: dict | None = None,
    case=None,
    rank: int = 1,
):
    """A pending candidate built from rows alone, for tests about what surrounds a candidate rather than how
    it was found (the matching tests use real photos). `case` puts it on an existing case."""

    from matching.models import Candidate, Photo, Search

    gallery = GalleryFactory(organisation=organisation)
    subject_row = SubjectFactory(gallery=gallery, **(subject or {}))
    if case is None:
        case = CaseFactory(
            organisation=organisation, created_by=created_by, **{f"probe_{k}": v for k, v in (probe or {}).items()}
        )

    def face(photo, subject_row=None):
        return FaceFactory(photo=photo, organisation=organisation, subject=subject_row)

    probe_photo = Photo.objects.create(
        organisation=organisation, kind="probe", case=case, image="p.jpg", width=10, height=10, status="done"
    )
    reference_photo = Photo.objects.create(
        organisation=organisation,
        kind="reference",
        subject=subject_row,
        image="r.jpg",
        width=10,
        height=10,
        status="done",
    )
    probe_face, reference_face = face(probe_photo), face(reference_photo, subject_row)
    search = Search.objects.create(
        face=probe_face,
        organisation=organisation,
        threshold=organisation.distance_threshold,
        max_candidates=organisation.max_candidates,
        engine_version="test",
        gallery_version=0,
        gallery_faces=1,
        candidate_count=1,
    )
    return Candidate.objects.create(
        search=search,
        organisation=organisation,
        case=case,
        subject=subject_row,
        reference_face=reference_face,
        rank=rank,
        distance=distance,
    )


def audit_run_rows(organisation):
    """A completed audit run with one group and one rate, made of rows alone."""
    import numpy as np

    from matching.models import AuditDataset, AuditGroup, AuditRate, AuditRun

    dataset = AuditDataset.objects.create(organisation=organisation, name="Acme set", status="done")
    run = AuditRun.objects.create(
        dataset=dataset,
        organisation=organisation,
        engine_version="test",
        thresholds=[0.6],
        threshold_in_use=0.6,
        target_fmr=0.001,
        min_identities=20,
        min_effective_pairs=30,
        photos=4,
        completed_at=timezone.now(),
    )
    group = AuditGroup.objects.create(
        run=run,
        key="all",
        photos=4,
        identities=2,
        impostor_pairs=4,
        genuine_pairs=2,
        insufficient=True,
        insufficient_reasons=["few identities"],
        impostor_distances=np.array([0.7, 0.8], dtype=np.float32).tobytes(),
        genuine_distances=np.array([0.3], dtype=np.float32).tobytes(),
    )
    AuditRate.objects.create(
        group=group,
        threshold=0.6,
        false_matches=0,
        impostor_pairs=4,
        fmr=0.0,
        fmr_low=0.0,
        fmr_high=0.5,
        false_non_matches=0,
        genuine_pairs=2,
        fnmr=0.0,
        fnmr_low=0.0,
        fnmr_high=0.6,
    )
    return run


def searchable_subjects(organisation, count: int, **attributes) -> None:
    """``count`` gallery subjects, each with one face of the engine in use, built from rows alone.

    For tests about what the gallery's size and composition mean (1:N figures), not about search."""
    from matching.engine import engine_version
    from matching.models import Photo

    gallery = GalleryFactory(organisation=organisation)
    for _ in range(count):
        subject = SubjectFactory(gallery=gallery, **attributes)
        photo = Photo.objects.create(
            organisation=organisation,
            kind="reference",
            subject=subject,
            image="r.jpg",
            width=10,
            height=10,
            status="done",
        )
        FaceFactory(photo=photo, subject=subject, engine_version=engine_version())


def audit_run_of_people(organisation, people, impostor, genuine=(), groups=()):
    """A completed audit run made of rows: ``people`` as [(photos, attributes)], ``impostor`` and ``genuine`` as
    [(distance, person, ...)] pairs over them, and the groups named in ``groups`` ({attribute: value} each).

    For tests about what the 1:N figures make of an audit, without photos."""
    import numpy as np

    from matching.engine import engine_version
    from matching.models import AuditDataset, AuditGroup, AuditRun

    dataset = AuditDataset.objects.create(organisation=organisation, name="People", status="done")
    run = AuditRun.objects.create(
        dataset=dataset,
        organisation=organisation,
        engine_version=engine_version(),
        thresholds=[0.6],
        threshold_in_use=organisation.distance_threshold,
        target_fmr=0.001,
        min_identities=20,
        min_effective_pairs=30,
        photos=sum(photos for photos, _ in people),
        people=[[photos, attributes] for photos, attributes in people],
        completed_at=timezone.now(),
    )
    impostor = sorted(impostor)
    genuine = sorted(genuine)
    AuditGroup.objects.create(
        run=run,
        key="all",
        attributes={},
        photos=run.photos,
        identities=len(people),
        impostor_pairs=len(impostor),
        genuine_pairs=len(genuine),
        insufficient=False,
        impostor_distances=np.array([d for d, *_ in impostor], dtype=np.float32).tobytes(),
        impostor_people=np.array([[a, b] for _, a, b in impostor], dtype=np.int32).tobytes(),
        genuine_distances=np.array([d for d, _ in genuine], dtype=np.float32).tobytes(),
        genuine_people=np.array([p for _, p in genuine], dtype=np.int32).tobytes(),
    )
    for attributes in groups:
        AuditGroup.objects.create(
            run=run,
            key=" & ".join(f"{k}={v}" for k, v in attributes.items()),
            attributes=attributes,
            photos=0,
            identities=0,
            impostor_pairs=0,
            genuine_pairs=0,
            insufficient=False,
            impostor_distances=b"",
            genuine_distances=b"",
        )
    return run


def women_who_look_alike(organisation):
    """20 women who all look alike from 0.46 on, and whose two photos each are 0.35 apart; 20 men who look like
    nobody, and whose two photos each are 0.65 apart. At 0.45 the women hold the threshold (any higher and most
    of their strangers' searches return someone), and there everyone enrolled misses half the men: most of the
    true matches a search for a man would find."""
    from itertools import combinations

    people = [(2, {"sex": "F"})] * 20 + [(2, {"sex": "M"})] * 20
    impostor = [(0.46 if b < 20 else 0.9, a, b) for a, b in combinations(range(40), 2)]
    genuine = [(0.35, i) for i in range(20)] + [(0.65, i) for i in range(20, 40)]
    return audit_run_of_people(organisation, people, impostor, genuine, groups=[{"sex": "F"}, {"sex": "M"}])
