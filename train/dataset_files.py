"""What a labelled dataset folder is made of, and the error its readers and writers raise.

Both the reader (`train.dataset`) and the synthetic writer (`train.synthetic`, which the reader
calls for `kind: synthetic`) need these; they live here, below both, so neither imports the other
for them.
"""

from __future__ import annotations

from pathlib import Path

from edge.errors import TrapcamError

TAXONOMY_FILE = "taxonomy.csv"  # species -> family -> order, one row per species folder


class DatasetError(TrapcamError):
    """The labelled data cannot be used as it is (the message names the file, class or row)."""


def manifest_path(image: Path, folder: Path) -> str:
    """How splits.csv (in `folder`) names an image: relative to the folder when the image is inside it
    (a run's synthetic crops), so the run folder can move (trained on a GPU machine, converted on a
    laptop); any other image absolute. `folder` must be absolute."""
    image = image.absolute()
    try:
        return image.relative_to(folder).as_posix()
    except ValueError:
        return str(image)


def manifest_image(name: str, folder: Path) -> Path:
    """The image a splits.csv in `folder` names (the inverse of `manifest_path`)."""
    image = Path(name)
    return image if image.is_absolute() else folder / image
