"""A track's resume state (what a restarted trap continues) survives its JSON exactly, reads what
older runs wrote, and refuses a damaged value naming the field (issue 26: each promise stated)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from edge.track import TrackingError
from edge.track.resume import ResumeState


def test_every_field_survives_its_json() -> None:
    state = ResumeState(
        appearance=np.array([0.25, 0.5, 0.25], dtype=np.float32),
        embedding=np.array([0.1, -0.7, 0.7], dtype=np.float32),
        vote={"levels": ["species"], "weights": {"species": {"a": 1.5}}, "counts": {"species": {"a": 2}}},
        best_key=(1.0, 0.75, 300.0),
        best_box=(10, 20, 60, 70),
        velocity=(12.34567, -0.0004),
        lost=True,
        counted=True,
        revision=3,
    )
    text = state.to_json()
    assert " " not in text  # compact: it is written with every open track, often
    again = ResumeState.from_json(text)
    assert again.appearance is not None and again.embedding is not None
    assert again.appearance.dtype == np.float64
    np.testing.assert_array_equal(again.appearance, [0.25, 0.5, 0.25])
    np.testing.assert_array_equal(again.embedding, np.array([0.1, -0.7, 0.7], dtype=np.float32))
    assert (again.vote, again.best_key, again.best_box) == (state.vote, (1.0, 0.75, 300.0), (10, 20, 60, 70))
    assert again.velocity == (12.346, -0.0)  # a thousandth of a pixel per second is enough
    assert (again.lost, again.counted, again.revision) == (True, True, 3)
    assert (
        json.loads(text)["appearance"]
        == base64.b64encode(np.array([0.25, 0.5, 0.25], "<f4").tobytes()).decode()
    )


def test_a_state_from_an_older_run_reads_with_the_defaults() -> None:
    state = ResumeState.from_json('{"appearance": null, "embedding": null}')
    assert state == ResumeState(appearance=None, embedding=None)
    assert (state.best_key, state.best_box, state.velocity) == ((-1.0, -1.0, -1.0), None, (0.0, 0.0))
    assert (state.lost, state.counted, state.revision, state.vote) == (False, False, 1, {})
    assert ResumeState.from_json('{"vote": null}').vote == {}
    assert ResumeState(appearance=None, embedding=None).to_json() == (
        '{"appearance":null,"embedding":null,"vote":{},"best_key":[-1.0,-1.0,-1.0],"best_box":null,'
        '"velocity":[0.0,0.0],"lost":false,"counted":false,"revision":1}'
    )


def vector_text(values: list[float]) -> str:
    return base64.b64encode(np.asarray(values, "<f4").tobytes()).decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "resume state: not JSON"),
        ("[1, 2]", "resume state: expected an object, got list"),
        ('{"best_key": [1, 2]}', "resume state: best_key [1, 2]; expected three numbers"),
        ('{"best_key": [1, 2, "x"]}', "resume state: best_key [1, 2, 'x']; expected three numbers"),
        ('{"best_key": "abc"}', "resume state: best_key 'abc'; expected three numbers"),
        ('{"best_box": [1, 2, 3]}', "resume state: best_box [1, 2, 3]; expected four integers or null"),
        (
            '{"best_box": [1, 2, 3, 4.5]}',
            "resume state: best_box [1, 2, 3, 4.5]; expected four integers or null",
        ),
        ('{"best_box": "1,2,3,4"}', "resume state: best_box '1,2,3,4'; expected four integers or null"),
        ('{"velocity": [1]}', "resume state: velocity [1]; expected two finite numbers"),
        ('{"velocity": [1, "a"]}', "resume state: velocity [1, 'a']; expected two finite numbers"),
        ('{"velocity": [1, Infinity]}', "resume state: velocity [1, inf]; expected two finite numbers"),
        ('{"velocity": "fast"}', "resume state: velocity 'fast'; expected two finite numbers"),
        ('{"revision": 0}', "resume state: revision 0; expected an integer >= 1"),
        ('{"revision": true}', "resume state: revision True; expected an integer >= 1"),
        ('{"revision": 2.0}', "resume state: revision 2.0; expected an integer >= 1"),
        ('{"vote": [1]}', "resume state: vote is a list; expected an object"),
        ('{"appearance": "@@@"}', "resume state: appearance is not base64 text"),
        ('{"embedding": ""}', "resume state: embedding holds 0 bytes; expected float32 values"),
        ('{"embedding": "AAAAAAA="}', "resume state: embedding holds 5 bytes; expected float32 values"),
        (
            json.dumps({"appearance": vector_text([0.5, float("nan")])}),
            "resume state: appearance holds values that are not finite numbers",
        ),
    ],
)
def test_a_damaged_value_is_refused_naming_its_field(text: str, message: str) -> None:
    with pytest.raises(TrackingError) as raised:
        ResumeState.from_json(text)
    assert str(raised.value) == message


def test_the_boundaries_that_are_still_valid() -> None:
    assert ResumeState.from_json('{"revision": 1}').revision == 1
    assert ResumeState.from_json('{"best_box": [0, 0, 1, 1], "best_key": [0, 0.5, 2]}').best_box == (
        0,
        0,
        1,
        1,
    )
    assert ResumeState.from_json('{"velocity": [-3, 2.5]}').velocity == (-3.0, 2.5)
    one = ResumeState.from_json(json.dumps({"embedding": vector_text([2.0])}))
    assert one.embedding is not None and one.embedding.tolist() == [2.0]
