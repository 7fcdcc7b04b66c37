"""Camtrap DP 1.0 data package of exported days (https://camtrap-dp.tdwg.org).

What the package says, and why:

- Deployment = one run of the trap: the camera at its site with one configuration and one model
  (a restart with a new config or model is a new deployment; `deploymentTags` name the run,
  software and model). Its start and end are the first and last moment the run watched or saw
  an insect *within the exported days* (frame time, so a replayed night is dated by its frames,
  not by the replay), to the second (start rounded down, end up). Coordinates and location name
  come from the run's own config snapshot (site section), else from the current site config; a
  package without coordinates is refused (Camtrap DP requires them).
- Observation = one finished track (status 'ended'): observationLevel "event", eventID the
  track id, eventStart/eventEnd its first and last sighting, count 1, scientificName the
  deepest label of the vote without a trailing "(Common Name)" (iNaturalist-style labels; the
  common name goes to the `taxonomic` entry's vernacularNames.eng), classificationMethod
  "machine", classifiedBy the model name, classificationProbability the vote's confidence. A track
  whose vote abstained everywhere is `animal` without a name, a third-party model's `background`
  answer `unknown` (DESIGN.md's table; `unclassified` would mean "not classified yet"). The
  whole lineage goes to observationTags
  (`level:species|order:Lepidoptera|family:Noctuidae|hits:12|size_class:large|length_mm:21.30`,
  `length_px` where the camera's scale is not configured) and the package's `taxonomic`
  list (taxonRank where the level is a Camtrap DP rank).
- Media = the best crop of each track that is still on disk, copied into the package under
  `media/<path in the crops folder>`; filePath is relative to the package, filePublic false,
  favorite true, captureMethod "activityDetection" (crops exist because the detector fired).
  Event-level observations leave mediaID empty, as the standard says; a crop belongs to its
  event through deploymentID and its timestamp, which lies between eventStart and eventEnd.
- Time-lapse snapshots (tracker.mode timelapse, storage.save_snapshots): each kept snapshot image
  is a media row too (mediaID `s<snapshot id>`, captureMethod "timeLapse", copied to
  `media/snapshots/...`), with media-level observations: one per taxon the snapshot showed
  (count = the counted insects of that crop answer in it; classificationProbability their crops'
  mean score; observationTags `snapshot|tracks:<ids>` name the individuals, whose event-level
  observations have those eventIDs; crops the open set called unknown make one `animal`
  observation without a name, tagged `snapshot|unknown|tracks:<ids>`, whatever label the model
  gave them), or one "blank" observation when it showed none. As Camtrap
  DP says, event-level observations are the ones to sum (each insect once); media-level ones
  say what each snapshot showed. Snapshots whose image retention deleted are not in the package
  (the daily snapshots CSV keeps every snapshot's counts).
- `created` is the end of the last exported day, not the time of the export, so re-running
  the export on the same data gives byte-identical files.

Validation (`validate_camtrap_dp`) needs the optional `frictionless` package (extra `export`);
it runs offline against table schemas and a package profile vendored in camtrap_schemas/,
written from the 1.0 specification, while datapackage.json names the official URLs.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from edge.classify.names import scientific_name, split_label
from edge.classify.types import BACKGROUND, UNKNOWN, names_a_taxon
from edge.config import ExportConfig, SiteConfig
from edge.errors import ExportError
from edge.export.csvsafe import Num, atomic_write, fixed, integer, render_csv
from edge.export.data import (
    RunRecord,
    SnapshotMedia,
    TrackRecord,
    current_runs,
    day_window,
    ordered_levels,
    read_runs,
    read_snapshot_media,
    read_tracks,
    snapshot,
)
from edge.store.schema import parse_utc, utc_iso

VERSION = "1.0"
BASE_URL = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}"
PROFILE_URL = f"{BASE_URL}/camtrap-dp-profile.json"
TABLES = ("deployments", "media", "observations")
SCHEMA_DIR = Path(__file__).with_name("camtrap_schemas")
CAMTRAP_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species", "subspecies")
_HIGHER_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus")


def table_schema(name: str) -> dict[str, Any]:
    """The vendored Camtrap DP 1.0 table schema of `name` (deployments, media, observations)."""
    return json.loads((SCHEMA_DIR / f"{name}-table-schema.json").read_text(encoding="utf-8"))


def _fields(name: str) -> list[str]:
    return [f["name"] for f in table_schema(name)["fields"]]


def _ts(moment: datetime) -> str:
    """Camtrap DP timestamp: UTC to the second with 'Z' (the schemas' %Y-%m-%dT%H:%M:%S%z)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ceil_second(moment: datetime) -> datetime:
    return moment if moment.microsecond == 0 else moment.replace(microsecond=0) + timedelta(seconds=1)


def _row(columns: Sequence[str], values: dict[str, object]) -> list[object]:
    unknown = set(values) - set(columns)
    if unknown:  # a bug: a field that the schema does not have
        raise ExportError(f"camtrap: unknown fields {sorted(unknown)}")
    return [values.get(c) for c in columns]


class _Deployment:
    """One run's part of the package: its place and the span it covers."""

    def __init__(self, run: RunRecord, site: SiteConfig) -> None:
        self.run = run
        snap = run.config.get("site")
        snap = snap if isinstance(snap, dict) else {}
        if snap.get("latitude") is not None and snap.get("longitude") is not None:
            self.latitude, self.longitude = float(snap["latitude"]), float(snap["longitude"])
        else:
            self.latitude, self.longitude = site.latitude, site.longitude
        self.name: str | None = snap.get("name") or site.name
        self.start: datetime | None = None
        self.end: datetime | None = None

    @property
    def deployment_id(self) -> str:
        return f"{self.run.device_id}-run{self.run.run_id}"

    def cover(self, start: datetime, end: datetime) -> None:
        self.start = start if self.start is None else min(self.start, start)
        self.end = end if self.end is None else max(self.end, end)


def _deployments(
    conn: Any,
    windows: Sequence[tuple[datetime, datetime]],
    tracks: Sequence[TrackRecord],
    site: SiteConfig,
    snaps: Sequence[SnapshotMedia] = (),
) -> dict[int, _Deployment]:
    spans: dict[int, list[tuple[datetime, datetime]]] = {}
    for wstart, wend in windows:
        rows = conn.execute(
            "SELECT run_id, start_utc, end_utc FROM summaries WHERE end_utc > ? AND start_utc < ? "
            f"AND (effort_s > 0 OR frames_processed > 0 OR tracks > 0){current_runs(conn)}",
            (utc_iso(wstart), utc_iso(wend)),
        ).fetchall()
        for r in rows:
            s, e = max(parse_utc(r["start_utc"]), wstart), min(parse_utc(r["end_utc"]), wend)
            spans.setdefault(int(r["run_id"]), []).append((s, e))
    for t in tracks:
        spans.setdefault(t.run_id, []).append((t.first, t.last))
    for m in snaps:
        spans.setdefault(m.run_id, []).append((m.ts, m.ts))
    runs = read_runs(conn, spans)
    out: dict[int, _Deployment] = {}
    for run_id in sorted(runs):
        dep = _Deployment(runs[run_id], site)
        for s, e in spans[run_id]:
            dep.cover(s, e)
        if dep.latitude is None or dep.longitude is None:
            raise ExportError(
                f"run {run_id}: no coordinates; set site.latitude and site.longitude in the config "
                f"(Camtrap DP deployments need them)"
            )
        out[run_id] = dep
    return out


def _snapshot_rows(
    snaps: Sequence[SnapshotMedia],
    deployments: dict[int, _Deployment],
    crops_root: Path,
    pkg: Path,
    kept_media: set[PurePosixPath],
) -> tuple[list[list[object]], list[list[object]]]:
    """Media rows of the kept snapshot images and their media-level observations (module docstring)."""
    obs_cols = _fields("observations")
    media_rows: list[list[object]] = []
    obs_rows: list[list[object]] = []
    for m in snaps:
        dep = deployments[m.run_id]
        media_id = f"s{m.snapshot_id}"
        row = _media_row(
            crops_root,
            pkg,
            kept_media,
            m.image_path,
            {
                "mediaID": media_id,
                "deploymentID": dep.deployment_id,
                "captureMethod": "timeLapse",
                "timestamp": _ts(m.ts),
                "favorite": False,
                "mediaComments": f"time-lapse snapshot of run {m.run_id}",
            },
        )
        if row is None:
            continue  # gone from disk without retention's mark: no media, so no media-level observation
        media_rows.append(row)
        groups: dict[str | None, list[Any]] = {}
        for insect in m.insects:  # a taxon, unknown (the open set), `background`, or None (no answer)
            if insect.unknown:  # the label is what the model said of an insect unlike all it knows
                key: str | None = UNKNOWN
            else:
                key = insect.label if names_a_taxon(insect.label) or insect.label == BACKGROUND else None
            groups.setdefault(key, []).append(insect)
        base = {
            "deploymentID": dep.deployment_id,
            "mediaID": media_id,
            "eventStart": _ts(m.ts),
            "eventEnd": _ts(m.ts),
            "observationLevel": "media",
        }
        if not groups:
            obs_rows.append(
                _row(obs_cols, {**base, "observationID": f"{media_id}-0", "observationType": "blank"})
            )
        named = sorted(k for k in groups if names_a_taxon(k))
        rest = [k for k in (UNKNOWN, BACKGROUND, None) if k in groups]
        for n, label in enumerate([*named, *rest], start=1):
            insects = groups[label]
            name = scientific_name(label) if names_a_taxon(label) else None
            scores = [i.score for i in insects if i.score is not None]
            mean = min(1.0, max(0.0, sum(scores) / len(scores))) if scores and name else None
            obs_rows.append(
                _row(
                    obs_cols,
                    {
                        **base,
                        "observationID": f"{media_id}-{n}",
                        "observationType": observation_type(label),
                        "scientificName": name,
                        "count": integer(len(insects)),
                        "classificationMethod": "machine" if label else None,
                        "classifiedBy": (dep.run.model_name or "trapcam") if label else None,
                        "classificationProbability": fixed(mean, 4),
                        "observationTags": ("snapshot|unknown|" if label == UNKNOWN else "snapshot|")
                        + "tracks:"
                        + ",".join(str(i.track_id) for i in insects),
                    },
                )
            )
    return media_rows, obs_rows


def observation_type(label: str | None) -> str:
    """Camtrap DP observationType of a counted insect, as DESIGN.md's table says: `animal` for a named
    taxon and for an unsure answer (an insect; no level confident), `unknown` for a third-party model's
    `background` (the spec's "cannot say what was recorded"). Never `unclassified`, which means "not
    classified yet": every counted track was."""
    return "unknown" if label == BACKGROUND else "animal"


def _media_row(
    crops_root: Path,
    pkg: Path,
    kept_media: set[PurePosixPath],
    image_path: str,
    values: dict[str, object],
) -> list[object] | None:
    """Copy an image below the crops folder (a crop or a kept snapshot) into the package's media/
    and return its media row (`values` plus the file fields); None when the path would leave the
    crops folder or the file is not on disk."""
    rel = PurePosixPath(image_path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return None
    if not _copy_crop(crops_root.joinpath(*rel.parts), pkg.joinpath("media", *rel.parts)):
        return None
    kept_media.add(PurePosixPath("media", rel))
    file_fields = {
        "filePath": f"media/{rel.as_posix()}",
        "filePublic": False,
        "fileName": rel.name,
        "fileMediatype": mimetypes.guess_type(rel.name)[0] or "image/jpeg",
    }
    return _row(_fields("media"), {**values, **file_fields})


def _copy_crop(src: Path, dest: Path) -> bool:
    """Copy one crop into the package (atomically; skipped when the same bytes are there)."""
    try:
        data = src.read_bytes()
    except OSError:
        return False
    atomic_write(dest, data)
    return True


def _package_dir(out_dir: Path, device_id: str, days: Sequence[date]) -> Path:
    first, last = min(days), max(days)
    span = first.isoformat() if first == last else f"{first.isoformat()}_{last.isoformat()}"
    return Path(out_dir) / f"camtrap-dp_{device_id}_{span}"


def write_camtrap_dp(
    db_path: Path,
    out_dir: Path,
    days: Sequence[date],
    site: SiteConfig,
    export: ExportConfig,
    device_id: str,
    *,
    crops_dir: Path | None = None,
) -> Path:
    """Write the package for `days` into `<out_dir>/camtrap-dp_<device>_<first>[_<last>]/`.

    Returns the package folder.

    crops_dir: the trap's crops folder (default: `crops` next to the database), from which each
    track's best crop is copied into the package's media/ folder.
    """
    if not days:
        raise ExportError("camtrap-dp: no days to export")
    days = sorted(set(days))
    crops_root = Path(crops_dir) if crops_dir is not None else Path(db_path).parent / "crops"
    windows = [day_window(d, site.timezone, export.day_starts_at) for d in days]
    pkg = _package_dir(out_dir, device_id, days)
    with snapshot(Path(db_path)) as conn:
        tracks = read_tracks(conn, windows)
        snaps = read_snapshot_media(conn, windows)
        deployments = _deployments(conn, windows, tracks, site, snaps)
    if not deployments and (site.latitude is None or site.longitude is None):
        raise ExportError("site.latitude and site.longitude must be set for a Camtrap DP package")

    media_rows, observation_rows, kept_media = [], [], set()
    media_cols, obs_cols = _fields("media"), _fields("observations")
    for t in tracks:
        dep = deployments[t.run_id]
        if t.crop_path and t.crop_detection_id is not None and t.crop_ts is not None:
            row = _media_row(
                crops_root,
                pkg,
                kept_media,
                t.crop_path,
                {
                    "mediaID": f"d{t.crop_detection_id}",
                    "deploymentID": dep.deployment_id,
                    "captureMethod": "activityDetection",
                    "timestamp": _ts(t.crop_ts),
                    "favorite": True,
                    "mediaComments": f"best crop of track {t.track_id}",
                },
            )
            if row is not None:
                media_rows.append(row)
        tags = [f"level:{t.level}"] if not t.unsure and t.level else []
        if t.unknown:  # DESIGN.md: `animal` without a name, as unsure, tagged unknown (open set)
            tags.append(UNKNOWN)
        tags += [f"{lv}:{t.lineage[lv]}" for lv in ordered_levels([t])]
        tags.append(f"hits:{t.hits}")
        if t.size_class is not None:  # body size: a biomass proxy (config `size`)
            tags.append(f"size_class:{t.size_class}")
        if t.length_mm is not None:
            tags.append(f"length_mm:{t.length_mm:.2f}")
        elif t.length_px is not None:
            tags.append(f"length_px:{t.length_px:.0f}")
        score = None if t.unsure or t.unknown or t.score is None else min(1.0, max(0.0, t.score))
        answerless = t.unsure and not t.background  # the vote abstained: no method to name
        observation_rows.append(
            _row(
                obs_cols,
                {
                    "observationID": f"t{t.track_id}",
                    "deploymentID": dep.deployment_id,
                    "eventID": str(t.track_id),
                    "eventStart": _ts(t.first),
                    "eventEnd": _ts(t.last),
                    "observationLevel": "event",
                    "observationType": observation_type(t.label),
                    "scientificName": None if t.unsure or t.unknown else scientific_name(t.label),
                    "count": integer(1),
                    "classificationMethod": None if answerless else "machine",
                    "classifiedBy": None if answerless else (dep.run.model_name or "trapcam"),
                    "classificationProbability": fixed(score, 4),
                    "observationTags": "|".join(tags),
                },
            )
        )

    snapshot_media, snapshot_obs = _snapshot_rows(snaps, deployments, crops_root, pkg, kept_media)
    media_rows += snapshot_media
    observation_rows += snapshot_obs

    dep_cols = _fields("deployments")
    deployment_rows = []
    for dep in deployments.values():
        assert dep.start is not None and dep.end is not None
        tags = [f"trapcamRun:{dep.run.run_id}", f"software:trapcam {dep.run.software_version}"]
        if dep.run.model_name:
            tags.append(f"model:{dep.run.model_name}")
        if dep.run.model_sha256:
            tags.append(f"modelSha256:{dep.run.model_sha256}")
        deployment_rows.append(
            _row(
                dep_cols,
                {
                    "deploymentID": dep.deployment_id,
                    "locationName": dep.name,
                    "latitude": _coord(dep.latitude),
                    "longitude": _coord(dep.longitude),
                    "deploymentStart": _ts(dep.start.replace(microsecond=0)),
                    "deploymentEnd": _ts(_ceil_second(dep.end)),
                    "cameraID": dep.run.device_id,
                    "deploymentTags": "|".join(tags),
                },
            )
        )

    descriptor = _descriptor(
        device_id, days, windows, deployments, tracks, site, timelapse=bool(snapshot_obs)
    )
    files = {
        "deployments.csv": render_csv(dep_cols, deployment_rows),
        "media.csv": render_csv(media_cols, media_rows),
        "observations.csv": render_csv(obs_cols, observation_rows),
        "datapackage.json": (json.dumps(descriptor, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
    }
    for name, data in files.items():
        atomic_write(pkg / name, data)
    _remove_stale_media(pkg, kept_media)
    return pkg


def _coord(value: float | None) -> Num | None:
    """Coordinates with 6 decimals (about 0.1 m): stable text, and never formula-escaped."""
    return None if value is None else fixed(float(value), 6)


def _descriptor(
    device_id: str,
    days: Sequence[date],
    windows: Sequence[tuple[datetime, datetime]],
    deployments: dict[int, _Deployment],
    tracks: Sequence[TrackRecord],
    site: SiteConfig,
    *,
    timelapse: bool = False,
) -> dict[str, Any]:
    first, last = min(days), max(days)
    points = sorted(
        {(round(float(d.longitude), 6), round(float(d.latitude), 6)) for d in deployments.values()}
    )
    if not points:
        assert site.latitude is not None and site.longitude is not None
        points = [(round(site.longitude, 6), round(site.latitude, 6))]
    spatial: dict[str, Any] = (
        {"type": "Point", "coordinates": list(points[0])}
        if len(points) == 1
        else {"type": "MultiPoint", "coordinates": [list(p) for p in points]}
    )
    starts = [d.start for d in deployments.values() if d.start is not None]
    ends = [d.end for d in deployments.values() if d.end is not None]
    temporal = {
        "start": (min(starts) if starts else windows[0][0]).astimezone(timezone.utc).date().isoformat(),
        "end": (max(ends) if ends else windows[-1][1]).astimezone(timezone.utc).date().isoformat(),
    }
    taxa: dict[str, dict[str, Any]] = {}
    for t in tracks:
        if t.unsure or t.unknown or not t.label:
            continue
        name, common = split_label(t.label)
        if name in taxa:
            continue
        entry: dict[str, Any] = {"scientificName": name}
        if t.level in CAMTRAP_RANKS:
            entry["taxonRank"] = t.level
        for rank in _HIGHER_RANKS:
            if rank in t.lineage and rank != t.level:
                entry[rank] = scientific_name(t.lineage[rank])
        if common:  # "Apis mellifera (Honey Bee)": GBIF matches the name, people read the common one
            entry["vernacularNames"] = {"eng": common}
        taxa[name] = entry
    versions = sorted({d.run.software_version for d in deployments.values()})
    span = first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"
    title = site.name or f"trapcam {device_id}"
    return {
        "profile": PROFILE_URL,
        "name": _package_name(device_id, first, last),
        "title": f"Insect camera trap {device_id}: {span}",
        "created": _ts(windows[-1][1]),
        "contributors": [{"title": f"trapcam device {device_id}", "role": "contributor"}],
        "sources": [{"title": "trapcam", "version": ", ".join(versions)}] if versions else [],
        "project": {
            "title": title,
            "samplingDesign": "targeted",
            "captureMethod": ["activityDetection", "timeLapse"] if timelapse else ["activityDetection"],
            "individualAnimals": False,
            "observationLevel": ["event", "media"] if timelapse else ["event"],
        },
        "spatial": spatial,
        "temporal": temporal,
        "taxonomic": [taxa[k] for k in sorted(taxa)],
        "resources": [
            {
                "name": name,
                "path": f"{name}.csv",
                "profile": "tabular-data-resource",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "schema": f"{BASE_URL}/{name}-table-schema.json",
            }
            for name in TABLES
        ],
    }


def _package_name(device_id: str, first: date, last: date) -> str:
    """Data Package names are lower-case letters, digits, '.', '_', '-'."""
    device = "".join(c if c.isalnum() or c in "._-" else "-" for c in device_id.lower())
    span = first.isoformat() if first == last else f"{first.isoformat()}_{last.isoformat()}"
    return f"trapcam-{device}-{span}"


def _remove_stale_media(pkg: Path, keep: set[PurePosixPath]) -> None:
    """Crops from an earlier export that this one no longer lists (retention deleted them)."""
    media = pkg / "media"
    if not media.is_dir():
        return
    for path in sorted(media.rglob("*"), reverse=True):
        rel = PurePosixPath(path.relative_to(pkg).as_posix())
        with contextlib.suppress(OSError):
            if path.is_file() and rel not in keep:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


# ---------------------------------------------------------------- validation


def validate_camtrap_dp(path: Path) -> list[str]:
    """Problems of a Camtrap DP package (its folder or datapackage.json); [] when it is valid.

    Checks the package metadata against the vendored 1.0 profile, and every table (types,
    required fields, enums, keys, foreign keys) with frictionless, offline.
    """
    try:
        import frictionless
        import jsonschema
    except ImportError:
        raise ExportError(
            "validating Camtrap DP needs the 'frictionless' package: pip install 'trapcam[export]'"
        ) from None
    path = Path(path)
    descriptor_path = path / "datapackage.json" if path.is_dir() else path
    try:
        descriptor = json.loads(descriptor_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"{descriptor_path}: not found"]
    except (OSError, ValueError) as exc:
        return [f"{descriptor_path}: not readable JSON: {exc}"]
    if not isinstance(descriptor, dict):
        return [f"{descriptor_path}: expected a JSON object"]
    errors: list[str] = []
    profile = json.loads((SCHEMA_DIR / "camtrap-dp-profile.json").read_text(encoding="utf-8"))
    for err in sorted(
        jsonschema.Draft7Validator(profile).iter_errors(descriptor), key=lambda e: list(e.path)
    ):
        where = "/".join(str(p) for p in err.path) or "(top level)"
        errors.append(f"datapackage.json: {where}: {err.message}")

    local = {k: v for k, v in descriptor.items() if k not in ("profile", "$schema")}
    resources = []
    for res in descriptor.get("resources") or []:
        if isinstance(res, dict) and res.get("name") in TABLES:
            res = {**res, "schema": table_schema(res["name"])}
        resources.append(res)
    local["resources"] = resources
    base = descriptor_path.parent
    try:
        package = frictionless.Package(local, basepath=str(base))
        report = package.validate()
    except Exception as exc:  # frictionless raises its own errors for unusable descriptors
        return [*errors, f"datapackage.json: cannot be read as a data package: {exc}"]
    for err in report.errors:
        errors.append(f"datapackage.json: {err.message}")
    for task in report.tasks:
        for err in task.errors:
            row = getattr(err, "row_number", None)
            where = f"{task.name}.csv row {row}" if row else f"{task.name}.csv"
            errors.append(f"{where}: {err.message}")
    errors += _missing_media(base)
    return errors


def _missing_media(base: Path) -> list[str]:
    """Media rows pointing at files inside the package that are not there."""
    import csv

    media = base / "media.csv"
    if not media.is_file():
        return []
    out = []
    with open(media, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            file_path = row.get("filePath") or ""
            if file_path and "://" not in file_path and not (base / file_path).is_file():
                out.append(f"media.csv row {n}: filePath {file_path!r} is not in the package")
    return out


def package_files(pkg: Path) -> list[Path]:
    """The package's own files (not the media), in a fixed order, for printing."""
    return [pkg / "datapackage.json", *(pkg / f"{name}.csv" for name in TABLES)]


__all__ = ["package_files", "table_schema", "validate_camtrap_dp", "write_camtrap_dp"]
