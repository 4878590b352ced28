"""The matching app's writes, by domain. Callers import them from here: `from matching import services`.

- `uploads`: reading uploaded photos and storing them with no orphan files;
- `galleries`: galleries and subjects, one at a time or in bulk;
- `cases`: cases, their probe photos, and a candidate's outcome;
- `processing`: one photo through detection and encoding, safe to run twice, and the sweeper;
- `searching`: a photo's faces against the gallery, in one worker or in shards;
- `retention`: erasure, closing cases and purging them after their retention;
- `thresholds`: what only a deliberate step on /settings/ changes: the threshold, which matching waits for,
  and the retention period.
"""

from __future__ import annotations

from matching.services.cases import (
    candidate_set_outcome,
    case_add_photos,
    case_create,
    probe_face_set_unsuitable,
)
from matching.services.exceptions import CandidateAlreadyDecided, ServiceError
from matching.services.galleries import (
    enrolment_batch_create,
    enrolment_batch_process,
    gallery_create,
    subject_enrol,
)
from matching.services.processing import (
    USE_CASE_REFUSAL,
    SweepResult,
    faces_review_images_backfill,
    photo_claim,
    photo_detect,
    photo_fail,
    photo_process,
    photo_process_detect,
    photo_process_store,
    photo_requeue,
    photos_give_up,
    photos_requeue_stale,
    reference_faces_store,
)
from matching.services.retention import (
    BiometricsRemoved,
    biometrics_listener_register,
    case_close,
    case_purge_if_due,
    case_reopen,
    cases_due_for_purge,
    cases_purge_expired,
    field_file_delete,
    retention_change_effect,
    subject_erase,
)
from matching.services.searching import (
    CandidatesStored,
    candidates_listener_register,
    gallery_change_record,
    gallery_changes_apply,
    gallery_index_load,
    gallery_shard_search,
    gallery_shards,
    organisation_gallery,
    probe_photo_search,
    search_results_store,
    shard_results_store,
)
from matching.services.thresholds import (
    RETENTION_MAX_DAYS,
    THRESHOLD_HOLD,
    organisation_retention_set,
    organisation_threshold_confirm,
    photo_hold_for_threshold,
)
from matching.services.uploads import StoredFiles, UploadedImage, uploaded_image_read

__all__ = [
    "RETENTION_MAX_DAYS",
    "THRESHOLD_HOLD",
    "USE_CASE_REFUSAL",
    "BiometricsRemoved",
    "CandidateAlreadyDecided",
    "CandidatesStored",
    "ServiceError",
    "StoredFiles",
    "SweepResult",
    "UploadedImage",
    "biometrics_listener_register",
    "candidate_set_outcome",
    "candidates_listener_register",
    "case_add_photos",
    "case_close",
    "case_create",
    "case_purge_if_due",
    "case_reopen",
    "cases_due_for_purge",
    "cases_purge_expired",
    "enrolment_batch_create",
    "enrolment_batch_process",
    "faces_review_images_backfill",
    "field_file_delete",
    "gallery_change_record",
    "gallery_changes_apply",
    "gallery_create",
    "gallery_index_load",
    "gallery_shard_search",
    "gallery_shards",
    "organisation_gallery",
    "organisation_retention_set",
    "organisation_threshold_confirm",
    "photo_claim",
    "photo_detect",
    "photo_fail",
    "photo_hold_for_threshold",
    "photo_process",
    "photo_process_detect",
    "photo_process_store",
    "photo_requeue",
    "photos_give_up",
    "photos_requeue_stale",
    "probe_face_set_unsuitable",
    "probe_photo_search",
    "reference_faces_store",
    "retention_change_effect",
    "search_results_store",
    "shard_results_store",
    "subject_enrol",
    "subject_erase",
    "uploaded_image_read",
]
