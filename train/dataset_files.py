"""What a labelled dataset folder is made of, and the error its readers and writers raise.

Both the reader (`train.dataset`) and the synthetic writer (`train.synthetic`, which the reader
calls for `kind: synthetic`) need these; they live here, below both, so neither imports the other
for them.
"""

from __future__ import annotations

from edge.errors import TrapcamError

TAXONOMY_FILE = "taxonomy.csv"  # species -> family -> order, one row per species folder


class DatasetError(TrapcamError):
    """The labelled data cannot be used as it is (the message names the file, class or row)."""
