"""Reading bulk-enrolment uploads: a CSV manifest and a zip of photos.

Both are hostile until checked. The CSV must be UTF-8 with known columns; the
zip may hold only plain photo files, no paths that climb out, no nested
archives, nothing that inflates beyond sane limits, and no two entries that
unpack to one file: otherwise which photo is used depends on entry order, and a
person checking the zip in another tool may look at a different one.
"""

from __future__ import annotations

import csv
import io
import posixpath
import unicodedata
import zipfile
from dataclasses import dataclass
from datetime import date
from typing import Any

from matching.models import AgeBand, Ethnicity, Sex, date_problem
from portal.errors import Refusal

REQUIRED_COLUMNS = ("code", "file")
OPTIONAL_COLUMNS = ("display_name", "sex", "age_band", "ethnicity", "born_on", "captured_on")
COLUMN_ALIASES = {
    "race": "ethnicity",
    "name": "display_name",
    "subject_code": "code",
    "file_name": "file",
    "date_of_birth": "born_on",
    "date_taken": "captured_on",
}
MAX_MEMBER_BYTES = 30 * 1024 * 1024
MAX_TOTAL_BYTES = 2 * 1024 * 1024 * 1024
MAX_RATIO = 200
ARCHIVE_SUFFIXES = (".zip", ".gz", ".tgz", ".tar", ".7z", ".rar", ".bz2", ".xz")
UNKNOWN_WORDS = {"", "unknown", "u", "n/a", "na", "?"}


class BulkRejected(Refusal, ValueError):
    """The upload or one of its members is refused."""


@dataclass(frozen=True)
class ManifestRow:
    line: int
    code: str
    file: str
    display_name: str
    sex: str
    age_band: str
    ethnicity: str
    born_on: date | None = None
    captured_on: date | None = None


def upload_read(upload: Any, *, limit: int, label: str) -> bytes:
    if upload.size is not None and upload.size > limit:
        raise BulkRejected(f"{label} is {upload.size / 1048576:.0f} MB; the limit is {limit / 1048576:.0f} MB.")
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise BulkRejected(f"{label} is larger than the limit of {limit / 1048576:.0f} MB.")
    if not data:
        raise BulkRejected(f"{label} is empty.")
    return data


def _choice(value: str, choices: type, column: str, line: int) -> str:
    value = value.strip()
    if value.lower() in UNKNOWN_WORDS:
        return ""
    for option in choices:
        if value.lower() in (option.value.lower(), option.label.lower()) and option.value:
            return option.value
    allowed = ", ".join(o.value for o in choices if o.value)
    raise BulkRejected(f"line {line}: “{value}” is not a valid {column} (use one of {allowed}, or leave it blank).")


def _date(value: str, column: str, line: int) -> date | None:
    """A date column: YYYY-MM-DD, or blank/unknown; never in the future or before 1900."""
    value = value.strip()
    if value.lower() in UNKNOWN_WORDS:
        return None
    try:
        parsed = date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise BulkRejected(
            f"line {line}: “{value}” is not a date in {column} (write it as YYYY-MM-DD, or leave it blank)."
        )
    problem = date_problem(parsed, "date of birth" if column == "born_on" else "date taken")
    if problem:
        raise BulkRejected(f"line {line}: {problem}")
    return parsed


def manifest_parse(data: bytes) -> list[ManifestRow]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BulkRejected(f"The CSV file is not UTF-8 text (byte {error.start} cannot be read).") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise BulkRejected("The CSV file has no header row.") from None
    except csv.Error as error:
        raise BulkRejected(f"The CSV file cannot be read: {error}.") from None
    columns = [COLUMN_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise BulkRejected(f"The CSV file lacks the column(s): {', '.join(missing)}.")
    unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise BulkRejected(
            f"The CSV file has unknown column(s): {', '.join(unknown)}. "
            f"Allowed: {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}."
        )
    if len(set(columns)) != len(columns):
        raise BulkRejected("The CSV file names a column twice.")
    rows: list[ManifestRow] = []
    seen_files: set[str] = set()
    try:
        for line, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(columns):
                raise BulkRejected(f"line {line}: expected {len(columns)} values, found {len(values)}.")
            record = dict(zip(columns, (v.strip() for v in values), strict=True))
            if not record["code"] or not record["file"]:
                raise BulkRejected(f"line {line}: the code and file columns must not be empty.")
            if len(record["code"]) > 100 or len(record.get("display_name", "")) > 200:
                raise BulkRejected(f"line {line}: the code or name is too long.")
            if record["file"] in seen_files:
                raise BulkRejected(f"line {line}: the file {record['file']} is listed twice.")
            seen_files.add(record["file"])
            rows.append(
                ManifestRow(
                    line=line,
                    code=record["code"],
                    file=record["file"],
                    display_name=record.get("display_name", ""),
                    sex=_choice(record.get("sex", ""), Sex, "sex", line),
                    age_band=_choice(record.get("age_band", ""), AgeBand, "age band", line),
                    ethnicity=_choice(record.get("ethnicity", ""), Ethnicity, "race/ethnicity", line),
                    born_on=_date(record.get("born_on", ""), "born_on", line),
                    captured_on=_date(record.get("captured_on", ""), "captured_on", line),
                )
            )
            if rows[-1].born_on and rows[-1].captured_on and rows[-1].captured_on < rows[-1].born_on:
                raise BulkRejected(f"line {line}: the photo cannot be taken before the date of birth.")
    except csv.Error as error:
        raise BulkRejected(f"The CSV file cannot be read: {error}.") from None
    if not rows:
        raise BulkRejected("The CSV file has no rows.")
    attributes: dict[str, tuple[str, ...]] = {}
    for row in rows:
        values = (row.display_name, row.sex, row.age_band, row.ethnicity, row.born_on)
        if attributes.setdefault(row.code, values) != values:
            raise BulkRejected(f"line {row.line}: subject {row.code} is listed with different details on two rows.")
    return rows


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return f"{name}: absolute paths are not allowed in the zip."
    if ".." in posixpath.normpath(name.replace("\\", "/")).split("/"):
        return f"{name}: paths that climb out of the zip (..) are not allowed."
    if info.is_dir():
        return None
    if name.lower().endswith(ARCHIVE_SUFFIXES):
        return f"{name}: archives inside the zip are not allowed."
    if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
        return f"{name}: it inflates {info.file_size // info.compress_size}-fold, which looks like a zip bomb."
    if info.file_size > MAX_MEMBER_BYTES:
        return (
            f"{name}: {info.file_size / 1048576:.0f} MB unpacked, over the limit of {MAX_MEMBER_BYTES // 1048576} MB."
        )
    return None


def _unpacked_as(name: str) -> str:
    """The file an entry unpacks to, as the most forgiving tool sees it: either slash, no ./ or //, the composed
    Unicode form, and letter case ignored (Windows and macOS file systems)."""
    return unicodedata.normalize("NFC", posixpath.normpath(name.replace("\\", "/"))).casefold()


def _duplicate_problem(infos: list[zipfile.ZipInfo]) -> str | None:
    entries: dict[str, list[str]] = {}
    for info in infos:
        if not info.is_dir():
            entries.setdefault(_unpacked_as(info.filename), []).append(info.filename)
    for names in entries.values():
        if len(names) > 1:
            return (
                f"{' and '.join(dict.fromkeys(names))}: the zip holds {len(names)} entries that unpack to this one "
                "file (names that differ only in letter case, a leading ./, the slash or the Unicode form count as "
                "one). Give each photo a name of its own."
            )
    return None


def archive_check(data: bytes, *, max_members: int) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except zipfile.BadZipFile:
        raise BulkRejected("The photos file is not a valid zip archive.") from None
    if len(infos) > max_members:
        raise BulkRejected(f"The zip holds {len(infos)} entries; the limit is {max_members}.")
    if sum(i.file_size for i in infos) > MAX_TOTAL_BYTES:
        raise BulkRejected("The zip inflates to more than 2 GB, which looks like a zip bomb.")
    for info in infos:
        problem = _member_problem(info)
        if problem:
            raise BulkRejected(problem)
    problem = _duplicate_problem(infos)
    if problem:
        raise BulkRejected(problem)


class SafeArchive:
    """Reads members by their exact name, with the size limits applied again while inflating. A zip with two
    entries that unpack to one file is refused here too (an upload stored before `archive_check` refused it)."""

    def __init__(self, data: bytes) -> None:
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            raise BulkRejected("The photos file is not a valid zip archive.") from None
        problem = _duplicate_problem(self._zip.infolist())
        if problem:
            self._zip.close()
            raise BulkRejected(problem)
        self._names = {info.filename: info for info in self._zip.infolist() if not info.is_dir()}

    def __enter__(self) -> SafeArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zip.close()

    def read(self, name: str) -> bytes:
        info = self._names.get(name)
        if info is None:
            raise BulkRejected(f"{name} is not in the zip.")
        problem = _member_problem(info)
        if problem:
            raise BulkRejected(problem)
        try:
            with self._zip.open(info) as handle:
                data = handle.read(MAX_MEMBER_BYTES + 1)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise BulkRejected(f"{name} cannot be read from the zip ({error}).") from None
        if len(data) > MAX_MEMBER_BYTES:
            raise BulkRejected(f"{name} inflates past its declared size.")
        return data
