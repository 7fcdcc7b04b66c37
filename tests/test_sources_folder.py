"""Image-folder replay with real JPEG files on disk (EXIF written by Pillow)."""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.config import FolderSource, SyntheticSource
from edge.errors import ConfigError, SourceError, TrapcamError
from edge.sources.base import EndOfStream
from edge.sources.factory import make_source
from edge.sources.folder import FolderFrameSource, jpeg_is_truncated, natural_key, strptime_regex

EXIF_IFD = 0x8769


def write_jpeg(
    path: Path,
    value: int = 128,
    size: tuple[int, int] = (64, 48),
    exif_time: str | None = None,
    offset: str | None = None,
    subsec: str | None = None,
    in_ifd0: bool = False,
    orientation: int | None = None,
    noise: bool = False,
) -> Path:
    """A real JPEG whose pixels encode `value` (so frame order can be checked from pixels)."""
    width, height = size
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:] = (value, 255 - value, 40)
    rgb[:, : width // 4] = (255, 255, 255)  # a white left strip shows rotation
    if noise:  # texture makes a realistic file whose scan data is most of its bytes
        grain = np.random.default_rng(value).integers(-30, 30, rgb.shape)
        rgb = np.clip(rgb.astype(int) + grain, 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    if orientation is not None:
        exif[0x0112] = orientation
    if exif_time is not None:
        if in_ifd0:
            exif[36867] = exif_time
        else:
            ifd = exif.get_ifd(EXIF_IFD)
            ifd[36867] = exif_time
            if offset is not None:
                ifd[36881] = offset
            if subsec is not None:
                ifd[37521] = subsec
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=92, exif=exif)
    return path


def red_of(image: np.ndarray) -> int:
    """Mean red value right of the white strip (BGR frame)."""
    return round(float(image[:, image.shape[1] // 2 :, 2].mean()))


def cfg(path: Path, **kw: object) -> FolderSource:
    return FolderSource(kind="folder", path=path, **kw)


def read_all(source: FolderFrameSource) -> list:
    source.open()
    out = []
    while True:
        try:
            out.append(source.read())
        except EndOfStream:
            return out


def test_exif_time_is_converted_from_the_configured_zone_to_utc(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg", exif_time="2026:07:01 23:30:05")  # CEST = UTC+2 in July
    write_jpeg(tmp_path / "b.jpg", exif_time="2026:01:15 23:30:05")  # CET = UTC+1 in January
    frames = read_all(FolderFrameSource(cfg(tmp_path, timezone="Europe/Berlin")))
    assert [f.timestamp for f in frames] == [
        datetime(2026, 7, 1, 21, 30, 5, tzinfo=timezone.utc),
        datetime(2026, 1, 15, 22, 30, 5, tzinfo=timezone.utc),
    ]
    assert all(f.clock_source == "exif" for f in frames)
    assert all(f.timestamp.utcoffset().total_seconds() == 0 for f in frames)
    assert frames[0].image.dtype == np.uint8 and frames[0].image.shape == (48, 64, 3)


def test_exif_offset_and_subseconds_win_over_the_configured_zone(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg", exif_time="2026:07:01 23:30:05", offset="-04:00", subsec="25")
    write_jpeg(tmp_path / "b.jpg", exif_time="2026:07:02 01:00:00", in_ifd0=True)  # non-standard place
    frames = read_all(FolderFrameSource(cfg(tmp_path, timezone="Europe/Berlin", timestamps="exif")))
    assert frames[0].timestamp == datetime(2026, 7, 2, 3, 30, 5, 250000, tzinfo=timezone.utc)
    assert frames[1].timestamp == datetime(2026, 7, 1, 23, 0, 0, tzinfo=timezone.utc)


def test_time_found_in_file_name_with_strptime_format(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "trap_20260701-213000_001.jpg", value=10)
    write_jpeg(tmp_path / "trap_20260701-213005_002.jpg", value=20)
    source = FolderFrameSource(
        cfg(tmp_path, timestamps="filename", filename_format="%Y%m%d-%H%M%S", timezone="America/New_York")
    )
    frames = read_all(source)
    assert [f.timestamp for f in frames] == [
        datetime(2026, 7, 2, 1, 30, 0, tzinfo=timezone.utc),  # EDT = UTC-4
        datetime(2026, 7, 2, 1, 30, 5, tzinfo=timezone.utc),
    ]
    assert [f.clock_source for f in frames] == ["filename", "filename"]
    assert [f.name for f in frames] == ["trap_20260701-213000_001.jpg", "trap_20260701-213005_002.jpg"]


def test_exif_then_filename_prefers_exif_and_falls_back_to_the_name(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "cam_20260701-220000.jpg", exif_time="2026:07:01 21:00:00")
    write_jpeg(tmp_path / "cam_20260701-220100.jpg")
    frames = read_all(FolderFrameSource(cfg(tmp_path, filename_format="%Y%m%d-%H%M%S")))
    assert [(f.clock_source, f.timestamp.hour, f.timestamp.minute) for f in frames] == [
        ("exif", 21, 0),
        ("filename", 22, 1),
    ]


def test_no_time_anywhere_uses_mtime_and_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for i, stamp in enumerate([1_780_000_000, 1_780_000_060, 1_780_000_120]):
        path = write_jpeg(tmp_path / f"img{i}.jpg")
        os.utime(path, (stamp, stamp))
    source = FolderFrameSource(cfg(tmp_path, filename_format="%Y%m%d-%H%M%S"))
    with caplog.at_level(logging.WARNING, logger="edge.sources.folder"):
        frames = read_all(source)
    assert [f.clock_source for f in frames] == ["mtime"] * 3
    assert [f.timestamp.timestamp() for f in frames] == [1_780_000_000, 1_780_000_060, 1_780_000_120]
    warnings = [r for r in caplog.records if "modification" in r.getMessage()]
    assert len(warnings) == 1 and "img0.jpg" in warnings[0].getMessage()
    assert source.mtime_frames == 3


def test_natural_sort_and_case_insensitive_pattern(tmp_path: Path) -> None:
    names = ["img10.jpg", "img2.JPG", "img1.jpg", "IMG3.Jpg", "notes.txt", "img4.png"]
    for i, name in enumerate(names):
        if name.endswith(".txt"):
            (tmp_path / name).write_text("not an image")
        else:
            write_jpeg(tmp_path / name, value=10 + i)
    frames = read_all(FolderFrameSource(cfg(tmp_path, timestamps="mtime")))
    assert [f.name for f in frames] == ["img1.jpg", "img2.JPG", "IMG3.Jpg", "img10.jpg"]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    # Pixels really come from the named files (value encoded in the red channel).
    assert [red_of(f.image) for f in frames] == [pytest.approx(v, abs=3) for v in (12, 11, 13, 10)]
    assert sorted(["b10", "b9", "a1"], key=natural_key) == ["a1", "b9", "b10"]


def test_recursive_walks_subfolders_in_natural_order(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "night2" / "a.jpg")
    write_jpeg(tmp_path / "night10" / "a.jpg")
    write_jpeg(tmp_path / "top.jpg")
    flat = read_all(FolderFrameSource(cfg(tmp_path, timestamps="mtime")))
    deep = read_all(FolderFrameSource(cfg(tmp_path, timestamps="mtime", recursive=True)))
    assert [f.name for f in flat] == ["top.jpg"]
    assert [f.name for f in deep] == ["night2/a.jpg", "night10/a.jpg", "top.jpg"]


def test_corrupt_and_truncated_files_are_skipped_counted_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_jpeg(tmp_path / "f1.jpg", value=50, size=(320, 240))
    rng = np.random.default_rng(0)
    (tmp_path / "f2.jpg").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    whole = write_jpeg(
        tmp_path / "full.jpg", value=90, size=(320, 240), exif_time="2026:07:01 21:00:00", noise=True
    )
    data = whole.read_bytes()
    (tmp_path / "f3.jpg").write_bytes(data[: len(data) // 2])
    whole.rename(tmp_path / "f4.jpg")
    (tmp_path / "f5.jpg").write_bytes(b"")
    # Some OpenCV builds decode a truncated JPEG with grey fill instead of failing: check it ourselves.
    assert jpeg_is_truncated(data[: len(data) // 2]) and not jpeg_is_truncated(data)
    assert not jpeg_is_truncated(data + b"MPF trailer after the end-of-image marker")

    source = FolderFrameSource(cfg(tmp_path, timestamps="mtime"))
    with caplog.at_level(logging.WARNING, logger="edge.sources.folder"):
        results = read_all(source)
    assert [r is None for r in results] == [False, True, True, False, True]
    assert source.corrupt_frames == 3
    good = [r for r in results if r is not None]
    assert [f.name for f in good] == ["f1.jpg", "f4.jpg"]
    assert [f.index for f in good] == [0, 1]
    messages = " ".join(r.getMessage() for r in caplog.records)
    for name in ("f2.jpg", "f3.jpg", "f5.jpg"):
        assert name in messages
    assert "truncated" in messages


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "rot.jpg", size=(80, 40), orientation=6)  # rotate 90° clockwise to display
    (frame,) = read_all(FolderFrameSource(cfg(tmp_path, timestamps="mtime")))
    assert frame.image.shape == (80, 40, 3)
    # The white strip was on the left; after a clockwise turn it is at the top.
    assert frame.image[:10].mean() > 240 and frame.image[-10:].mean() < 200


def test_loop_restarts_and_keeps_counting(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg")
    write_jpeg(tmp_path / "b.jpg")
    source = FolderFrameSource(cfg(tmp_path, timestamps="mtime", loop=True))
    source.open()
    frames = [source.read() for _ in range(5)]
    assert [f.name for f in frames] == ["a.jpg", "b.jpg", "a.jpg", "b.jpg", "a.jpg"]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]


def test_missing_and_empty_folders_name_path_and_pattern(tmp_path: Path) -> None:
    # a folder the config names that is not there is a config error (exit 2), not a camera to wait for
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=r"source.path .*nope: does not exist; expected the folder"):
        FolderFrameSource(cfg(missing))
    (tmp_path / "file.jpg").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"file.jpg: is not a folder"):
        FolderFrameSource(cfg(tmp_path / "file.jpg"))
    (tmp_path / "file.jpg").unlink()
    # one that disappears after the start is the source's trouble
    going = tmp_path / "going"
    going.mkdir()
    source = FolderFrameSource(cfg(going))
    going.rmdir()
    with pytest.raises(SourceError, match=r"going does not exist \(pattern '\*\.jpg'\)"):
        source.open()
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"test_missing\S*: no files match pattern '\*\.jpg' in it$"):
        FolderFrameSource(cfg(tmp_path)).open()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "source.timezone: got 'Mars/Olympus'"),
        ({"timestamps": "filename"}, "source.filename_format: not set"),
        ({"filename_format": "%Y%m%d_%a"}, "directive %a is not supported"),
    ],
)
def test_bad_settings_raise_one_clear_line(tmp_path: Path, kw: dict, message: str) -> None:
    with pytest.raises(TrapcamError, match=message) as info:
        FolderFrameSource(cfg(tmp_path, **kw))
    assert "\n" not in str(info.value)


def test_strptime_regex_finds_the_time_inside_a_name() -> None:
    regex = strptime_regex("%Y-%m-%dT%H%M%S")
    assert [m.group(1) for m in regex.finditer("cam3_2026-07-01T213000_x.jpg")] == ["2026-07-01T213000"]
    assert not list(regex.finditer("cam3_2026-7-1T213000.jpg"))


def test_factory_builds_a_folder_source(tmp_path: Path) -> None:
    source = make_source(cfg(tmp_path))
    assert isinstance(source, FolderFrameSource) and source.live is False


def test_factory_builds_the_synthetic_source_lazily() -> None:
    import edge.sources.synthetic as synthetic

    source = make_source(SyntheticSource(kind="synthetic", frames=2))
    assert isinstance(source, synthetic.SyntheticFrameSource)
