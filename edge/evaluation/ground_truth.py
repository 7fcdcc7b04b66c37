"""Ground truth for `trapcam evaluate`: annotated frames in the synthetic, COCO or MOT format.

Whatever the format, the result is one `GroundTruth`: every frame in playback order (frames
without insects too, the detector must stay quiet on them), each with its image file, a UTC
time and the annotated insects (box, track id when the format has one, taxon per level).

Formats:

* synthetic: a folder written by `trapcam synth` (`edge.synth.writer`): frames named
  `YYYYmmdd-HHMMSS-NNNNNN.jpg` (NNNNNN = frame index) and `ground_truth.csv`.
* coco: one JSON file (`images`, `annotations`, `categories`); track ids from `track_id`,
  `instance_id` or `attributes.track_id`; a category's `name` is its finest level
  (`"level"`, default species) and coarser levels come from keys such as `"order"` or a
  `"lineage": {level: label}` mapping.
* mot: a MOT Challenge sequence (`gt/gt.txt`, `img1/000001.jpg`, optional `seqinfo.ini`).

Every problem with the input is an `EvaluationError` of one line naming the file, the line or
record and what was expected.
"""

from __future__ import annotations

import configparser
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edge.classify.taxonomy import RANKS
from edge.detect.base import Box
from edge.errors import TrapcamError
from edge.evaluation.counting import EvaluationError

FORMATS = ("synthetic", "coco", "mot")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_START = datetime(2000, 1, 1, tzinfo=timezone.utc)
DEFAULT_FPS = 1.0
_SYNTH_NAME = re.compile(r"^(\d{8}-\d{6})-(\d+)\.[A-Za-z]+$")


@dataclass(frozen=True)
class TruthObject:
    """One annotated insect in one frame.

    insect_id: track / instance id; None when the annotation has none (COCO without ids).
    taxa: level -> label, e.g. {"order": .., "family": .., "species": ..}; may be {}.
    box: pixel coordinates of the full frame.
    """

    insect_id: int | None
    taxa: dict[str, str]
    box: Box


@dataclass(frozen=True)
class TruthFrame:
    """One frame: index (Frame.index), image file, UTC time, and the insects on it."""

    index: int
    path: Path
    timestamp: datetime
    objects: tuple[TruthObject, ...]


@dataclass(frozen=True)
class GroundTruth:
    """Every annotated frame in playback order, and what the annotations allow to measure.

    levels: taxonomic levels present, coarse -> fine; () when no taxa.
    has_ids: every object has an insect_id (tracking and count metrics possible).
    clock: how the frames' times were obtained (an `edge.frames.CLOCK_SOURCES` value).
    notes: things the report must say about how the ground truth was read (e.g. assumed fps).
    """

    frames: tuple[TruthFrame, ...]
    fmt: str
    source: Path
    levels: tuple[str, ...]
    has_ids: bool
    clock: str = "filename"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def box_count(self) -> int:
        """Annotated boxes over all frames."""
        return sum(len(f.objects) for f in self.frames)

    @property
    def insect_count(self) -> int | None:
        """Distinct insects (track ids); None when the annotations have no ids."""
        if not self.has_ids:
            return None
        return len({o.insect_id for f in self.frames for o in f.objects})


# ---------------------------------------------------------------- entry point


def detect_format(path: Path) -> str:
    """The format of `path` by its shape, or EvaluationError naming the accepted ones."""
    if path.is_dir():
        if (path / "ground_truth.csv").is_file():
            return "synthetic"
        if (path / "gt" / "gt.txt").is_file():
            return "mot"
    elif path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        if path.name == "gt.txt":
            return "mot"
        if path.name == "ground_truth.csv":
            return "synthetic"
    elif not path.exists():
        raise EvaluationError(f"{path}: ground truth not found")
    raise EvaluationError(
        f"{path}: cannot tell the ground-truth format; expected a folder with ground_truth.csv (synthetic), "
        "a COCO .json file (coco), or gt.txt / a folder with gt/gt.txt (mot); or pass --format"
    )


def load_ground_truth(
    path: Path,
    fmt: str | None = None,
    *,
    images: Path | None = None,
    fps: float | None = None,
    start: datetime | None = None,
    classes: Path | None = None,
) -> GroundTruth:
    """Read annotated frames; see the module docstring for the formats.

    images: folder the COCO file names (or the MOT frames) are in (default: beside the file).
    fps / start: frame times when the annotations have none (COCO without date_captured, MOT);
        default 1 frame per second from 2000-01-01T00:00Z, and the report says so.
    classes: MOT only, a labels.txt whose line n names class n.
    """
    path = Path(path)
    if fmt is None:
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise EvaluationError(
            f"{path}: unknown ground-truth format {fmt!r}; expected one of {', '.join(FORMATS)}"
        )
    if not path.exists():
        raise EvaluationError(f"{path}: ground truth not found")
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise EvaluationError(f"{path}: fps {fps!r}; expected frames per second > 0")
    if start is not None and start.tzinfo is None:
        raise EvaluationError(f"{path}: start {start.isoformat()}; expected a time with a time zone")
    given = {"images": images, "fps": fps, "start": start, "classes": classes}
    allowed = {"synthetic": set(), "coco": {"images", "fps", "start"}, "mot": set(given)}[fmt]
    extra = sorted(k for k, v in given.items() if v is not None and k not in allowed)
    if extra:
        expected = f"only {', '.join(sorted(allowed))}" if allowed else "none of images, fps, start, classes"
        raise EvaluationError(
            f"{path}: {', '.join(extra)} does not apply to the {fmt} format; expected {expected}"
        )
    if fmt == "synthetic":
        truth = _load_synthetic(path)
    elif fmt == "coco":
        truth = _load_coco(path, images, fps, start)
    else:
        truth = _load_mot(path, images, fps, start, classes)
    if not truth.frames:
        raise EvaluationError(f"{truth.source}: no frames; expected at least one annotated image")
    if truth.box_count == 0:
        raise EvaluationError(
            f"{truth.source}: empty ground truth (no insect annotated in any of {len(truth.frames)} frames); "
            "expected at least one box"
        )
    return truth


# ---------------------------------------------------------------- shared checks


def _image_files(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    except OSError as exc:
        raise EvaluationError(f"{folder}: cannot list the image folder: {exc.strerror or exc}") from None


def _box_from_xywh(values: Any, where: str) -> Box:
    """[x, y, w, h] (numbers, w and h > 0) -> a pixel Box with x1/y1 exclusive."""
    if (
        not isinstance(values, (list, tuple))
        or len(values) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        or not all(math.isfinite(v) for v in values)
    ):
        raise EvaluationError(f"{where}: bbox {values!r}; expected 4 numbers [x, y, width, height]")
    x, y, w, h = (float(v) for v in values)
    if w < 0 or h < 0:
        raise EvaluationError(
            f"{where}: bbox {list(values)} has a negative size; expected width and height > 0"
        )
    if w == 0 or h == 0:
        raise EvaluationError(f"{where}: bbox {list(values)} is empty; expected width and height > 0")
    x0, y0 = round(x), round(y)
    return Box(x0, y0, max(x0 + 1, round(x + w)), max(y0 + 1, round(y + h)))


def _check_taxa(frames: Iterable[TruthFrame], source: Path) -> None:
    """One taxon per insect: an id labelled differently in two frames is an annotation error."""
    first: dict[int, tuple[int, dict[str, str]]] = {}
    for frame in frames:
        for o in frame.objects:
            if o.insect_id is None:
                continue
            if o.insect_id not in first:
                first[o.insect_id] = (frame.index, o.taxa)
            elif first[o.insect_id][1] != o.taxa:
                index, taxa = first[o.insect_id]
                raise EvaluationError(
                    f"{source}: insect {o.insect_id} is {taxa or 'unlabelled'} in frame {index} but "
                    f"{o.taxa or 'unlabelled'} in frame {frame.index}; expected one taxon per insect"
                )


def merge_levels(orders: Iterable[list[str]]) -> tuple[str, ...]:
    """Levels coarse -> fine from each category's own ordered levels (known ranks in rank order)."""
    merged: list[str] = []
    for levels in orders:
        previous: str | None = None
        for level in levels:
            if level not in merged:
                at = merged.index(previous) + 1 if previous is not None else 0
                merged.insert(at, level)
            previous = level
    known = sorted((x for x in merged if x in RANKS), key=RANKS.index)
    it = iter(known)
    return tuple(next(it) if x in RANKS else x for x in merged)


def _finish(
    frames: list[TruthFrame], fmt: str, source: Path, levels: tuple[str, ...], clock: str, notes: list[str]
) -> GroundTruth:
    _check_taxa(frames, source)
    has_ids = all(o.insect_id is not None for f in frames for o in f.objects)
    return GroundTruth(tuple(frames), fmt, source, levels, has_ids, clock, tuple(notes))


def _frame_times(
    n: int, fps: float | None, start: datetime | None, what: str, notes: list[str]
) -> list[datetime]:
    """start + i / fps for n frames, noting defaults the report must mention."""
    if fps is None:
        notes.append(
            f"frame times: {what}; assumed {DEFAULT_FPS:g} frame per second (set --fps): the tracker's "
            "time limits (max_gap_s, reid_window_s) depend on it"
        )
    if start is None:
        notes.append(f"frame times start at {DEFAULT_START.isoformat()} (set --start)")
    step = 1.0 / (fps or DEFAULT_FPS)
    t0 = (start or DEFAULT_START).astimezone(timezone.utc)
    return [t0 + timedelta(seconds=i * step) for i in range(n)]


# ---------------------------------------------------------------- synthetic (trapcam synth)


def _load_synthetic(path: Path) -> GroundTruth:
    from edge.synth.writer import GROUND_TRUTH_NAME, read_ground_truth

    folder = path.parent if path.is_file() else path
    csv_path = folder / GROUND_TRUTH_NAME
    try:
        rows = read_ground_truth(csv_path)
    except TrapcamError as exc:
        raise EvaluationError(str(exc)) from None
    files: dict[int, Path] = {}
    name_times: dict[int, datetime] = {}
    for file in sorted(_image_files(folder)):
        match = _SYNTH_NAME.match(file.name)
        stamp = None
        if match:
            try:
                stamp = datetime.strptime(match.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
            except ValueError:
                stamp = None
        if match is None or stamp is None:
            raise EvaluationError(
                f"{file}: not a frame of a synthetic night; expected names like 20260701-213000-000012.jpg "
                "(UTC time and frame index, as `trapcam synth` writes them)"
            )
        index = int(match.group(2))
        if index in files:
            raise EvaluationError(
                f"{file}: frame index {index} also in {files[index].name}; expected one file each"
            )
        files[index], name_times[index] = file, stamp

    objects: dict[int, list[TruthObject]] = {}
    csv_times: dict[int, datetime] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{csv_path}:{line}"
        if row.frame not in files:
            raise EvaluationError(
                f"{where}: frame {row.frame} has no image in {folder}; "
                f"expected a file named *-{row.frame:06d}.jpg"
            )
        taxa = {"order": row.order, "family": row.family, "species": row.species}
        found = objects.setdefault(row.frame, [])
        if any(o.insect_id == row.insect_id for o in found):
            raise EvaluationError(
                f"{where}: insect id {row.insect_id} appears twice in frame {row.frame}; "
                "expected one box each"
            )
        found.append(TruthObject(row.insect_id, taxa, row.box))
        csv_times.setdefault(row.frame, row.timestamp.astimezone(timezone.utc))

    times = _synthetic_times(sorted(files), csv_times, name_times)
    frames = [TruthFrame(i, files[i], times[i], tuple(objects.get(i, ()))) for i in sorted(files)]
    return _finish(frames, "synthetic", folder, ("order", "family", "species"), "filename", [])


def _synthetic_times(
    indices: list[int], csv_times: Mapping[int, datetime], name_times: Mapping[int, datetime]
) -> dict[int, datetime]:
    """Exact times for every frame: the CSV's where an insect is, else the night's regular rhythm.

    The writer puts times to the second in the names and exact ones in the CSV. When the CSV's
    frames lie on one regular rhythm (they do for a written night) every frame gets its exact time
    from it; otherwise frames without a CSV row keep their name's time.
    """
    known = sorted(csv_times.items())
    if len(known) >= 2:
        (i0, t0), (i1, t1) = known[0], known[-1]
        step = (t1 - t0) / (i1 - i0)
        regular = all(abs((t0 + step * (i - i0) - t).total_seconds()) < 1e-3 for i, t in known)
        fits_names = all(
            abs((t0 + step * (i - i0) - name_times[i]).total_seconds()) < 1.0 + 1e-6 for i in indices
        )
        if regular and fits_names and step > timedelta(0):
            return {i: t0 + step * (i - i0) for i in indices}
    return {i: csv_times.get(i, name_times[i]) for i in indices}


# ---------------------------------------------------------------- COCO


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path}: cannot read the COCO file: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None


def _record(path: Path, key: str, i: int, item: Any) -> str:
    ident = f" (id {item['id']!r})" if isinstance(item, dict) and "id" in item else ""
    return f"{path}: {key}[{i}]{ident}"


def _coco_id(value: Any, where: str, what: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise EvaluationError(f"{where}: {what} {value!r}; expected an integer or a non-empty string")
    return value


def _int_field(value: Any, where: str, what: str) -> int:
    if isinstance(value, bool):
        raise EvaluationError(f"{where}: {what} {value!r}; expected an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    if not isinstance(value, int):
        raise EvaluationError(f"{where}: {what} {value!r}; expected an integer")
    return value


def _parse_time(value: Any, where: str) -> tuple[datetime, bool]:
    """An ISO time (also '2026-07-01 21:30:00'); returns (UTC time, had a zone)."""
    if not isinstance(value, str):
        raise EvaluationError(f"{where}: date_captured {value!r}; expected an ISO time string")
    try:
        stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise EvaluationError(
            f"{where}: date_captured {value!r}; expected an ISO time such as 2026-07-01T21:30:00+00:00"
        ) from None
    if stamp.tzinfo is None:
        return stamp.replace(tzinfo=timezone.utc), False
    return stamp.astimezone(timezone.utc), True


def _coco_categories(path: Path, raw: Any) -> tuple[dict[Any, dict[str, str]], list[list[str]]]:
    if not isinstance(raw, list):
        raise EvaluationError(f"{path}: 'categories' is {type(raw).__name__}; expected a list")
    categories: dict[Any, dict[str, str]] = {}
    orders: list[list[str]] = []
    for i, cat in enumerate(raw):
        where = _record(path, "categories", i, cat)
        if not isinstance(cat, dict):
            raise EvaluationError(f"{where}: expected an object with 'id' and 'name'")
        if "id" not in cat:
            raise EvaluationError(f"{where}: no 'id'; expected one per category")
        cid = _coco_id(cat["id"], where, "id")
        if cid in categories:
            raise EvaluationError(f"{where}: category id {cid!r} appears twice; expected unique ids")
        name = cat.get("name")
        if not isinstance(name, str) or not name.strip():
            raise EvaluationError(f"{where}: name {name!r}; expected the taxon's name")
        level = cat.get("level", "species")
        if not isinstance(level, str) or not level.strip():
            raise EvaluationError(f"{where}: level {level!r}; expected a level name such as 'species'")
        lineage: dict[str, str] = {}
        for rank in RANKS:
            if rank in cat and rank != level:
                lineage[rank] = cat[rank]
        extra = cat.get("lineage", {})
        if not isinstance(extra, dict):
            raise EvaluationError(f"{where}: lineage {extra!r}; expected an object {{level: label}}")
        for key, value in extra.items():
            if key in lineage and lineage[key] != value:
                raise EvaluationError(
                    f"{where}: {key} is {lineage[key]!r} and {value!r} in lineage; expected one"
                )
            lineage[key] = value
        for key, value in lineage.items():
            if not isinstance(value, str) or not value.strip():
                raise EvaluationError(f"{where}: {key} {value!r}; expected a label")
        if cat.get(level, name) != name or lineage.get(level, name) != name:
            raise EvaluationError(
                f"{where}: {level} is both {name!r} (name) and {lineage.get(level, cat.get(level))!r}; "
                "expected one"
            )
        lineage.pop(level, None)
        taxa = {**lineage, level: name.strip()}
        categories[cid] = taxa
        orders.append(list(taxa))
    return categories, orders


def _coco_track_id(ann: dict[str, Any], where: str) -> int | None:
    for key in ("track_id", "instance_id"):
        if ann.get(key) is not None:
            return _int_field(ann[key], where, key)
    attributes = ann.get("attributes")
    if isinstance(attributes, dict) and attributes.get("track_id") is not None:
        return _int_field(attributes["track_id"], where, "attributes.track_id")
    return None


def _load_coco(path: Path, images: Path | None, fps: float | None, start: datetime | None) -> GroundTruth:
    if path.is_dir():
        raise EvaluationError(f"{path}: is a folder; expected a COCO .json file")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise EvaluationError(f"{path}: top level is {type(data).__name__}; expected an object with 'images'")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise EvaluationError(
                f"{path}: '{key}' is {'missing' if key not in data else 'not a list'}; expected a list"
            )
    categories, orders = _coco_categories(path, data.get("categories", []))
    root = images or path.parent

    entries: dict[Any, dict[str, Any]] = {}
    for i, image in enumerate(data["images"]):
        where = _record(path, "images", i, image)
        if not isinstance(image, dict) or "id" not in image:
            raise EvaluationError(f"{where}: expected an object with 'id' and 'file_name'")
        iid = _coco_id(image["id"], where, "id")
        if iid in entries:
            raise EvaluationError(f"{where}: image id {iid!r} appears twice; expected unique ids")
        name = image.get("file_name")
        if not isinstance(name, str) or not name:
            raise EvaluationError(f"{where}: file_name {name!r}; expected the image's file name")
        file = root / name
        if not file.is_file():
            raise EvaluationError(f"{where}: image file {file} not found (file_name {name!r} in {root})")
        frame_no = None
        for key in ("frame_id", "frame_index"):
            if image.get(key) is not None:
                frame_no = _int_field(image[key], where, key)
                break
        entries[iid] = {"where": where, "file": file, "name": name, "frame": frame_no, "objects": []}
        if image.get("date_captured") not in (None, ""):
            entries[iid]["time"] = _parse_time(image["date_captured"], where)

    for i, ann in enumerate(data["annotations"]):
        where = _record(path, "annotations", i, ann)
        if not isinstance(ann, dict):
            raise EvaluationError(f"{where}: expected an object with 'image_id', 'bbox' and 'category_id'")
        if ann.get("image_id") not in entries:
            raise EvaluationError(
                f"{where}: unknown image_id {ann.get('image_id')!r}; expected an id from 'images'"
            )
        box = _box_from_xywh(ann.get("bbox"), where)
        if "category_id" not in ann:
            raise EvaluationError(f"{where}: no category_id; expected one from 'categories'")
        if ann["category_id"] not in categories:
            raise EvaluationError(
                f"{where}: unknown category_id {ann['category_id']!r}; expected an id from 'categories'"
            )
        entry = entries[ann["image_id"]]
        obj = TruthObject(_coco_track_id(ann, where), dict(categories[ann["category_id"]]), box)
        if obj.insect_id is not None and any(o.insect_id == obj.insect_id for o in entry["objects"]):
            raise EvaluationError(
                f"{where}: track id {obj.insect_id} appears twice on image {entry['name']!r}; "
                "expected one box each"
            )
        entry["objects"].append(obj)

    ordered = list(entries.values())
    notes: list[str] = []
    if ordered and all(e["frame"] is not None for e in ordered):
        numbers: dict[int, str] = {}
        for e in ordered:
            if e["frame"] in numbers:
                raise EvaluationError(
                    f"{e['where']}: frame number {e['frame']} also on {numbers[e['frame']]!r}; "
                    "expected unique frames"
                )
            numbers[e["frame"]] = e["name"]
        ordered.sort(key=lambda e: e["frame"])
    else:
        from edge.sources.folder import natural_key

        ordered.sort(key=lambda e: natural_key(e["name"]))
        notes.append("frame order: natural sort of file_name (not every image has frame_id or frame_index)")

    if ordered and all("time" in e for e in ordered):
        times = [e["time"][0] for e in ordered]
        clock = "capture"
        if not all(e["time"][1] for e in ordered):
            notes.append("date_captured without a time zone is read as UTC")
        if fps is not None or start is not None:
            notes.append("--fps/--start not used: every image has date_captured")
        for e, t_prev, t in zip(ordered[1:], times, times[1:], strict=False):
            if t < t_prev:
                raise EvaluationError(
                    f"{e['where']}: date_captured {t.isoformat()} is before the previous frame's; "
                    "expected times in frame order"
                )
    else:
        times = _frame_times(len(ordered), fps, start, "not every image has date_captured", notes)
        clock = "video"
    frames = [
        TruthFrame(i, e["file"], t, tuple(e["objects"]))
        for i, (e, t) in enumerate(zip(ordered, times, strict=True))
    ]
    present = {lv for f in frames for o in f.objects for lv in o.taxa}
    levels = tuple(lv for lv in merge_levels(orders) if lv in present)
    return _finish(frames, "coco", path, levels, clock, notes)


# ---------------------------------------------------------------- MOT Challenge


def _read_labels_file(path: Path) -> list[str]:
    """Line n (1-based) names class n."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(
            f"{path}: cannot read the classes file: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    lines = text.rstrip("\r\n\t ").splitlines()
    if not lines:
        raise EvaluationError(
            f"{path}: classes file is empty; expected one label per line (line n = class n)"
        )
    labels = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            raise EvaluationError(f"{path}:{n}: empty line; expected one label per line (line n = class n)")
        labels.append(line.strip())
    return labels


def _seqinfo(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EvaluationError(f"{path}: not a valid seqinfo.ini: {first}") from None
    if not parser.has_section("Sequence"):
        raise EvaluationError(f"{path}: no [Sequence] section; expected MOT's seqinfo.ini layout")
    return {k.lower(): v for k, v in parser.items("Sequence")}


def _load_mot(
    path: Path, images: Path | None, fps: float | None, start: datetime | None, classes: Path | None
) -> GroundTruth:
    if path.is_dir():
        seq, gt_file = path, path / "gt" / "gt.txt"
    else:
        gt_file = path
        seq = path.parent.parent if path.parent.name == "gt" else path.parent
    if not gt_file.is_file():
        raise EvaluationError(f"{gt_file}: MOT ground truth not found; expected <sequence>/gt/gt.txt")
    info_file = seq / "seqinfo.ini"
    info = _seqinfo(info_file)
    notes: list[str] = []
    if fps is None and "framerate" in info:
        try:
            fps = float(info["framerate"])
        except ValueError:
            fps = None
        if fps is None or not math.isfinite(fps) or fps <= 0:
            raise EvaluationError(
                f"{info_file}: frameRate {info['framerate']!r}; expected frames per second > 0"
            )
    ext = info.get("imext", "")
    if ext and not ext.startswith("."):
        ext = "." + ext
    folder = images or seq / info.get("imdir", "img1")
    if not folder.is_dir():
        raise EvaluationError(
            f"{folder}: MOT image folder not found; expected {seq}/img1 (or seqinfo.ini imDir)"
        )
    files: dict[int, Path] = {}
    for file in sorted(_image_files(folder)):
        if ext and file.suffix.lower() != ext.lower():
            continue
        if not file.stem.isdigit():
            raise EvaluationError(
                f"{file}: not a MOT frame name; expected numbered frames such as 000001.jpg"
            )
        number = int(file.stem)
        if number < 1:
            raise EvaluationError(f"{file}: frame number {number}; expected MOT frames numbered from 1")
        if number in files:
            raise EvaluationError(
                f"{file}: frame {number} also in {files[number].name}; expected one file each"
            )
        files[number] = file
    if not files:
        raise EvaluationError(f"{folder}: no frames; expected images named 000001{ext or '.jpg'} ...")

    labels = _read_labels_file(classes) if classes is not None else None
    objects: dict[int, list[TruthObject]] = {}
    try:
        lines = gt_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{gt_file}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    ignored = 0
    for n, line in enumerate(lines, start=1):
        where = f"{gt_file}:{n}"
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        try:
            values = [float(c) for c in cells]
        except ValueError:
            raise EvaluationError(
                f"{where}: {line.strip()!r}; expected numbers frame,id,x,y,w,h,conf,class,visibility"
            ) from None
        if len(values) < 6 or not all(math.isfinite(v) for v in values):
            raise EvaluationError(
                f"{where}: {line.strip()!r}; "
                "expected at least 6 numbers frame,id,x,y,w,h[,conf,class,visibility]"
            )
        frame_no, track = values[0], values[1]
        if not frame_no.is_integer() or frame_no < 1:
            raise EvaluationError(f"{where}: frame {cells[0]!r}; expected a frame number >= 1")
        if not track.is_integer():
            raise EvaluationError(f"{where}: id {cells[1]!r}; expected an integer track id")
        if len(values) >= 7 and values[6] == 0:
            ignored += 1  # MOT convention: conf 0 marks a box to ignore
            continue
        box = _box_from_xywh(values[2:6], where)
        frame = int(frame_no)
        if frame not in files:
            raise EvaluationError(
                f"{where}: frame {frame} has no image; expected {folder}/{frame:06d}{ext or '.jpg'}"
            )
        taxa: dict[str, str] = {}
        if labels is not None:
            if len(values) < 8 or not values[7].is_integer():
                raise EvaluationError(
                    f"{where}: no class column; expected frame,id,x,y,w,h,conf,class (with --classes)"
                )
            cls = int(values[7])
            if not 1 <= cls <= len(labels):
                raise EvaluationError(
                    f"{where}: class {cls} is not in {classes} ({len(labels)} classes); "
                    f"expected 1..{len(labels)}"
                )
            taxa = {"species": labels[cls - 1]}
        found = objects.setdefault(frame, [])
        if any(o.insect_id == int(track) for o in found):
            raise EvaluationError(
                f"{where}: id {int(track)} appears twice in frame {frame}; expected one box each"
            )
        found.append(TruthObject(int(track), taxa, box))
    if ignored:
        notes.append(f"{ignored} gt.txt row{'s' if ignored > 1 else ''} with conf 0 (MOT 'ignore') skipped")
    numbers = sorted(files)
    times = _frame_times(numbers[-1], fps, start, "seqinfo.ini has no frameRate", notes)
    frames = [TruthFrame(k - 1, files[k], times[k - 1], tuple(objects.get(k, ()))) for k in numbers]
    levels = ("species",) if labels is not None else ()
    return _finish(frames, "mot", gt_file, levels, "video", notes)
