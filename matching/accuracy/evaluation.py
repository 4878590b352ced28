"""Evaluation sets and audit runs: the writes and reads behind the bias warnings.

An evaluation set is imported once (each photo's single face encoded with the
engine in use); an audit run computes per-group error rates from it with
`matching.accuracy.rates` and stores them as rows. Review screens only read those rows.
"""

from __future__ import annotations

import csv
import io
import math
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from matching import bulk
from matching.accuracy.rates import ADULT, AGE_GROUP, CHILD, age_band_lower, fnmr_at
from matching.engine import detect_faces, engine_version
from matching.imaging import ImageRejected, image_normalise, rgb_array
from matching.models import AuditDataset, AuditGroup, AuditRate, AuditRun, AuditSample, BatchStatus
from matching.sealing import encoding_seal, encodings_open
from portal.audit import audit_record
from portal.errors import Refusal
from portal.models import Organisation
from portal.outbox import outbox_enqueue

# Bookkeeping columns that are never demographic attributes.
NON_ATTRIBUTE_COLUMNS = {
    "file",
    "identity",
    "age",
    "purpose",
    "expected_faces",
    "faces_found_hog",
    "source_repo",
    "source_path",
    "source_commit",
    "licence",
    "license",
}
MAX_ATTRIBUTE_VALUES = 30


class AuditError(Refusal, ValueError):
    """The audit cannot run on this data set."""


@dataclass(frozen=True)
class EvaluationRow:
    line: int
    file: str
    identity: str
    attributes: dict[str, str]


def _with_age_group(attributes: dict[str, str]) -> dict[str, str]:
    """Adds 'under 18' / '18 and over' when an age band is known: the split the warnings care about."""
    band = attributes.get("age_band", "")
    lower = age_band_lower(band) if band else None
    if lower is None:
        return attributes
    return {**attributes, AGE_GROUP: CHILD if lower < 18 else ADULT}


def evaluation_manifest_parse(
    data: bytes, attributes: list[str] | None = None
) -> tuple[list[str], list[EvaluationRow]]:
    """Read a manifest with `file`, `identity` and demographic columns. Returns the attribute names and rows."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise AuditError(f"The manifest is not UTF-8 text (byte {error.start} cannot be read).") from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [h.strip() for h in (reader.fieldnames or [])]
        records = list(reader)
    except csv.Error as error:
        raise AuditError(f"The manifest cannot be read: {error}.") from None
    missing = [c for c in ("file", "identity") if c not in header]
    if missing:
        raise AuditError(f"The manifest lacks the column(s): {', '.join(missing)}.")
    if len(set(header)) != len(header):
        raise AuditError("The manifest names a column twice.")
    if attributes is None:
        candidates = [h for h in header if h.lower() not in NON_ATTRIBUTE_COLUMNS]
        attributes = [
            name
            for name in candidates
            if len({(r.get(name) or "").strip() for r in records} - {""}) <= MAX_ATTRIBUTE_VALUES
        ]
    else:
        unknown = [a for a in attributes if a not in header]
        if unknown:
            raise AuditError(f"The manifest has no column(s): {', '.join(unknown)}.")
    if not records:
        raise AuditError("The manifest has no rows.")
    rows = []
    for line, record in enumerate(records, start=2):
        if None in record:
            raise AuditError(f"line {line}: more values than columns.")
        values = {a: (record.get(a) or "").strip() for a in attributes}
        rows.append(
            EvaluationRow(
                line=line,
                file=(record.get("file") or "").strip(),
                identity=(record.get("identity") or "").strip(),
                attributes=_with_age_group(values),
            )
        )
    names = list(attributes)
    if any(AGE_GROUP in r.attributes for r in rows) and AGE_GROUP not in names:
        names.append(AGE_GROUP)
    return names, rows


class FolderImages:
    """Reads manifest paths below one folder, and nowhere else."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def read(self, name: str) -> bytes:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root):
            raise bulk.BulkRejected(f"{name}: the path leaves the images folder.")
        if not path.is_file():
            raise bulk.BulkRejected(f"{name} is not in the images folder.")
        if path.stat().st_size > settings.UPLOAD_MAX_BYTES:
            raise bulk.BulkRejected(f"{name} is larger than the upload limit.")
        return path.read_bytes()


def _sample_encode(data: bytes) -> np.ndarray:
    image = image_normalise(data, max_bytes=settings.UPLOAD_MAX_BYTES, max_pixels=settings.UPLOAD_MAX_PIXELS)
    faces = detect_faces(
        rgb_array(image.content),
        model=settings.FACE_DETECTION_MODEL,
        upsample=settings.FACE_UPSAMPLE,
        max_side=settings.FACE_MAX_SIDE,
    )
    if len(faces) != 1:
        raise AuditError("no face found" if not faces else f"{len(faces)} faces found; one is required")
    return faces[0].encoding


# Importing


@transaction.atomic
def audit_dataset_create(
    *,
    name: str,
    organisation: Organisation | None,
    manifest: bytes,
    acting_user: Any,
    archive: bytes | None = None,
    attributes: list[str] | None = None,
) -> AuditDataset:
    names, rows = evaluation_manifest_parse(manifest, attributes)
    if archive is not None:
        bulk.archive_check(archive, max_members=settings.BULK_MAX_MEMBERS)
    dataset = AuditDataset(
        name=name.strip() or "Evaluation set",
        organisation=organisation,
        attributes=names,
        engine_version=engine_version(),
        rows_total=len(rows),
        created_by=acting_user if getattr(acting_user, "is_authenticated", False) else None,
    )
    dataset.manifest.save(f"{uuid.uuid4().hex}.csv", ContentFile(manifest), save=False)
    if archive is not None:
        dataset.archive.save(f"{uuid.uuid4().hex}.zip", ContentFile(archive), save=False)
    dataset.save()
    audit_record(
        action="audit.dataset_create",
        actor=acting_user,
        organisation=organisation,
        target=dataset,
        detail={"rows": len(rows), "attributes": names},
    )
    if archive is not None:
        # Through the outbox: a broker outage delays the import rather than failing the committed upload.
        outbox_enqueue("matching.tasks.import_audit_dataset", dataset.id)
    return dataset


def audit_dataset_import(*, dataset_id: int, images_dir: Path | None = None, progress=None) -> AuditDataset:
    """Encode each row's face, saving samples and the report as it goes; a rerun resumes."""
    claimed = AuditDataset.objects.filter(id=dataset_id, status__in=[BatchStatus.QUEUED, BatchStatus.RUNNING]).update(
        status=BatchStatus.RUNNING
    )
    dataset = AuditDataset.objects.get(id=dataset_id)
    if not claimed:
        return dataset
    with dataset.manifest.open("rb") as handle:
        _, rows = evaluation_manifest_parse(handle.read(), [a for a in dataset.attributes if a != AGE_GROUP])
    if images_dir is not None:
        source: Any = FolderImages(images_dir)
    else:
        with dataset.archive.open("rb") as handle:
            try:
                source = bulk.SafeArchive(handle.read())
            except bulk.BulkRejected as error:
                # An upload stored before its check refused such a zip: it fails whole, and its photos go.
                dataset.failure_reason = str(error)[:500]
                return _dataset_finish(dataset, BatchStatus.FAILED)
    done = {entry["line"] for entry in dataset.report}
    pending: list[dict[str, Any]] = []
    for row in rows:
        if row.line in done:
            continue
        entry: dict[str, Any] = {"line": row.line, "file": row.file, "identity": row.identity}
        try:
            if not row.identity:
                raise AuditError("no identity given")
            encoding = _sample_encode(source.read(row.file))
        except (AuditError, ImageRejected, bulk.BulkRejected) as error:
            entry.update(status="refused", detail=str(error))
        else:
            AuditSample.objects.create(
                dataset=dataset,
                line=row.line,
                file=row.file,
                identity=row.identity,
                attributes=row.attributes,
                encoding=encoding_seal(encoding),
            )
            entry.update(status="accepted", detail="")
        pending.append(entry)
        if len(pending) >= 10:
            _report_append(dataset, pending)
            pending = []
            if progress:
                progress(dataset)
    _report_append(dataset, pending)
    return _dataset_finish(dataset, BatchStatus.DONE)


def _dataset_finish(dataset: AuditDataset, status: str) -> AuditDataset:
    dataset.status = status
    dataset.finished_at = timezone.now()
    # The photos are encoded now (or refused); their archive (and the manifest with its identities) goes, the
    # report stays.
    for field_file in (dataset.archive, dataset.manifest):
        if field_file and field_file.name:
            field_file.storage.delete(field_file.name)
    dataset.archive = ""
    dataset.manifest = ""
    dataset.save(update_fields=["status", "failure_reason", "finished_at", "archive", "manifest"])
    return dataset


@transaction.atomic
def audit_dataset_erase(*, dataset: AuditDataset, acting_user: Any) -> int:
    """Delete an evaluation set's encodings and any stored upload, for good; returns how many encodings went.

    The runs measured on it stay (their error rates and distance lists hold no face), so the dataset row stays
    as their tombstone; with no samples left it cannot be run again.
    """
    dataset = AuditDataset.objects.select_for_update(no_key=True).get(pk=dataset.pk)
    for field_file in (dataset.archive, dataset.manifest):
        if field_file and field_file.name:
            field_file.storage.delete(field_file.name)
    dataset.archive = ""
    dataset.manifest = ""
    dataset.save(update_fields=["archive", "manifest"])
    erased, _ = dataset.samples.all().delete()
    audit_record(
        action="audit.dataset_erase",
        actor=acting_user,
        organisation=dataset.organisation,
        target=dataset,
        detail={"samples": erased},
    )
    return erased


def _report_append(dataset: AuditDataset, entries: list[dict[str, Any]]) -> None:
    if not entries:
        return
    dataset.report = [*dataset.report, *entries]
    dataset.rows_done = len(dataset.report)
    dataset.save(update_fields=["report", "rows_done"])


# Running


def _clean(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


@transaction.atomic
def audit_run_create(
    *,
    dataset: AuditDataset,
    organisation: Organisation | None,
    acting_user: Any,
    thresholds: list[float] | None = None,
    min_identities: int | None = None,
    min_effective_pairs: int | None = None,
) -> AuditRun:
    from matching.accuracy.rates import INTERVAL_METHOD, audit_compute

    version = engine_version()
    if dataset.status != BatchStatus.DONE:
        raise AuditError("The evaluation set has not finished importing.")
    if dataset.engine_version != version:
        raise AuditError(f"The evaluation set was encoded with {dataset.engine_version}; import it again.")
    samples = list(dataset.samples.values_list("identity", "attributes", "encoding"))
    if len(samples) < 2:
        raise AuditError("The evaluation set has fewer than two usable photos.")
    identities = [s[0] for s in samples]
    encodings = encodings_open([s[2] for s in samples])
    columns = {name: [s[1].get(name, "") for s in samples] for name in dataset.attributes}
    threshold_in_use = organisation.distance_threshold if organisation else 0.6
    target = organisation.target_fmr if organisation else 0.001
    result = audit_compute(
        encodings,
        identities,
        columns,
        thresholds=thresholds or settings.AUDIT_THRESHOLDS,
        extra_thresholds=[threshold_in_use],
        min_identities=settings.AUDIT_MIN_IDENTITIES if min_identities is None else min_identities,
        min_effective_pairs=settings.AUDIT_MIN_EFFECTIVE_PAIRS if min_effective_pairs is None else min_effective_pairs,
        target_fmr=target,
        reference_threshold=threshold_in_use,
    )
    run = AuditRun.objects.create(
        interval_method=INTERVAL_METHOD,
        dataset=dataset,
        organisation=organisation,
        engine_version=version,
        thresholds=list(result.thresholds),
        threshold_in_use=threshold_in_use,
        target_fmr=target,
        min_identities=result.min_identities,
        min_effective_pairs=result.min_effective_pairs,
        photos=result.photos,
        people=[[photos, attributes] for photos, attributes in result.people],
        created_by=acting_user if getattr(acting_user, "is_authenticated", False) else None,
    )
    for group in result.groups:
        stored = AuditGroup.objects.create(
            run=run,
            key=group.key,
            attributes=group.attributes,
            photos=group.photos,
            identities=group.identities,
            impostor_pairs=group.impostor_pairs,
            genuine_pairs=group.genuine_pairs,
            insufficient=group.insufficient,
            insufficient_reasons=list(group.insufficient_reasons),
            threshold_at_target=_clean(group.threshold_at_target),
            fnmr_at_target=_clean(group.fnmr_at_target),
            target_fmr_resolvable=group.target_fmr_resolvable,
            impostor_distances=np.asarray(group.impostor_distances, dtype=np.float32).tobytes(),
            genuine_distances=np.asarray(group.genuine_distances, dtype=np.float32).tobytes(),
            impostor_people=np.asarray(group.impostor_people, dtype=np.int32).tobytes(),
            genuine_people=np.asarray(group.genuine_people, dtype=np.int32).tobytes(),
            effective_pairs=_clean(group.effective_pairs),
        )
        AuditRate.objects.bulk_create(
            AuditRate(
                group=stored,
                threshold=row.threshold,
                false_matches=row.false_matches,
                impostor_pairs=row.impostor_pairs,
                fmr=_clean(row.fmr),
                fmr_low=_clean(row.fmr_low),
                fmr_high=_clean(row.fmr_high),
                false_non_matches=row.false_non_matches,
                genuine_pairs=row.genuine_pairs,
                fnmr=_clean(row.fnmr),
                fnmr_low=_clean(row.fnmr_low),
                fnmr_high=_clean(row.fnmr_high),
                fmr_ratio_to_best=_clean(row.fmr_ratio_to_best),
                ratio_note=(row.fmr_ratio_note or "")[:300],
                fmr_effective_n=_clean(row.fmr_effective_n),
                fnmr_effective_n=_clean(row.fnmr_effective_n),
            )
            for row in group.rows
        )
    run.completed_at = timezone.now()
    run.save(update_fields=["completed_at"])
    audit_record(
        action="audit.run",
        actor=acting_user,
        organisation=organisation,
        target=run,
        detail={"dataset": dataset.pk, "groups": len(result.groups), "engine_version": version},
    )
    return run


def audit_run_for_each_organisation(*, dataset: AuditDataset, acting_user: Any, **options: Any) -> list[AuditRun]:
    """A shared set is run once per organisation, at each one's own threshold and target."""
    if dataset.organisation is not None:
        return [
            audit_run_create(dataset=dataset, organisation=dataset.organisation, acting_user=acting_user, **options)
        ]
    organisations = list(Organisation.objects.all()) or [None]
    return [
        audit_run_create(dataset=dataset, organisation=organisation, acting_user=acting_user, **options)
        for organisation in organisations
    ]


# Reading


@dataclass(frozen=True)
class AuditValidity:
    run: AuditRun | None
    valid: bool
    reason: str


def runs_for(organisation: Organisation) -> QuerySet[AuditRun]:
    return AuditRun.objects.filter(organisation=organisation, completed_at__isnull=False).select_related("dataset")


def audit_validity(organisation: Organisation) -> AuditValidity:
    """The latest completed audit for this organisation, and whether it may be relied on."""
    version = engine_version()
    run = runs_for(organisation).filter(engine_version=version).order_by("-completed_at", "-id").first()
    if run is None:
        other = runs_for(organisation).order_by("-completed_at").first()
        if other is not None:
            return AuditValidity(
                other, False, f"The latest audit measured {other.engine_version}, not the engine in use ({version})."
            )
        return AuditValidity(None, False, "No audit has been run for this organisation.")
    age = timezone.now() - run.completed_at
    if age > timedelta(days=organisation.audit_max_age_days):
        return AuditValidity(
            run,
            False,
            f"The latest audit is {age.days} days old; the organisation's policy allows "
            f"{organisation.audit_max_age_days}.",
        )
    return AuditValidity(run, True, "")


def fmr_disparity(groups: list[dict[str, Any]], thresholds: list[float]) -> list[dict[str, Any]]:
    """NIST's max / geometric-mean ratio of FMR across the sufficient demographic groups, at each threshold.

    A group with no false match is taken at the top of its 95% interval: a log-mean has no room for zero,
    and an observed zero is not a true zero.
    """
    out = []
    for threshold in thresholds:
        values = []
        for group in groups:
            if group["key"] == "all" or group["insufficient"]:
                continue
            rate = next((r for r in group["rates"] if abs(r["threshold"] - threshold) < 1e-9), None)
            if rate is None or rate["fmr"] is None:
                continue
            value = rate["fmr"] if rate["false_matches"] else rate["fmr_ci95"][1]
            if value and value > 0:
                values.append((value, group["key"], not rate["false_matches"]))
        if len(values) < 2:
            out.append({"threshold": threshold, "ratio": None, "groups": len(values), "max_group": None})
            continue
        geometric_mean = math.exp(sum(math.log(v) for v, _, _ in values) / len(values))
        top = max(values)
        out.append(
            {
                "threshold": threshold,
                "ratio": top[0] / geometric_mean,
                "groups": len(values),
                "max_group": top[1],
                "max_is_upper_bound": top[2],
                "zero_counts_at_upper_bound": sum(1 for _, _, zero in values if zero),
            }
        )
    return out


def audit_run_document(run: AuditRun) -> dict[str, Any]:
    """The stored rows of one run, as the JSON the command writes and the report page serves."""
    document = _audit_run_rows(run)
    document["fmr_max_to_geomean"] = fmr_disparity(document["groups"], run.thresholds)
    return document


def _fnmr_interval(group: AuditGroup, threshold: float | None) -> list[float | None]:
    """The identity-level interval of a group's FNMR at a threshold read from its stored genuine pairs."""
    people = group.genuine_people_array
    if threshold is None or not group.genuine_pairs or people is None:
        return [None, None]
    rate = fnmr_at(group.genuine_array, people, threshold)
    return [rate.low, rate.high]


def _audit_run_rows(run: AuditRun) -> dict[str, Any]:
    groups = run.groups.prefetch_related("rates").defer("impostor_distances", "impostor_people")
    return {
        "run": {
            "id": run.pk,
            "dataset": {"id": run.dataset_id, "name": run.dataset.name},
            "organisation": run.organisation.slug if run.organisation else None,
            "engine_version": run.engine_version,
            "completed_at": run.completed_at.isoformat() if run.completed_at else None,
            "threshold_in_use": run.threshold_in_use,
            "target_fmr": run.target_fmr,
            "min_identities": run.min_identities,
            "min_effective_pairs": run.min_effective_pairs,
            "photos": run.photos,
            "thresholds": run.thresholds,
            "interval_method": run.interval_method,
        },
        "groups": [
            {
                "key": group.key,
                "attributes": group.attributes,
                "photos": group.photos,
                "identities": group.identities,
                "impostor_pairs": group.impostor_pairs,
                "genuine_pairs": group.genuine_pairs,
                "insufficient": group.insufficient,
                "insufficient_reasons": group.insufficient_reasons,
                "threshold_at_target": group.threshold_at_target,
                "fnmr_at_target": group.fnmr_at_target,
                "fnmr_at_target_ci95": _fnmr_interval(group, group.threshold_at_target),
                "target_fmr_resolvable": group.target_fmr_resolvable,
                "effective_pairs": group.effective_pairs,
                "rates": [
                    {
                        "threshold": rate.threshold,
                        "false_matches": rate.false_matches,
                        "impostor_pairs": rate.impostor_pairs,
                        "fmr": rate.fmr,
                        "fmr_ci95": [rate.fmr_low, rate.fmr_high],
                        "false_non_matches": rate.false_non_matches,
                        "genuine_pairs": rate.genuine_pairs,
                        "fnmr": rate.fnmr,
                        "fnmr_ci95": [rate.fnmr_low, rate.fnmr_high],
                        "fmr_ratio_to_best": rate.fmr_ratio_to_best,
                        "ratio_note": rate.ratio_note,
                        "fmr_effective_n": rate.fmr_effective_n,
                        "fnmr_effective_n": rate.fnmr_effective_n,
                    }
                    for rate in group.rates.all()
                ],
            }
            for group in groups
        ],
    }


def threshold_advice(run: AuditRun) -> dict[str, Any] | None:
    """The threshold that holds the worst group with enough data at the target FMR, and its FNMR cost."""
    sufficient = [g for g in run.groups.filter(insufficient=False) if g.key != "all" and g.threshold_at_target]
    if not sufficient:
        return None
    worst = min(sufficient, key=lambda g: g.threshold_at_target)
    everyone = run.groups.filter(key="all").first()
    fnmr = fnmr_low = fnmr_high = None
    if everyone is not None and everyone.genuine_pairs:
        genuine = everyone.genuine_array
        fnmr = float((genuine > np.float32(worst.threshold_at_target)).sum() / len(genuine))
        people = everyone.genuine_people_array
        if people is not None:
            rate = fnmr_at(genuine, people, worst.threshold_at_target)
            fnmr_low, fnmr_high = rate.low, rate.high
    return {
        "threshold": worst.threshold_at_target,
        "group": worst.key,
        "resolvable": worst.target_fmr_resolvable,
        "fnmr": fnmr,
        "fnmr_ci95": [fnmr_low, fnmr_high],
        "target_fmr": run.target_fmr,
    }


def datasets_for(organisation: Organisation) -> QuerySet[AuditDataset]:
    return AuditDataset.objects.filter(Q(organisation=organisation) | Q(organisation__isnull=True))
