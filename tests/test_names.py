"""Model labels as scientific names (edge.classify.names): what Camtrap DP and `trapcam evaluate` use."""

from __future__ import annotations

import pytest

from edge.classify.names import scientific_name, split_label


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Apis mellifera (Honey Bee)", ("Apis mellifera", "Honey Bee")),
        ("Nicrophorus tomentosus (Burying Beetle)", ("Nicrophorus tomentosus", "Burying Beetle")),
        ("Eumenes fraternus ()", ("Eumenes fraternus", None)),  # 31 labels of the iNat file look like this
        ("Bombus  (  Bumble Bees )  ", ("Bombus", "Bumble Bees")),
        ("Noctua pronuba", ("Noctua pronuba", None)),
        ("background", ("background", None)),
        ("(Honey Bee)", ("(Honey Bee)", None)),  # no name before it: the label is all there is
        (
            '=HYPERLINK("http://evil.example/x","click")',
            ('=HYPERLINK("http://evil.example/x","click")', None),
        ),
        ("Vanessa cardui  (Painted Lady)", ("Vanessa cardui", "Painted Lady")),
        ("Apis (mellifera) x", ("Apis (mellifera) x", None)),  # only a trailing parenthesis is a common name
        # nested parentheses: kept whole rather than guessed at
        ("Apis mellifera (Honey (Western) Bee)", ("Apis mellifera (Honey (Western) Bee)", None)),
    ],
)
def test_a_trailing_parenthesis_is_the_common_name(label: str, expected: tuple[str, str | None]) -> None:
    assert split_label(label) == expected
    assert scientific_name(label) == expected[0]


def test_no_label_stays_no_label() -> None:
    assert scientific_name(None) is None
