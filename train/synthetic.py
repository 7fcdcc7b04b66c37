"""A synthetic crop dataset on disk: one folder per species plus taxonomy.csv.

The crops come from `edge.synth.species.render_crop`, i.e. they are made the way the trap makes
its crops (insect at frame scale on sheet or foliage, noise, JPEG), so a model trained here is
a fair stand-in for the demo and the tests. The folder is a plain ``folder`` dataset: anything
that reads real data reads this too, so the synthetic path exercises the real loader.

Deterministic in the seed: each species draws from its own generator (seed, species name), so
the same species gets the same crops whatever else is selected. A ``synthetic.json`` stamp
records what was rendered; a second call with the same settings reuses the folder (a resumed
run does not re-render), other settings re-render it.
"""

from __future__ import annotations

import csv
import json
import shutil
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from edge.synth.species import SPECIES, SyntheticSpecies, render_crop, species_by_name
from train.config import SyntheticData
from train.dataset_files import TAXONOMY_FILE, DatasetError

STAMP_FILE = "synthetic.json"
FORMAT_VERSION = 1


def _species_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8")), FORMAT_VERSION])


def _render_species(
    sp: SyntheticSpecies, folder: Path, n: int, size: int, background: str, seed: int
) -> None:
    rng = _species_rng(seed, sp.name)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        bg = background if background != "mixed" else ("sheet" if rng.random() < 0.5 else "flowers")
        crop = render_crop(sp, rng, size, bg)
        if not cv2.imwrite(str(folder / f"{i:05d}.png"), crop):
            raise DatasetError(f"cannot write synthetic crop {folder / f'{i:05d}.png'}")


def write_synthetic_dataset(cfg: SyntheticData, out_dir: Path, seed: int, image_size: int) -> Path:
    """Render ``cfg.per_class`` crops per species into `out_dir` (species folders + taxonomy.csv).

    Crops are ``cfg.size`` pixels (default `image_size`), PNG (lossless: the renderer already
    applied the JPEG artefacts a real crop has). Returns `out_dir`.
    """
    out_dir = Path(out_dir)
    names = cfg.species if cfg.species is not None else [s.name for s in SPECIES]
    if not names:
        raise DatasetError("data.synthetic.species is empty; name at least two species or leave it out")
    if len(set(names)) != len(names):
        raise DatasetError(f"data.synthetic.species lists a species twice: {names}")
    catalogue = [species_by_name(n) for n in names]
    size = cfg.size or image_size
    stamp = {
        "version": FORMAT_VERSION,
        "seed": seed,
        "species": names,
        "per_class": cfg.per_class,
        "background": cfg.background,
        "size": size,
    }
    stamp_path = out_dir / STAMP_FILE
    if stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text(encoding="utf-8")) == stamp:
                return out_dir
        except (OSError, json.JSONDecodeError):
            pass
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = [
            pool.submit(_render_species, sp, tmp / sp.name, cfg.per_class, size, cfg.background, seed)
            for sp in catalogue
        ]
        for job in jobs:
            job.result()
    with (tmp / TAXONOMY_FILE).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["species", "family", "order", "common_name"])
        for sp in catalogue:
            w.writerow([sp.name, sp.family, sp.order, sp.common_name])
    (tmp / STAMP_FILE).write_text(json.dumps(stamp, indent=1), encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
