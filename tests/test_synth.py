"""The synthetic trap-night generator: species, scenes, ground truth and the writers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import ConfigError, TrapcamError
from edge.synth import (
    SPECIES,
    SceneParams,
    SyntheticNight,
    render_crop,
    render_insect,
    species_by_name,
    taxonomy,
)
from edge.synth.writer import (
    GROUND_TRUTH_NAME,
    SyntheticDataError,
    read_ground_truth,
    write_night,
    write_video,
)

SMALL = {"width": 320, "height": 240, "frames": 40, "insects": 6}


@pytest.fixture(scope="module")
def night() -> SyntheticNight:
    return SyntheticNight(SceneParams(width=480, height=320, frames=120, insects=8, seed=5))


# ---------------------------------------------------------------- species


def test_catalogue_spans_orders_and_families_and_matches_taxonomy() -> None:
    names = [s.name for s in SPECIES]
    assert len(names) == len(set(names)) >= 8
    assert len({s.family for s in SPECIES}) >= 4
    assert len({s.order for s in SPECIES}) >= 2
    tax = taxonomy()
    assert tax.levels == ("order", "family", "species")
    for s in SPECIES:
        assert tax.ancestors("species", s.name) == {"species": s.name, "family": s.family, "order": s.order}
        assert species_by_name(s.name) is s


def test_unknown_species_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown synthetic species 'Apis nonexistens'.*Noctua pronuba"):
        species_by_name("Apis nonexistens")


def test_insect_sprite_is_antialiased_sized_and_individual() -> None:
    moth = species_by_name("Noctua pronuba")
    bgr, alpha = render_insect(moth, np.random.default_rng(1), 80.0, 0.0)
    assert bgr.dtype == np.uint8 and bgr.shape == (*alpha.shape, 3)
    assert alpha.dtype == np.float32 and alpha.min() >= 0.0 and alpha.max() <= 1.0
    # Head up: the sprite is about one body length tall (antennae add a little).
    assert 0.95 * 80 <= alpha.shape[0] <= 1.3 * 80
    # Antialiased: the outline has partial coverage, not only 0 and 1.
    edge = (alpha > 0.05) & (alpha < 0.95)
    assert edge.sum() > 0.1 * (alpha >= 0.95).sum() ** 0.5 * 4
    again, _ = render_insect(moth, np.random.default_rng(1), 80.0, 0.0)
    other, _ = render_insect(moth, np.random.default_rng(2), 80.0, 0.0)
    assert np.array_equal(bgr, again)
    assert other.shape != bgr.shape or not np.array_equal(other, bgr)
    # Rotating by 90 degrees swaps the box sides (roughly).
    _, turned = render_insect(moth, np.random.default_rng(1), 80.0, 90.0)
    assert abs(turned.shape[1] - alpha.shape[0]) <= 3


def test_species_are_told_apart_by_a_simple_colour_classifier() -> None:
    """A weak proxy for 'distinct to a small CNN': nearest centroid on colour histograms of crops."""

    def feature(img: np.ndarray) -> np.ndarray:
        border = np.concatenate([img[:4].reshape(-1, 3), img[-4:].reshape(-1, 3)])
        fg = (np.abs(img.astype(np.int16) - np.median(border, axis=0)).max(axis=2) > 30).astype(np.uint8)
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], fg, [12, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
        return hist / max(hist.sum(), 1.0)

    rng = np.random.default_rng(0)
    train = {s.name: [feature(render_crop(s, rng, 64, "sheet")) for _ in range(8)] for s in SPECIES}
    centroids = {name: np.mean(f, axis=0) for name, f in train.items()}
    right = total = 0
    for s in SPECIES:
        for _ in range(6):
            f = feature(render_crop(s, rng, 64, "sheet"))
            guess = min(centroids, key=lambda n: float(np.abs(centroids[n] - f).sum()))
            right += guess == s.name
            total += 1
    print(f"nearest-centroid colour accuracy over {len(SPECIES)} species: {right / total:.2f}")
    assert right / total >= 0.6


def test_training_crops_have_the_size_asked_and_an_insect_in_the_middle() -> None:
    rng = np.random.default_rng(3)
    for background in ("sheet", "flowers"):
        crop = render_crop(species_by_name("Pterostichus melanarius"), rng, 96, background)
        assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
        grey = crop.mean(axis=2)
        # A black beetle in the middle, lighter background around it.
        assert grey[32:64, 32:64].min() < grey[:8].mean() - 25
    with pytest.raises(ConfigError, match="background='sand'"):
        render_crop(SPECIES[0], rng, 96, "sand")


# ---------------------------------------------------------------- scene parameters


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scene": "meadow"}, "scene='meadow'"),
        ({"width": 10}, "width=10"),
        ({"frames": 0}, "frames=0"),
        ({"insects": -1}, "insects=-1"),
        ({"frame_interval_s": 0}, "frame_interval_s=0"),
        ({"start": datetime(2026, 7, 1, 21, 0)}, "timezone-aware"),
    ],
)
def test_bad_scene_parameters_are_named(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SceneParams(**{**SMALL, **change})


# ---------------------------------------------------------------- the night


def test_same_seed_same_night_in_any_order_other_seed_differs() -> None:
    a = SyntheticNight(SceneParams(**SMALL, seed=11))
    b = SyntheticNight(SceneParams(**SMALL, seed=11))
    c = SyntheticNight(SceneParams(**SMALL, seed=12))
    assert a.visits == b.visits
    frames_a = {i: a.render(i) for i in range(len(a))}
    for i in (30, 5, 17, 39, 0):  # b renders out of order, a in order
        image, truth = b.render(i)
        assert np.array_equal(image, frames_a[i][0]) and truth == frames_a[i][1]
    assert c.visits != a.visits
    assert not np.array_equal(c.render(20)[0], frames_a[20][0])


def test_timestamps_are_utc_and_spaced() -> None:
    start = datetime(2026, 7, 1, 23, 0, tzinfo=timezone(timedelta(hours=2)))
    n = SyntheticNight(SceneParams(**SMALL, start=start, frame_interval_s=2.5))
    assert n.timestamp(0) == start and n.timestamp(0).utcoffset() == timedelta(0)
    assert n.timestamp(4) - n.timestamp(0) == timedelta(seconds=10)
    with pytest.raises(IndexError, match="out of range"):
        n.timestamp(len(n))


def test_ground_truth_follows_the_plan(night: SyntheticNight) -> None:
    visits = night.visits
    assert len(visits) == 8 and sum(night.ground_truth_counts().values()) == 8
    for i in range(0, len(night), 7):
        expected = {v.insect_id for v in visits if v.arrival_frame <= i < v.departure_frame}
        assert {o.insect_id for o in night.ground_truth(i)} == expected
    assert min(v.arrival_frame for v in visits) >= 1  # the first frame shows the empty screen


def test_boxes_hold_every_insect_pixel(night: SyntheticNight) -> None:
    w, h = night.params.width, night.params.height
    checked = 0
    for i in range(3, len(night), 9):
        image, truth = night.render(i)
        diff = np.abs(image.astype(np.int16) - night.render_background(i).astype(np.int16)).max(axis=2)
        inside = np.zeros((h, w), bool)
        for o in truth:
            b = o.box
            assert 0 <= b.x0 < b.x1 <= w and 0 <= b.y0 < b.y1 <= h
            inside[b.y0 : b.y1, b.x0 : b.x1] = True
            changed = diff[b.y0 : b.y1, b.x0 : b.x1] > 0
            assert changed.mean() > 0.15, f"frame {i}: insect {o.insect_id} box barely drawn"
            # Tight: every edge row/column of the box holds some insect pixel.
            assert changed[0].any() and changed[-1].any() and changed[:, 0].any() and changed[:, -1].any()
            checked += 1
        assert not (diff[~inside] > 0).any(), f"frame {i}: insect pixels outside the ground-truth boxes"
    assert checked > 10


def test_insects_stand_out_from_the_background_enough_to_be_found() -> None:
    """Every insect, pale moths included, differs from the lit sheet by > 18 levels over much of its box."""
    n = SyntheticNight(SceneParams(width=960, height=540, frames=160, insects=16, seed=2))
    worst = {}
    for i in range(10, len(n), 15):
        image, truth = n.render(i)
        diff = np.abs(image.astype(np.int16) - n.render_background(i).astype(np.int16)).max(axis=2)
        for o in truth:
            b = o.box
            found = (diff[b.y0 : b.y1, b.x0 : b.x1] > 18).mean()
            worst[o.species] = min(worst.get(o.species, 1.0), float(found))
    print("worst fraction of box above threshold per species:", {k: round(v, 2) for k, v in worst.items()})
    assert "Cabera pusaria" in worst  # the pale moth is in this night
    assert min(worst.values()) > 0.15


def test_sitting_insects_keep_identical_boxes(night: SyntheticNight) -> None:
    prev = {}
    still = moved = 0
    for i in range(len(night)):
        now = {o.insect_id: o for o in night.ground_truth(i)}
        for k, o in now.items():
            if k in prev and not o.moving:
                assert o.box == prev[k].box, f"insect {k} sits but its box changed at frame {i}"
                still += 1
            moved += o.moving
        prev = now
    assert still > 5 * moved > 0  # mostly sitting, but they do move


def test_a_long_night_has_brief_overlaps_and_many_insects_at_once() -> None:
    n = SyntheticNight(SceneParams(width=640, height=360, frames=600, insects=14, seed=0))
    overlap_frames = 0
    run: dict[tuple[int, int], int] = {}
    longest = 0
    for i in range(len(n)):
        truth = n.ground_truth(i)
        now = {
            (a.insect_id, b.insect_id)
            for j, a in enumerate(truth)
            for b in truth[j + 1 :]
            if a.box.iou(b.box) > 0
        }
        overlap_frames += bool(now)
        run = {p: run.get(p, 0) + 1 for p in now}
        longest = max([longest, *run.values()])
    most = max(len(n.ground_truth(i)) for i in range(0, len(n), 5))
    print(f"overlap frames {overlap_frames}/{len(n)}, longest overlap {longest} frames, most at once {most}")
    assert overlap_frames > 0
    assert longest <= 40
    assert most >= 6


# ---------------------------------------------------------------- writers


def test_write_night_round_trip(tmp_path: Path) -> None:
    n = SyntheticNight(SceneParams(**SMALL, seed=4, frame_interval_s=2.0))
    out = write_night(n, tmp_path / "night", fmt="png")
    files = sorted(out.glob("*.png"))
    assert len(files) == len(n)
    for i, f in enumerate(files):
        stamp = datetime.strptime(f.name[:15], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
        assert stamp == n.timestamp(i).replace(microsecond=0)
        assert int(f.stem.rsplit("-", 1)[1]) == i
    assert np.array_equal(cv2.imread(str(files[7])), n.render(7)[0])  # PNG is lossless
    rows = read_ground_truth(out)
    expected = [(i, o) for i in range(len(n)) for o in n.ground_truth(i)]
    assert len(rows) == len(expected) > 0
    for row, (i, o) in zip(rows, expected, strict=True):
        assert (row.frame, row.insect_id, row.species, row.family, row.order, row.box, row.moving) == (
            i, o.insect_id, o.species, o.family, o.order, o.box, o.moving,
        )  # fmt: skip
        assert row.timestamp == n.timestamp(i)
    jpg = write_night(n, tmp_path / "jpg", fmt="jpg", jpeg_quality=80)
    assert len(list(jpg.glob("*.jpg"))) == len(n)


def test_write_video_is_readable_with_the_right_frame_count(tmp_path: Path) -> None:
    n = SyntheticNight(SceneParams(**SMALL, seed=4))
    for name in ("night.avi", "night.mp4"):
        path = write_video(n, tmp_path / name, fps=10)
        cap = cv2.VideoCapture(str(path))
        assert cap.isOpened()
        count = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (240, 320, 3)
            count += 1
        cap.release()
        assert count == len(n)
        assert read_ground_truth(path.with_suffix(".csv"))


def test_bad_ground_truth_and_outputs_raise_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / GROUND_TRUTH_NAME
    bad.write_text(
        "frame,timestamp,insect_id,species,family,order,x0,y0,x1,y1,moving\n"
        "0,2026-07-01T21:30:00+00:00,1,A,B,C,1,2,3,4,0\n"
        "1,2026-07-01T21:30:05+00:00,1,A,B,C,1,x,3,4,0\n"
    )
    with pytest.raises(SyntheticDataError, match=r"ground_truth.csv:3: column 'y0': bad value 'x'"):
        read_ground_truth(tmp_path)
    bad.write_text("frame,when\n")
    with pytest.raises(SyntheticDataError, match=r":1: header"):
        read_ground_truth(bad)
    with pytest.raises(SyntheticDataError, match="not found"):
        read_ground_truth(tmp_path / "missing.csv")
    n = SyntheticNight(SceneParams(**SMALL))
    with pytest.raises(SyntheticDataError, match=r"unsupported video type '\.mkv'"):
        write_video(n, tmp_path / "x.mkv")
    with pytest.raises(SyntheticDataError, match="fmt='gif'"):
        write_night(n, tmp_path / "g", fmt="gif")
    assert issubclass(SyntheticDataError, TrapcamError)


def test_a_night_can_be_limited_to_chosen_species() -> None:
    chosen = ("Noctua pronuba", "Coccinella septempunctata", "Bombus terrestris")
    night = SyntheticNight(SceneParams(frames=60, insects=12, seed=4, species=chosen))
    counts = night.ground_truth_counts()
    assert sum(counts.values()) == 12 and set(counts) <= set(chosen) and len(counts) >= 2
    everyone = SyntheticNight(SceneParams(frames=60, insects=12, seed=4)).ground_truth_counts()
    assert not set(everyone) <= set(chosen)  # without a choice the whole catalogue comes
    with pytest.raises(ConfigError, match=r"unknown synthetic species 'Vanessa cardui'"):
        SceneParams(species=("Noctua pronuba", "Vanessa cardui"))
    with pytest.raises(ConfigError, match=r"species=\(\)"):
        SceneParams(species=())
