"""The per-track vote's promises, stated one by one: its bounds, how tallies merge and restore, and
where the open set's majority and the winner's share draw their lines."""

from __future__ import annotations

import pytest

from edge.classify.taxonomy import Taxonomy
from edge.classify.types import Classification, LevelPrediction
from edge.track import TrackingError
from edge.track.vote import TaxonVote, vote

LEVELS = ("order", "family", "species")


def crop(
    answers: dict[str, tuple[str | None, float]], distance: float | None = None, unknown: bool = False
) -> Classification:
    """A crop's classification: per level (label or None when abstained, score)."""
    levels = {
        lv: LevelPrediction(lv, label, label or "x", score, ((label or "x", score),))
        for lv, (label, score) in answers.items()
    }
    return Classification(levels, None, None, 0.0, unknown=unknown, open_set_distance=distance)


def moth(score: float = 0.9, species: str = "Noctua pronuba"):
    return crop(
        {"order": ("Lepidoptera", score), "family": ("Noctuidae", score), "species": (species, score)}
    )


def test_min_share_is_a_share_in_0_to_1_with_1_allowed() -> None:
    assert TaxonVote(min_share=1.0).min_share == 1.0
    for bad in (0.0, 1.0001, -0.5):
        with pytest.raises(TrackingError) as raised:
            TaxonVote(min_share=bad)
        assert str(raised.value) == f"vote min_share: got {bad!r}; expected a number in (0, 1]"


def test_scores_are_probabilities_0_and_1_included() -> None:
    tally = TaxonVote()
    tally.add(crop({"species": ("Noctua pronuba", 0.0)}))
    tally.add(crop({"species": ("Noctua pronuba", 1.0)}))
    assert tally.votes == {"species": {"Noctua pronuba": 1.0}}
    for bad in (1.5, -0.1):
        with pytest.raises(TrackingError) as raised:
            TaxonVote().add(crop({"species": ("Noctua pronuba", bad)}))
        assert str(raised.value) == f"vote: level 'species' score {bad!r} is not a probability in [0, 1]"


def test_a_level_whose_votes_are_all_zero_abstains() -> None:
    result = vote([crop({"species": ("Noctua pronuba", 0.0)})] * 3)
    assert (result.level, result.label, result.score) == (None, None, 0.0)
    assert result.votes == {"species": {"Noctua pronuba": 0.0}}  # the tally is still reported


def test_an_abstained_coarse_head_does_not_hide_the_finer_ones() -> None:
    result = vote([crop({"order": (None, 0.3), "family": (None, 0.2), "species": ("Noctua pronuba", 0.8)})])
    assert (result.level, result.label) == ("species", "Noctua pronuba")


def test_a_winner_holding_exactly_min_share_wins_and_ties_break_by_name() -> None:
    crops = [crop({"species": ("Agrotis exclamationis", 0.6)}), crop({"species": ("Noctua pronuba", 0.6)})]
    result = vote(crops, min_share=0.5)
    assert (result.level, result.label) == ("species", "Noctua pronuba")
    assert vote(crops, min_share=0.51).label is None


def test_merging_two_tallies_is_adding_all_their_crops_to_one() -> None:
    """Two tracks found to be one insect: the merged tally is the one that saw every crop."""
    first = [
        moth(0.875),
        crop({"order": ("Lepidoptera", 0.75)}, distance=3.0, unknown=True),
    ]  # binary fractions:
    second = [  # sums exact in any order
        moth(0.625, "Agrotis exclamationis"),
        moth(0.5),
        crop({"order": ("Diptera", 0.5)}, distance=3.0, unknown=True),
    ]
    a, b, whole = TaxonVote(), TaxonVote(), TaxonVote()
    for c in first:
        a.add(c)
        whole.add(c)
    for c in second:
        b.add(c)
        whole.add(c)
    a.merge(b)
    assert a.state() == whole.state()
    assert a.state()["open_set"] == [2, 2]
    assert a.result() == whole.result()


def test_merge_brings_levels_the_tally_had_not_seen() -> None:
    coarse, fine = TaxonVote(), TaxonVote()
    coarse.add(crop({"order": ("Lepidoptera", 0.9)}))
    fine.add(moth())
    coarse.merge(fine)
    assert coarse.state()["levels"] == ["order", "family", "species"]
    assert (coarse.result().level, coarse.result().label) == ("species", "Noctua pronuba")


def test_restore_continues_the_saved_tally_and_reads_one_from_before_the_open_set() -> None:
    tally = TaxonVote()
    for c in (moth(), moth(0.7), crop({"order": ("Lepidoptera", 0.9)}, distance=3.0, unknown=True)):
        tally.add(c)
    again = TaxonVote()
    again.restore(tally.state())
    assert again.state() == tally.state() and again.result() == tally.result()
    old = {k: v for k, v in tally.state().items() if k != "open_set"}
    before = TaxonVote()
    before.restore(old)
    assert before.state() == {**old, "open_set": [0, 0]}
    assert before.result().label == "Noctua pronuba"


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            {"levels": ["species"], "weights": {}},
            "vote state: expected levels, weights and counts, got KeyError('counts')",
        ),
        (
            {"levels": ["species"], "weights": {"species": {"a": 1.0}}, "counts": {"species": {"b": 1}}},
            "vote state: weights and counts name different labels",
        ),
        (
            {"levels": ["species"], "weights": {"species": {"a": 1.0}}, "counts": {}},
            "vote state: weights and counts name different labels",
        ),
    ],
)
def test_a_saved_tally_that_does_not_fit_is_refused_in_one_line(state: dict, message: str) -> None:
    tally = TaxonVote()
    tally.add(moth())
    with pytest.raises(TrackingError) as raised:
        tally.restore(state)
    assert str(raised.value) == message
    assert tally.result().label == "Noctua pronuba"  # left as it was


@pytest.mark.parametrize(
    ("unknown", "measured", "called_unknown"),
    [(2, 4, False), (3, 5, True), (2, 5, False), (1, 1, True), (0, 3, False)],
)
def test_a_track_is_unknown_only_when_more_than_half_of_its_measured_crops_are(
    unknown: int, measured: int, called_unknown: bool
) -> None:
    crops = [moth(0.9) for _ in range(3)]  # crops the open-set rule did not measure do not count
    crops += [crop({"species": ("Noctua pronuba", 0.9)}, 3.0, True) for _ in range(unknown)]
    crops += [crop({"species": ("Noctua pronuba", 0.9)}, 0.4) for _ in range(measured - unknown)]
    result = vote(crops, Taxonomy(levels=LEVELS))
    assert (result.label == "unknown") is called_unknown
    if called_unknown:
        assert result.level is None and result.score == pytest.approx(unknown / measured)
