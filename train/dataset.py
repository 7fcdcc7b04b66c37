"""Labelled insect crops: reading a dataset, checking it, splitting it, and the split manifest.

Three layouts are read (``DataConfig.kind``):

- ``folder``: one sub-folder per species, plus a taxonomy CSV (columns ``species,family,order``)
  given as ``data.taxonomy`` or lying in the folder as ``taxonomy.csv``. Without one the dataset
  is flat (species only).
- ``nested``: ``order/family/species`` folders; the taxonomy is the folder tree.
- ``csv``: a CSV with columns ``path,species`` and optionally ``family,order`` (relative paths are
  relative to the CSV's folder); without those columns ``data.taxonomy`` supplies them.
- ``synthetic``: crops rendered by the scene generator into ``work_dir/synthetic`` (see
  `train.synthetic`), then read as ``folder``.

Crops that show no insect (dust, sheet marks, shadows, leaves) go in a class named ``not_insect``
(`edge.classify.types.NOT_INSECT`): a ``not_insect`` folder (at the top of a ``nested`` tree, images
directly inside), or CSV rows with that species. It needs no taxonomy row: it is its own family and
order, so the model learns it at every level and ``convert`` declares it in model.json, and the trap
stores a track voted to it as not an insect instead of counting it.

Everything that would silently spoil a model is refused with a `DatasetError` naming the file or
class: an empty class, a class too small to appear in every split, an unreadable image, a species
missing from the taxonomy or given two families, the same image under two labels, and (in a
manifest) the same file or the same bytes in two splits - the classic leak that makes test
accuracy a lie. Nothing here imports Keras, so ``convert`` can read a manifest without it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edge.classify.taxonomy import Taxonomy
from edge.classify.types import NOT_INSECT
from train.config import DataConfig
from train.dataset_files import TAXONOMY_FILE, DatasetError, manifest_image, manifest_path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
SPLIT_NAMES = ("train", "validation", "test")
MANIFEST_COLUMNS = ("split", "path", "species", "family", "order", "sha256")
FULL_LEVELS = ("order", "family", "species")


@dataclass(frozen=True)
class Sample:
    """One labelled crop. family/order are None for a flat (species-only) dataset."""

    path: Path
    species: str
    family: str | None = None
    order: str | None = None

    def label(self, level: str) -> str:
        """The label of this sample at `level` ("order", "family" or "species")."""
        value = {"species": self.species, "family": self.family, "order": self.order}.get(level)
        if value is None:
            raise DatasetError(f"{self.path}: no {level!r} label (the dataset has no such level)")
        return value


@dataclass(frozen=True)
class Dataset:
    """The samples with their label vocabularies.

    levels: coarse to fine, ("order", "family", "species") or ("species",).
    labels: per level, the sorted label names; a label's index is the class index of its head.
    taxonomy: parent map restricted to the labels present (what the model bundle carries).
    sha256: content hash of every file, computed while checking that each one is an image.
    duplicates: files dropped because identical bytes already appear under the same species.
    """

    samples: list[Sample]
    levels: tuple[str, ...]
    labels: dict[str, list[str]]
    taxonomy: Taxonomy
    sha256: dict[Path, str] = field(default_factory=dict, repr=False)
    duplicates: list[Path] = field(default_factory=list)

    def indices(self, level: str, samples: Sequence[Sample] | None = None) -> np.ndarray:
        """Class index (int64) at `level` of each sample (default: all samples)."""
        if level not in self.labels:
            raise DatasetError(f"level {level!r} is not in this dataset (levels: {list(self.levels)})")
        lookup = {name: i for i, name in enumerate(self.labels[level])}
        rows = self.samples if samples is None else samples
        out = np.empty(len(rows), dtype=np.int64)
        for i, s in enumerate(rows):
            name = s.label(level)
            if name not in lookup:
                raise DatasetError(f"{s.path}: {level} {name!r} is not one of this dataset's labels")
            out[i] = lookup[name]
        return out

    def num_classes(self) -> dict[str, int]:
        """Classes per level, as the model's heads need them."""
        return {level: len(self.labels[level]) for level in self.levels}

    def family_of_species(self) -> np.ndarray | None:
        """species index -> family index (for the consistency term), or None for a flat dataset."""
        if "family" not in self.labels:
            return None
        fam = {name: i for i, name in enumerate(self.labels["family"])}
        return np.array([fam[self.taxonomy.parents["species"][s]] for s in self.labels["species"]], np.int64)


@dataclass(frozen=True)
class Splits:
    """Disjoint train / validation / test samples."""

    train: list[Sample]
    validation: list[Sample]
    test: list[Sample]

    def items(self) -> list[tuple[str, list[Sample]]]:
        return [("train", self.train), ("validation", self.validation), ("test", self.test)]


# ---------------------------------------------------------------- reading


def load_dataset(cfg: DataConfig, work_dir: Path, seed: int) -> Dataset:
    """Read and check the dataset `cfg` describes; `work_dir` receives synthetic crops.

    Every file is opened once here (hash + image header check, in parallel) so that a corrupt
    image fails now with its name rather than hours later inside a training epoch.
    """
    if cfg.kind == "synthetic":
        from train.synthetic import write_synthetic_dataset

        out = Path(work_dir).absolute() / "synthetic"
        root = write_synthetic_dataset(cfg.synthetic, out, seed, cfg.image_size)
        rows = _read_folder(root)
        taxonomy_path: Path | None = root / TAXONOMY_FILE
    else:
        assert cfg.path is not None  # DataConfig's validator requires it
        path = Path(cfg.path).absolute()  # absolute: the manifest must work from any directory
        if not path.exists():
            raise DatasetError(f"data.path {path}: does not exist")
        taxonomy_path = Path(cfg.taxonomy) if cfg.taxonomy is not None else None
        if cfg.kind == "folder":
            rows = _read_folder(path)
            if taxonomy_path is None and (path / TAXONOMY_FILE).is_file():
                taxonomy_path = path / TAXONOMY_FILE
        elif cfg.kind == "nested":
            rows = _read_nested(path)
        else:
            rows = _read_csv(path)
    taxonomy_rows = read_taxonomy_csv(taxonomy_path) if taxonomy_path is not None else None
    samples = _attach_taxonomy(rows, taxonomy_rows, taxonomy_path)
    return build_dataset(samples, min_per_class=cfg.min_per_class)


def build_dataset(samples: list[Sample], min_per_class: int = 3, workers: int = 8) -> Dataset:
    """Check `samples` (files, class sizes, taxonomy, duplicates) and index their labels."""
    if not samples:
        raise DatasetError("the dataset has no images")
    levels = FULL_LEVELS if samples[0].family is not None else ("species",)
    hashes = _hash_and_check(samples, workers)
    samples, duplicates = _drop_duplicates(samples, hashes)
    counts = Counter(s.species for s in samples)
    small = sorted((n, name) for name, n in counts.items() if n < min_per_class)
    if small:
        n, name = small[0]
        more = f" (and {len(small) - 1} more classes)" if len(small) > 1 else ""
        raise DatasetError(
            f"class {name!r} has {n} image(s); at least {min_per_class} (data.min_per_class) are needed "
            f"so that train, validation and test each get one{more}"
        )
    parents: dict[str, dict[str, str]] = {}
    if levels == FULL_LEVELS:
        parents = {
            "species": _parent_map(samples, "species", "family"),
            "family": _parent_map(samples, "family", "order"),
        }
    labels = {level: sorted({s.label(level) for s in samples}) for level in levels}
    samples = sorted(samples, key=lambda s: (s.species, str(s.path)))
    return Dataset(
        samples=samples,
        levels=levels,
        labels=labels,
        taxonomy=Taxonomy(levels=levels, parents=parents),
        sha256={s.path: hashes[s.path] for s in samples},
        duplicates=duplicates,
    )


def read_taxonomy_csv(path: Path) -> dict[str, tuple[str, str]]:
    """species -> (family, order) from a CSV with columns species,family,order.

    A species listed twice with different families (or a family under two orders) is an error:
    the hierarchy must be a tree, or the family head is trained on contradictory labels.
    """
    table: dict[str, tuple[str, str]] = {}
    family_order: dict[str, tuple[str, int]] = {}
    for line, row in _csv_rows(path, required=("species", "family", "order")):
        species, family, order = (row["species"], row["family"], row["order"])
        for key, value in (("species", species), ("family", family), ("order", order)):
            if not value:
                raise DatasetError(f"{path}:{line}: empty {key}")
        if species in table and table[species] != (family, order):
            raise DatasetError(
                f"{path}:{line}: species {species!r} has family {family!r} here but "
                f"{table[species][0]!r} earlier (order {table[species][1]!r})"
            )
        if family in family_order and family_order[family][0] != order:
            raise DatasetError(
                f"{path}:{line}: family {family!r} is in order {order!r} here but in "
                f"{family_order[family][0]!r} on line {family_order[family][1]}"
            )
        table[species] = (family, order)
        family_order.setdefault(family, (order, line))
    if not table:
        raise DatasetError(f"{path}: taxonomy CSV has no rows")
    return table


def _csv_rows(path: Path, required: Sequence[str]) -> Iterable[tuple[int, dict[str, str]]]:
    """(line number, row with stripped values) of a CSV whose header has the `required` columns."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: CSV file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read CSV: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(f"{path}: CSV lacks column(s) {missing}; header is {header}")
    reader.fieldnames = header
    for row in reader:
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue  # blank line
        yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if isinstance(k, str)}


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_folder(root: Path) -> list[Sample]:
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (data kind 'folder' needs one sub-folder per species)")
    classes = _subfolders(root)
    if not classes:
        raise DatasetError(f"{root}: no class sub-folders (expected one folder per species)")
    out: list[Sample] = []
    for folder in classes:
        images = _images_in(folder)
        if not images:
            raise DatasetError(f"class folder {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        out.extend(Sample(p, folder.name) for p in images)
    return out


def _read_nested(root: Path) -> list[Sample]:
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (data kind 'nested' needs order/family/species folders)")
    out: list[Sample] = []
    species_at: dict[str, Path] = {}
    for order in _subfolders(root):
        if order.name == NOT_INSECT:  # no family or species folders below it: the images themselves
            images = _images_in(order)
            if not images:
                raise DatasetError(f"class folder {order}: no images (crops that show no insect go here)")
            out.extend(Sample(p, NOT_INSECT, NOT_INSECT, NOT_INSECT) for p in images)
            continue
        families = _subfolders(order)
        if not families:
            raise DatasetError(f"order folder {order}: no family sub-folders (expected order/family/species)")
        for family in families:
            species_dirs = _subfolders(family)
            if not species_dirs:
                raise DatasetError(f"family folder {family}: no species sub-folders")
            for folder in species_dirs:
                if folder.name in species_at:
                    raise DatasetError(
                        f"species {folder.name!r} appears twice: {species_at[folder.name]} and {folder}"
                    )
                species_at[folder.name] = folder
                images = _images_in(folder)
                if not images:
                    raise DatasetError(f"class folder {folder}: no images")
                out.extend(Sample(p, folder.name, family.name, order.name) for p in images)
    if not out:
        raise DatasetError(f"{root}: no order/family/species folders")
    return out


def _read_csv(path: Path) -> list[Sample]:
    if not path.is_file():
        raise DatasetError(f"{path}: not a CSV file (data kind 'csv')")
    out: list[Sample] = []
    has_family = has_order = None
    for line, row in _csv_rows(path, required=("path", "species")):
        if has_family is None:
            has_family, has_order = "family" in row, "order" in row
            if has_family != has_order:
                raise DatasetError(f"{path}: CSV has column 'family' or 'order' but not both")
        if not row["path"] or not row["species"]:
            raise DatasetError(f"{path}:{line}: empty path or species")
        p = manifest_image(row["path"], path.parent)
        if not p.is_file():
            raise DatasetError(f"{path}:{line}: image {p} does not exist")
        family = order = None
        if has_family and row["species"] == NOT_INSECT:
            family = order = NOT_INSECT
        elif has_family:
            family, order = row["family"], row["order"]
            if not family or not order:
                raise DatasetError(f"{path}:{line}: empty family or order for {row['species']!r}")
        out.append(Sample(p, row["species"], family, order))
    if not out:
        raise DatasetError(f"{path}: CSV has no rows")
    return out


def _attach_taxonomy(
    samples: list[Sample], table: dict[str, tuple[str, str]] | None, table_path: Path | None
) -> list[Sample]:
    """Fill family/order from the taxonomy table; check it agrees where samples already have them."""
    if table is None:
        return samples
    if table.get(NOT_INSECT, (NOT_INSECT, NOT_INSECT)) != (NOT_INSECT, NOT_INSECT):
        raise DatasetError(
            f"{table_path}: {NOT_INSECT!r} is the class of crops that show no insect; its family and order "
            f"are {NOT_INSECT!r} too, not {'/'.join(table[NOT_INSECT])} (delete its row)"
        )
    table = {**table, NOT_INSECT: (NOT_INSECT, NOT_INSECT)}  # its own family and order, needing no row
    missing = sorted({s.species for s in samples} - set(table))
    if missing:
        where = table_path if table_path is not None else "taxonomy"
        raise DatasetError(
            f"species {missing[0]!r} is missing from the taxonomy {where}"
            + (f" (and {len(missing) - 1} more: {missing[1:4]})" if len(missing) > 1 else "")
        )
    out = []
    for s in samples:
        family, order = table[s.species]
        if s.family is not None and (s.family, s.order) != (family, order):
            raise DatasetError(
                f"{s.path}: species {s.species!r} is labelled {s.family}/{s.order} but the taxonomy "
                f"says {family}/{order}"
            )
        out.append(Sample(s.path, s.species, family, order))
    return out


def _parent_map(samples: list[Sample], level: str, up: str) -> dict[str, str]:
    """{label: parent}; a label with two parents is an error naming both and a file of each."""
    seen: dict[str, tuple[str, Path]] = {}
    for s in samples:
        child, parent = s.label(level), s.label(up)
        if child in seen and seen[child][0] != parent:
            raise DatasetError(
                f"{level} {child!r} has {up} {parent!r} ({s.path}) and {seen[child][0]!r} ({seen[child][1]})"
            )
        seen.setdefault(child, (parent, s.path))
    return {k: v[0] for k, v in seen.items()}


# ---------------------------------------------------------------- file checks


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes (cached by path, size and mtime: manifests re-hash the same files)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist") from None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return _HASH_CACHE[key]


def _check_one(path: Path) -> str:
    """Hash the file and check that it is an image Pillow can identify (header + structure)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"image {path}: cannot read: {exc}") from None
    if not data:
        raise DatasetError(f"image {path}: file is empty")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"image {path}: unreadable ({type(exc).__name__}: {exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    st = os.stat(path)
    _HASH_CACHE[(str(path), st.st_size, st.st_mtime_ns)] = digest
    return digest


def _hash_and_check(samples: list[Sample], workers: int) -> dict[Path, str]:
    paths = [s.path for s in samples]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        digests = list(pool.map(_check_one, paths))
    return dict(zip(paths, digests, strict=True))


def _drop_duplicates(samples: list[Sample], hashes: dict[Path, str]) -> tuple[list[Sample], list[Path]]:
    """Identical bytes under one species: keep the first (sorted by path). Under two labels: error.

    Leaving a duplicate in would let the same picture land in train and test.
    """
    first: dict[str, Sample] = {}
    keep: list[Sample] = []
    dropped: list[Path] = []
    seen_paths: set[Path] = set()
    for s in sorted(samples, key=lambda s: str(s.path)):
        if s.path in seen_paths:
            raise DatasetError(f"image {s.path} is listed twice")
        seen_paths.add(s.path)
        h = hashes[s.path]
        if h in first:
            other = first[h]
            if (other.species, other.family, other.order) != (s.species, s.family, s.order):
                raise DatasetError(
                    f"the same image is labelled {other.species!r} ({other.path}) "
                    f"and {s.species!r} ({s.path})"
                )
            dropped.append(s.path)
            continue
        first[h] = s
        keep.append(s)
    return keep, dropped


# ---------------------------------------------------------------- splitting


def _class_rng(seed: int, name: str) -> np.random.Generator:
    """One generator per class, so adding a species does not reshuffle the others' splits."""
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def split_dataset(ds: Dataset, validation_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Stratified split by species: each species contributes about the same fractions to each split.

    Every species gets at least one validation and one test image and keeps at least one for
    training. Deterministic in `seed` and independent of the order of ``ds.samples``.
    """
    for name, frac in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < frac < 0.5:
            raise DatasetError(f"{name}={frac}: expected a fraction between 0 and 0.5")
    by_species: dict[str, list[Sample]] = defaultdict(list)
    for s in ds.samples:
        by_species[s.species].append(s)
    train: list[Sample] = []
    validation: list[Sample] = []
    test: list[Sample] = []
    for name in sorted(by_species):
        group = sorted(by_species[name], key=lambda s: str(s.path))
        n = len(group)
        if n < 3:
            raise DatasetError(f"class {name!r} has {n} image(s); a split needs at least 3")
        n_val = max(1, round(n * validation_fraction))
        n_test = max(1, round(n * test_fraction))
        while n - n_val - n_test < 1:
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
        order = _class_rng(seed, name).permutation(n)
        validation.extend(group[i] for i in order[:n_val])
        test.extend(group[i] for i in order[n_val : n_val + n_test])
        train.extend(group[i] for i in order[n_val + n_test :])

    def key(s: Sample) -> tuple[str, str]:
        return (s.species, str(s.path))

    return Splits(sorted(train, key=key), sorted(validation, key=key), sorted(test, key=key))


# ---------------------------------------------------------------- manifest


def write_splits(splits: Splits, path: Path) -> Path:
    """Write the split manifest (CSV: split,path,species,family,order,sha256), atomically.

    Refuses a split in which one file or one content hash is in two splits, so a manifest on
    disk is always leak-free.
    """
    rows = []
    for split, samples in splits.items():
        for s in samples:
            rows.append((split, s, file_sha256(s.path)))
    _check_disjoint([(split, s.path, h) for split, s, h in rows], str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    folder = path.parent.absolute()
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(MANIFEST_COLUMNS)
        for split, s, h in rows:
            w.writerow(
                [split, manifest_path(Path(s.path), folder), s.species, s.family or "", s.order or "", h]
            )
    os.replace(tmp, path)
    return path


def read_splits(path: Path, verify_files: bool = True) -> Splits:
    """Read a manifest written by `write_splits`.

    Checks that no path and no sha256 appears in two splits (a hand-edited or merged manifest
    can leak), and with `verify_files` that every file still exists with the recorded bytes.
    """
    path = Path(path)
    parts: dict[str, list[Sample]] = {name: [] for name in SPLIT_NAMES}
    entries: list[tuple[str, Path, str]] = []
    for line, row in _csv_rows(path, required=MANIFEST_COLUMNS):
        split = row["split"]
        if split not in parts:
            raise DatasetError(f"{path}:{line}: split {split!r}; expected one of {list(SPLIT_NAMES)}")
        p = manifest_image(row["path"], path.parent)
        if not row["species"]:
            raise DatasetError(f"{path}:{line}: empty species")
        if verify_files:
            if not p.is_file():
                raise DatasetError(f"{path}:{line}: image {p} does not exist")
            actual = file_sha256(p)
            if actual != row["sha256"]:
                raise DatasetError(f"{path}:{line}: image {p} has changed since the split (sha256 differs)")
        parts[split].append(Sample(p, row["species"], row["family"] or None, row["order"] or None))
        entries.append((split, p, row["sha256"]))
    if not entries:
        raise DatasetError(f"{path}: manifest has no rows")
    _check_disjoint(entries, str(path))
    return Splits(parts["train"], parts["validation"], parts["test"])


def _check_disjoint(entries: list[tuple[str, Path, str]], where: str) -> None:
    by_path: dict[str, str] = {}
    by_hash: dict[str, tuple[str, Path]] = {}
    for split, p, h in entries:
        key = str(Path(p).resolve())
        if key in by_path and by_path[key] != split:
            raise DatasetError(f"{where}: image {p} is in both {by_path[key]} and {split}")
        by_path.setdefault(key, split)
        if h in by_hash and by_hash[h][0] != split:
            other_split, other = by_hash[h]
            raise DatasetError(
                f"{where}: the same image bytes are in {other_split} ({other}) and {split} ({p})"
            )
        by_hash.setdefault(h, (split, p))


# ---------------------------------------------------------------- class counts


def class_counts(ds: Dataset, splits: Splits) -> list[dict]:
    """One row per (level, label): images in train / validation / test / total, and the parent."""
    rows: list[dict] = []
    for level in ds.levels:
        per_split = {name: Counter(s.label(level) for s in samples) for name, samples in splits.items()}
        for label in ds.labels[level]:
            counts = {name: per_split[name].get(label, 0) for name in SPLIT_NAMES}
            rows.append(
                {
                    "level": level,
                    "label": label,
                    "parent": ds.taxonomy.parent(level, label) or "",
                    **counts,
                    "total": sum(counts.values()),
                }
            )
    return rows


def write_class_counts(rows: list[dict], path: Path) -> Path:
    """The class count table as CSV (level,label,parent,train,validation,test,total)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["level", "label", "parent", *SPLIT_NAMES, "total"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path
