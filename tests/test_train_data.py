"""train/ data side: datasets from real files, checks, stratified splits, manifest, input pipeline.

Every dataset here is written to disk by the test (real PNG/JPEG files, real CSVs), read by the
real loader and fed through the real tf.data and PyDataset batchers.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import TrapcamError
from edge.synth import species as synth
from train.config import DataConfig, SyntheticData
from train.dataset import (
    DatasetError,
    Sample,
    Splits,
    build_dataset,
    class_counts,
    load_dataset,
    read_splits,
    split_dataset,
    write_class_counts,
    write_splits,
)
from train.inputs import decode_image, load_images, make_batches, output_targets, sample_weights
from train.synthetic import write_synthetic_dataset

TAXA = {
    "Noctua pronuba": ("Noctuidae", "Lepidoptera"),
    "Autographa gamma": ("Noctuidae", "Lepidoptera"),
    "Coccinella septempunctata": ("Coccinellidae", "Coleoptera"),
}
REPO = Path(__file__).resolve().parents[1]


def write_image(path: Path, seed: int, size: tuple[int, int] = (20, 20)) -> Path:
    """A small noise image (unique bytes per seed), PNG or JPEG by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def write_taxonomy(path: Path, rows: dict[str, tuple[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["species", "family", "order"])
        for sp, (fam, order) in rows.items():
            w.writerow([sp, fam, order])
    return path


def make_folder(root: Path, per_class: int = 5, taxa: dict | None = None) -> Path:
    seed = 0
    for sp in taxa or TAXA:
        for i in range(per_class):
            write_image(root / sp / f"{i:03d}.png", seed)
            seed += 1
    return root


def folder_cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(kind="folder", path=root, **kw)


def expect_error(fn, *needles: str) -> str:
    with pytest.raises(DatasetError) as info:
        fn()
    msg = str(info.value)
    assert isinstance(info.value, TrapcamError)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


# ---------------------------------------------------------------- the three kinds


def test_folder_with_taxonomy_csv(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "crops")
    tax = write_taxonomy(tmp_path / "tax.csv", TAXA | {"Bombus terrestris": ("Apidae", "Hymenoptera")})
    ds = load_dataset(folder_cfg(root, taxonomy=tax), tmp_path / "work", seed=0)
    assert ds.levels == ("order", "family", "species")
    assert ds.labels["species"] == sorted(TAXA)
    assert ds.labels["family"] == ["Coccinellidae", "Noctuidae"]  # Apidae has no images: not a class
    assert ds.labels["order"] == ["Coleoptera", "Lepidoptera"]
    assert ds.taxonomy.parent("species", "Autographa gamma") == "Noctuidae"
    assert ds.taxonomy.parent("family", "Coccinellidae") == "Coleoptera"
    assert "Bombus terrestris" not in ds.taxonomy.parents["species"]
    assert len(ds.samples) == 15
    idx = ds.indices("family", ds.samples)
    assert idx.dtype == np.int64 and sorted(set(idx.tolist())) == [0, 1]
    assert ds.family_of_species().tolist() == [1, 0, 1]  # A. gamma, C. septempunctata, N. pronuba
    targets = output_targets(ds, ds.samples[:6])
    assert list(targets) == ["order", "family", "species"]
    assert targets["species"].tolist() == [0] * 5 + [1]  # samples sorted by species
    assert targets["order"].tolist() == [1] * 5 + [0]  # A. gamma: Lepidoptera; C. septempunctata: Coleoptera
    # taxonomy.csv inside the folder is found without data.taxonomy
    write_taxonomy(root / "taxonomy.csv", TAXA)
    assert load_dataset(folder_cfg(root), tmp_path / "work", 0).levels == ("order", "family", "species")


def test_folder_without_taxonomy_is_flat(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "crops")
    (root / "Noctua pronuba" / "notes.txt").write_text("not an image")  # ignored, not an error
    ds = load_dataset(folder_cfg(root), tmp_path, 0)
    assert ds.levels == ("species",)
    assert ds.taxonomy.parents == {}
    assert ds.family_of_species() is None


def test_nested_order_family_species(tmp_path: Path) -> None:
    seed = 0
    for sp, (fam, order) in TAXA.items():
        for i in range(4):
            write_image(tmp_path / "tree" / order / fam / sp / f"{i}.jpg", seed)
            seed += 1
    ds = load_dataset(DataConfig(kind="nested", path=tmp_path / "tree"), tmp_path, 0)
    assert ds.levels == ("order", "family", "species")
    assert ds.taxonomy.parents["species"] == {sp: fam for sp, (fam, _) in TAXA.items()}
    assert ds.taxonomy.parents["family"] == {"Noctuidae": "Lepidoptera", "Coccinellidae": "Coleoptera"}
    assert {s.order for s in ds.samples} == {"Lepidoptera", "Coleoptera"}


def test_csv_with_and_without_taxonomy_columns(tmp_path: Path) -> None:
    rows = []
    seed = 0
    for sp, (fam, order) in TAXA.items():
        for _ in range(4):
            p = write_image(tmp_path / "img" / f"{seed}.png", seed)
            rows.append((os.path.relpath(p, tmp_path), sp, fam, order))
            seed += 1
    full = tmp_path / "labels.csv"
    with full.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "species", "family", "order"])
        w.writerows(rows)
    ds = load_dataset(DataConfig(kind="csv", path=full), tmp_path, 0)
    assert ds.levels == ("order", "family", "species") and len(ds.samples) == 12
    assert all(s.path.is_absolute() or s.path.exists() for s in ds.samples)

    bare = tmp_path / "bare.csv"
    with bare.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "species"])
        w.writerows([(p, sp) for p, sp, _, _ in rows])
    flat = load_dataset(DataConfig(kind="csv", path=bare), tmp_path, 0)
    assert flat.levels == ("species",)
    tax = write_taxonomy(tmp_path / "tax.csv", TAXA)
    ds2 = load_dataset(DataConfig(kind="csv", path=bare, taxonomy=tax), tmp_path, 0)
    assert ds2.levels == ds.levels and ds2.labels == ds.labels and ds2.samples == ds.samples


def test_not_insect_crops_are_their_own_family_and_order_in_every_layout(tmp_path: Path) -> None:
    """Crops of dust, marks and shadows: a `not_insect` class needing no taxonomy row (edge reads it)."""
    # folder + taxonomy.csv without a not_insect row
    root = make_folder(tmp_path / "crops")
    for i in range(5):
        write_image(root / "not_insect" / f"{i}.png", 100 + i)
    write_taxonomy(root / "taxonomy.csv", TAXA)
    ds = load_dataset(folder_cfg(root), tmp_path / "work", 0)
    for level in ("order", "family", "species"):
        assert "not_insect" in ds.labels[level], (level, ds.labels[level])
    assert ds.taxonomy.parent("species", "not_insect") == "not_insect"
    assert ds.taxonomy.parent("family", "not_insect") == "not_insect"
    # nested: a not_insect folder at the top, images directly inside
    seed = 200
    for sp, (fam, order) in TAXA.items():
        for i in range(4):
            write_image(tmp_path / "tree" / order / fam / sp / f"{i}.jpg", seed)
            seed += 1
    for i in range(4):
        write_image(tmp_path / "tree" / "not_insect" / f"{i}.jpg", seed + i)
    nested = load_dataset(DataConfig(kind="nested", path=tmp_path / "tree"), tmp_path, 0)
    assert {(s.species, s.family, s.order) for s in nested.samples if s.species == "not_insect"} == {
        ("not_insect", "not_insect", "not_insect")
    }
    # csv: family and order may be left empty on its rows
    table = tmp_path / "labels.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "species", "family", "order"])
        for s in nested.samples:
            w.writerow(
                [
                    s.path,
                    s.species,
                    "" if s.species == "not_insect" else s.family,
                    s.order if s.family != "not_insect" else "",
                ]
            )
    from_csv = load_dataset(DataConfig(kind="csv", path=table), tmp_path, 0)
    assert from_csv.labels == nested.labels
    # a taxonomy row giving it a family is a contradiction, named in one line
    write_taxonomy(root / "taxonomy.csv", TAXA | {"not_insect": ("Noctuidae", "Lepidoptera")})
    expect_error(
        lambda: load_dataset(folder_cfg(root), tmp_path / "work", 0),
        "taxonomy.csv",
        "'not_insect'",
        "delete its row",
    )


def test_synthetic_dataset_is_deterministic_and_loads(tmp_path: Path) -> None:
    names = ["Noctua pronuba", "Bombus terrestris", "Coccinella septempunctata"]
    cfg = SyntheticData(species=names, per_class=5, background="mixed", size=40)
    a = write_synthetic_dataset(cfg, tmp_path / "a", seed=3, image_size=96)
    b = write_synthetic_dataset(cfg, tmp_path / "b", seed=3, image_size=96)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files_a) == 15 and files_a == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    assert cv2.imread(str(a / files_a[0])).shape == (40, 40, 3)
    c = write_synthetic_dataset(cfg, tmp_path / "c", seed=4, image_size=96)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files_a)
    # same settings: reused, not re-rendered
    mtime = (a / files_a[0]).stat().st_mtime_ns
    write_synthetic_dataset(cfg, tmp_path / "a", seed=3, image_size=96)
    assert (a / files_a[0]).stat().st_mtime_ns == mtime

    data = DataConfig(kind="synthetic", synthetic=cfg)
    ds = load_dataset(data, tmp_path / "run", seed=3)
    assert (tmp_path / "run" / "synthetic" / "taxonomy.csv").is_file()
    truth = synth.taxonomy()
    assert ds.labels["species"] == sorted(names)
    for sp in names:
        assert ds.taxonomy.ancestors("species", sp) == truth.ancestors("species", sp)
    with pytest.raises(TrapcamError, match="Nonexistent bug"):
        write_synthetic_dataset(SyntheticData(species=["Nonexistent bug"]), tmp_path / "x", 0, 32)


# ---------------------------------------------------------------- splits and manifest


def test_stratified_split_proportions_and_determinism(tmp_path: Path) -> None:
    sizes = {"Noctua pronuba": 20, "Autographa gamma": 40, "Coccinella septempunctata": 7}
    seed = 0
    for sp, n in sizes.items():
        for i in range(n):
            write_image(tmp_path / "d" / sp / f"{i:03d}.png", seed, (8, 8))
            seed += 1
    ds = load_dataset(folder_cfg(tmp_path / "d"), tmp_path, 0)
    s1 = split_dataset(ds, 0.15, 0.2, seed=7)
    for sp, n in sizes.items():
        got = [sum(s.species == sp for s in part) for _, part in s1.items()]
        n_val, n_test = max(1, round(n * 0.15)), max(1, round(n * 0.2))
        assert got == [n - n_val - n_test, n_val, n_test], (sp, got)
    paths = [s.path for _, part in s1.items() for s in part]
    assert len(paths) == len(set(paths)) == sum(sizes.values())
    # deterministic, independent of sample order, seed-dependent
    shuffled = build_dataset(list(reversed(ds.samples)))
    assert split_dataset(shuffled, 0.15, 0.2, seed=7) == s1
    assert split_dataset(ds, 0.15, 0.2, seed=8) != s1
    # a class of 3 still gets one image in each split
    tiny = [s for s in ds.samples if s.species == "Coccinella septempunctata"][:3]
    t = split_dataset(build_dataset(tiny), 0.49, 0.49, seed=0)
    assert [len(p) for _, p in t.items()] == [1, 1, 1]
    expect_error(lambda: split_dataset(ds, 0.6, 0.1, 0), "validation_fraction")


def test_a_run_folder_that_holds_its_images_can_move(tmp_path: Path) -> None:
    """Images inside the run folder (synthetic crops) are written relative to it, so a run trained on a
    GPU machine converts on another (it failed: "image /tmp/.../00000.png does not exist"); images
    outside it (the user's photo folder) stay absolute."""
    inside = load_dataset(folder_cfg(make_folder(tmp_path / "run" / "photos", 3)), tmp_path, 0)
    elsewhere = make_folder(tmp_path / "elsewhere", 3)
    for n, image in enumerate(sorted(elsewhere.rglob("*.png"))):
        write_image(image, 1000 + n)  # other pixels: one image in two splits would be refused
    outside = load_dataset(folder_cfg(elsewhere), tmp_path, 0)
    a, b = split_dataset(inside, 0.3, 0.3, seed=1), split_dataset(outside, 0.3, 0.3, seed=1)
    mixed = Splits(a.train + b.train, a.validation + b.validation, a.test + b.test)
    manifest = write_splits(mixed, tmp_path / "run" / "splits.csv")
    with manifest.open() as f:
        paths = [r["path"] for r in csv.DictReader(f)]
    assert all(p.startswith("photos/") for p in paths if "elsewhere" not in p)
    assert all(Path(p).is_absolute() for p in paths if "elsewhere" in p) and len(paths) == 2 * len(
        inside.samples
    )
    shutil.move(tmp_path / "run", tmp_path / "moved")
    back = read_splits(tmp_path / "moved" / "splits.csv")  # verifies every file and its sha256
    assert [s.path.name for s in back.train] == [s.path.name for s in mixed.train]
    assert all(
        (tmp_path / "moved") in s.path.parents
        for _, split in back.items()
        for s in split
        if "elsewhere" not in str(s.path)
    )


def test_manifest_round_trip_and_class_counts(tmp_path: Path) -> None:
    ds = load_dataset(
        folder_cfg(make_folder(tmp_path / "d", 6), taxonomy=write_taxonomy(tmp_path / "t.csv", TAXA)),
        tmp_path,
        0,
    )
    splits = split_dataset(ds, 0.2, 0.2, seed=1)
    manifest = write_splits(splits, tmp_path / "run" / "splits.csv")
    back = read_splits(manifest)
    assert back == splits
    with manifest.open() as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    assert all(len(r["sha256"]) == 64 for r in rows)

    counts = class_counts(ds, splits)
    sp_rows = {r["label"]: r for r in counts if r["level"] == "species"}
    assert sp_rows["Noctua pronuba"] == {
        "level": "species",
        "label": "Noctua pronuba",
        "parent": "Noctuidae",
        "train": 4,
        "validation": 1,
        "test": 1,
        "total": 6,
    }
    fam = {r["label"]: r["total"] for r in counts if r["level"] == "family"}
    assert fam == {"Noctuidae": 12, "Coccinellidae": 6}
    table = write_class_counts(counts, tmp_path / "run" / "class_counts.csv")
    with table.open() as f:
        assert len(list(csv.DictReader(f))) == len(counts) == 3 + 2 + 2


# ---------------------------------------------------------------- bad datasets


def test_empty_class_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")
    (root / "Bombus terrestris").mkdir()
    expect_error(lambda: load_dataset(folder_cfg(root), tmp_path, 0), "Bombus terrestris", "no images")


def test_class_below_min_per_class(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=4)
    shutil.rmtree(root / "Autographa gamma")
    for i in range(2):
        write_image(root / "Autographa gamma" / f"{i}.png", 100 + i)
    expect_error(
        lambda: load_dataset(folder_cfg(root), tmp_path, 0), "'Autographa gamma'", "2 image", "min_per_class"
    )
    expect_error(lambda: load_dataset(folder_cfg(root, min_per_class=5), tmp_path, 0), "at least 5")


def test_unreadable_image(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")
    bad = root / "Noctua pronuba" / "corrupt.jpg"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    expect_error(lambda: load_dataset(folder_cfg(root), tmp_path, 0), str(bad), "unreadable")
    # load_images names the file too (e.g. a file that broke after the dataset was checked)
    expect_error(lambda: load_images([Sample(bad, "Noctua pronuba")], 16), str(bad))
    empty = root / "Noctua pronuba" / "empty.png"
    bad.unlink()
    empty.write_bytes(b"")
    expect_error(lambda: load_dataset(folder_cfg(root), tmp_path, 0), str(empty), "empty")


def test_species_missing_from_taxonomy(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")
    tax = write_taxonomy(tmp_path / "tax.csv", {k: v for k, v in TAXA.items() if k != "Autographa gamma"})
    expect_error(
        lambda: load_dataset(folder_cfg(root, taxonomy=tax), tmp_path, 0),
        "'Autographa gamma'",
        "missing from the taxonomy",
        str(tax),
    )


def test_species_with_two_families(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")
    tax = tmp_path / "tax.csv"
    write_taxonomy(tax, TAXA)
    with tax.open("a", newline="") as f:
        csv.writer(f).writerow(["Noctua pronuba", "Geometridae", "Lepidoptera"])
    expect_error(
        lambda: load_dataset(folder_cfg(root, taxonomy=tax), tmp_path, 0),
        "'Noctua pronuba'",
        "'Geometridae'",
        "'Noctuidae'",
        f"{tax}:",
    )
    # the same conflict inside a labels CSV with taxonomy columns
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "species", "family", "order"])
        for i, p in enumerate(sorted((root / "Noctua pronuba").glob("*.png"))):
            w.writerow([p, "Noctua pronuba", "Noctuidae" if i else "Erebidae", "Lepidoptera"])
    expect_error(
        lambda: load_dataset(DataConfig(kind="csv", path=labels), tmp_path, 0), "'Noctua pronuba'", "Erebidae"
    )
    # and a family under two orders
    write_taxonomy(tax, TAXA | {"Autographa gamma": ("Noctuidae", "Coleoptera")})
    expect_error(
        lambda: load_dataset(folder_cfg(root, taxonomy=tax), tmp_path, 0),
        "family 'Noctuidae'",
        "'Coleoptera'",
    )


def test_same_image_under_two_labels_and_duplicates(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")
    src = root / "Noctua pronuba" / "000.png"
    shutil.copy(src, root / "Noctua pronuba" / "copy.png")
    ds = load_dataset(folder_cfg(root), tmp_path, 0)
    assert ds.duplicates == [root / "Noctua pronuba" / "copy.png"]  # same species: dropped, not leaked
    assert len(ds.samples) == 15
    shutil.copy(src, root / "Autographa gamma" / "dup.png")
    expect_error(
        lambda: load_dataset(folder_cfg(root), tmp_path, 0), "labelled", "'Autographa gamma'", "dup.png"
    )


def test_manifest_refuses_leaks_and_missing_files(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")  # outside the manifest's folder: absolute paths in it
    ds = load_dataset(folder_cfg(root), tmp_path, 0)
    splits = split_dataset(ds, 0.2, 0.2, seed=0)
    # the same file in two splits
    leak = Splits(splits.train, splits.validation, [*splits.test, splits.train[0]])
    expect_error(
        lambda: write_splits(leak, tmp_path / "run" / "m.csv"), str(splits.train[0].path), "train", "test"
    )
    manifest = write_splits(splits, tmp_path / "run" / "m.csv")
    text = manifest.read_text()
    first_train = next(line for line in text.splitlines() if line.startswith("train,"))
    (tmp_path / "edited.csv").write_text(text + first_train.replace("train,", "validation,", 1) + "\n")
    expect_error(lambda: read_splits(tmp_path / "edited.csv"), "in both", "train", "validation")
    # the same bytes under two names, one in test and one in train
    clone = root / "Noctua pronuba" / "clone.png"
    shutil.copy(splits.test[-1].path, clone)
    sneaky = Splits([*splits.train, Sample(clone, splits.test[-1].species)], splits.validation, splits.test)
    expect_error(lambda: write_splits(sneaky, tmp_path / "s.csv"), "same image bytes", "clone.png")
    # hand-made manifest with that clone: read_splits catches it too
    lines = text.splitlines()
    row = next(
        line for line in lines if line.startswith("test,") and str(splits.test[-1].path.resolve()) in line
    )
    (tmp_path / "clone.csv").write_text(
        text
        + row.replace("test,", "train,", 1).replace(str(splits.test[-1].path.resolve()), str(clone.resolve()))
        + "\n"
    )
    expect_error(lambda: read_splits(tmp_path / "clone.csv"), "same image bytes", "clone.png")
    # a file gone or changed since the split
    gone = splits.validation[0].path
    gone.unlink()
    expect_error(lambda: read_splits(manifest), str(gone), "does not exist")
    write_image(gone, 999)
    expect_error(lambda: read_splits(manifest), str(gone), "changed")


def test_missing_paths(tmp_path: Path) -> None:
    expect_error(
        lambda: load_dataset(folder_cfg(tmp_path / "nowhere"), tmp_path, 0), "nowhere", "does not exist"
    )
    labels = tmp_path / "labels.csv"
    labels.write_text("path,species\nimg/missing.png,Noctua pronuba\n")
    expect_error(
        lambda: load_dataset(DataConfig(kind="csv", path=labels), tmp_path, 0), "missing.png", "labels.csv:2"
    )
    root = make_folder(tmp_path / "d")
    expect_error(
        lambda: load_dataset(folder_cfg(root, taxonomy=tmp_path / "nope.csv"), tmp_path, 0),
        "nope.csv",
        "not found",
    )
    (tmp_path / "badcols.csv").write_text("file,label\na.png,x\n")
    expect_error(
        lambda: load_dataset(DataConfig(kind="csv", path=tmp_path / "badcols.csv"), tmp_path, 0),
        "lacks column",
    )


# ---------------------------------------------------------------- decoding, weights, batches


def test_load_images_shape_dtype_rgb_and_padding(tmp_path: Path) -> None:
    red = np.zeros((30, 30, 3), np.uint8)
    red[:, :, 2] = 255  # BGR on disk -> pure red
    cv2.imwrite(str(tmp_path / "red.png"), red)
    wide = np.zeros((10, 40, 3), np.uint8)
    wide[:, :, 0] = 200  # blue strip, 4:1
    cv2.imwrite(str(tmp_path / "wide.png"), wide)
    gray = np.full((12, 12), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    samples = [Sample(tmp_path / n, "x") for n in ("red.png", "wide.png", "gray.png")]
    out = load_images(samples, 16, workers=2)
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.uint8
    assert (out[0, :, :, 0] == 255).all() and (out[0, :, :, 1:] == 0).all()  # channel 0 is red
    assert (out[1, :, :, 2] == 200).all()  # padded by edge replication: no black bars, no stretch
    assert (out[2] == 77).all()
    # cache file: reused while files are unchanged, rebuilt when one changes
    cache = tmp_path / "cache" / "train.npy"
    first = load_images(samples, 16, cache_file=cache)
    assert cache.is_file() and np.array_equal(first, out)
    np.save(cache, np.zeros_like(first))  # a stale-looking cache with the right key is trusted
    assert not load_images(samples, 16, cache_file=cache).any()
    red[:, :, 1] = 255
    cv2.imwrite(str(tmp_path / "red.png"), red)
    os.utime(tmp_path / "red.png", ns=(10**18, 10**18))
    assert (load_images(samples, 16, cache_file=cache)[0, :, :, 1] == 255).all()


def test_sample_weights_balance_class_totals() -> None:
    targets = {"species": np.array([0] * 30 + [1] * 6 + [3] * 4), "order": np.array([0] * 36 + [1] * 4)}
    w = sample_weights(targets, {"species": 5, "order": 2}, "balanced")
    for level, t in targets.items():
        assert w[level].dtype == np.float32 and w[level].shape == t.shape
        totals = [w[level][t == c].sum() for c in np.unique(t)]
        np.testing.assert_allclose(totals, totals[0], rtol=1e-6)
        assert w[level].mean() == pytest.approx(1.0)
    assert w["species"][0] < w["species"][-1]
    assert (sample_weights(targets, {"species": 5, "order": 2}, "none")["species"] == 1).all()
    expect_error(lambda: sample_weights({"species": np.array([5])}, {"species": 3}), "species")


def _arrays(n: int = 37, size: int = 8):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    targets = {"species": rng.integers(0, 4, n), "family": rng.integers(0, 2, n)}
    return images, targets, sample_weights(targets, {"species": 4, "family": 2})


def _epoch(batches) -> list:
    if hasattr(batches, "as_numpy_iterator"):
        return list(batches.as_numpy_iterator())
    out = [batches[i] for i in range(len(batches))]
    batches.on_epoch_end()
    return out


def test_tf_data_and_python_pipelines_yield_the_same_batches() -> None:
    import tensorflow as tf

    images, targets, weights = _arrays()
    tfd = make_batches(images, targets, weights, 8, shuffle=True, seed=5, pipeline="tf.data")
    py = make_batches(images, targets, weights, 8, shuffle=True, seed=5, pipeline="python")
    assert isinstance(tfd, tf.data.Dataset) and len(py) == 5 and int(tfd.cardinality()) == 5
    seen_orders = []
    for _ in range(2):
        a, b = _epoch(tfd), _epoch(py)
        assert len(a) == len(b) == 5 and len(a[-1][0]) == 37 - 32
        for (xa, ya, wa), (xb, yb, wb) in zip(a, b, strict=True):
            assert xa.dtype == xb.dtype == np.float32 and xa.max() > 200  # 0-255, not rescaled
            np.testing.assert_array_equal(xa, xb)
            for level in targets:
                np.testing.assert_array_equal(ya[level], yb[level])
                np.testing.assert_array_equal(wa[level], wb[level])
        xs = np.concatenate([x for x, _, _ in a])
        assert sorted(map(bytes, xs.astype(np.uint8))) == sorted(map(bytes, images))  # each image once
        seen_orders.append(xs)
    assert not np.array_equal(seen_orders[0], seen_orders[1])  # reshuffled each epoch
    other = make_batches(images, targets, weights, 8, shuffle=True, seed=6, pipeline="python")
    assert not np.array_equal(_epoch(other)[0][0], seen_orders[0][:8])
    plain = make_batches(images, targets, None, 8, shuffle=False, seed=0, pipeline="tf.data")
    first = next(iter(plain.as_numpy_iterator()))
    assert len(first) == 2 and np.array_equal(first[0], images[:8].astype(np.float32))
    expect_error(
        lambda: make_batches(images, {"species": targets["species"][:5]}, None, 8, False, 0), "species"
    )


def test_fit_accepts_both_pipelines_with_per_output_weights() -> None:
    """The batch structure is what a multi-output Keras model's fit needs (dict y, dict weights)."""
    import keras

    images, targets, weights = _arrays(24)
    inp = keras.Input((8, 8, 3))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inp))
    outs = {
        k: keras.layers.Dense(n, activation="softmax", name=k)(h) for k, n in (("family", 2), ("species", 4))
    }
    model = keras.Model(inp, outs)
    model.compile("adam", loss={k: "sparse_categorical_crossentropy" for k in outs})
    for pipeline in ("tf.data", "python"):
        batches = make_batches(images, targets, weights, 8, shuffle=True, seed=0, pipeline=pipeline)
        hist = model.fit(batches, epochs=2, shuffle=False, verbose=0)
        assert len(hist.history["loss"]) == 2 and np.isfinite(hist.history["loss"]).all()


def test_python_pipeline_trains_on_the_jax_backend(tmp_path: Path) -> None:
    """The path without tf.data: KERAS_BACKEND=jax, pipeline auto -> PyDataset, real fit."""
    script = (
        "import numpy as np, keras\n"
        "from train.inputs import make_batches, sample_weights\n"
        "assert keras.backend.backend() == 'jax'\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8); y = {'species': rng.integers(0, 3, 16)}\n"
        "b = make_batches(x, y, sample_weights(y, {'species': 3}), 4, True, 0)\n"
        "assert isinstance(b, keras.utils.PyDataset), type(b)\n"
        "i = keras.Input((8, 8, 3)); h = keras.layers.GlobalAveragePooling2D()(i)\n"
        "m = keras.Model(i, {'species': keras.layers.Dense(3, activation='softmax', name='species')(h)})\n"
        "m.compile('adam', loss={'species': 'sparse_categorical_crossentropy'})\n"
        "h = m.fit(b, epochs=1, shuffle=False, verbose=0)\n"
        "print('loss', h.history['loss'][0])\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "loss" in res.stdout


def test_parallel_decoding_keeps_sample_order_on_a_synthetic_dataset(tmp_path: Path) -> None:
    """load_images with 4 workers gives, row by row, what decoding each file alone gives.

    How fast decoding and the two batchers are, against a training step, is measured side by side
    in bench/bench_train.py; the batchers' identical batches are checked in
    test_tf_data_and_python_pipelines_yield_the_same_batches.
    """
    crops_dir = write_synthetic_dataset(
        SyntheticData(species=["Noctua pronuba", "Bombus terrestris"], per_class=20, size=64),
        tmp_path / "syn",
        seed=0,
        image_size=64,
    )
    samples = [Sample(p, p.parent.name) for p in sorted(crops_dir.rglob("*.png"))]
    assert len(samples) == 40
    images = load_images(samples, 48, workers=4)
    alone = np.stack([decode_image(s.path, 48) for s in samples])
    assert images.shape == (40, 48, 48, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, alone)
    assert len({im.tobytes() for im in images}) == 40  # 40 different crops: a swap would show


def test_relative_data_path_gives_a_portable_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_folder(tmp_path / "d")
    monkeypatch.chdir(tmp_path)
    ds = load_dataset(folder_cfg(Path("d")), Path("work"), 0)
    assert all(s.path.is_absolute() for s in ds.samples)
    splits = split_dataset(ds, 0.2, 0.2, seed=0)
    manifest = write_splits(splits, Path("run/splits.csv"))
    monkeypatch.chdir("/")
    assert read_splits(tmp_path / manifest) == splits
