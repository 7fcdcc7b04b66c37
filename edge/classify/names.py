"""A model label as a scientific name and, where the label carries one, an English common name.

Many third-party insect models label their classes "Genus species (Common Name)": the iNaturalist
insect model in ../shared labels 1,022 species that way ("Apis mellifera (Honey Bee)"). The label
stays what the model says everywhere a person reads it (CSV files, MQTT, the report), but two places
need the scientific name alone:

* Camtrap DP: `scientificName` is the name GBIF matches against its backbone; the common name
  belongs in the package's `taxonomic` entry as `vernacularNames` (ISO 639-2 code `eng`).
* `trapcam evaluate`: an ecologist annotates "Apis mellifera"; the model's "Apis mellifera
  (Honey Bee)" is the same answer and must be scored right, not as a name nobody annotated.

A label without a trailing parenthesis is its own scientific name; an empty "()" (the iNat file has
31 of them, e.g. "Eumenes fraternus ()") carries no common name.
"""

from __future__ import annotations

import re

# A scientific name: starts with a letter, then letters, spaces, dots, hyphens, apostrophes or the hybrid
# sign; anything else before the parenthesis (a formula such as =HYPERLINK("...")) is no name to split.
_WITH_COMMON = re.compile(r"^(?P<scientific>[^\W\d_][\w .'\u00d7-]*?)\s*\((?P<common>[^()]*)\)\s*$")


def split_label(label: str) -> tuple[str, str | None]:
    """(scientific name, common name or None) of a model label; a plain label is returned as it is."""
    match = _WITH_COMMON.match(label)
    if match is None:
        return label, None
    common = match["common"].strip()
    return match["scientific"], common or None


def scientific_name(label: str | None) -> str | None:
    """The label without a trailing "(Common Name)"; None stays None."""
    return None if label is None else split_label(label)[0]
