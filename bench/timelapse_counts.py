"""Counts on synthetic time-lapse nights: snapshots a minute or ten minutes apart.

Many traps take a snapshot every minute or every few minutes instead of filming. Each night here
is a synthetic sheet night simulated in 5 s steps of insect behaviour (sitters, walkers, arrivals,
departures) of which every n-th step is written as a JPEG frame with its ground truth
(`trapcam synth --snapshot-every`); the trap replays it through `trapcam evaluate`'s own code with
`tracker.mode: timelapse` (and, for the comparison, the video tracker). Printed per night: the true
individuals (those seen in at least one snapshot), how many the trap counted, the tracks beyond the
first on insects counted more than once (twice), the insects left without a track of their own
(merged: linked into another insect's track, or missed), the individual count error, and the
per-snapshot count error (the sum over snapshots of |insects the trap saw in it -
true insects in it|, over the sum of true insects).

    python -m bench.timelapse_counts                              # 60 s and 600 s, seeds 1-3, ~2 min
    python -m bench.timelapse_counts --spacing 600 --seeds 1 --insects 60
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

STEP_S = 5.0  # seconds of insect behaviour per simulated step


@dataclass(frozen=True)
class NightFigures:
    """What one run over one night gives."""

    true_individuals: int
    counted: int
    extra: int  # tracks beyond the first on insects counted more than once
    merged: int  # insects with no track of their own (linked into another insect's track, or missed)
    per_snapshot_error: float
    snapshots: int
    boxes: int

    @property
    def count_error(self) -> float:
        return (self.counted - self.true_individuals) / max(self.true_individuals, 1)


def night_folder(out: Path, spacing_s: float, seed: int, insects: int, hours: float) -> Path:
    """Write (once) the night's frames and ground truth; return the folder."""
    from edge.synth.scene import SceneParams, SyntheticNight
    from edge.synth.writer import write_night

    every = max(1, round(spacing_s / STEP_S))
    frames = max(2, round(hours * 3600 / (every * STEP_S)))
    folder = out / f"night-{spacing_s:g}s-seed{seed}-{insects}"
    if not (folder / "ground_truth.csv").is_file():
        params = SceneParams(
            frames=frames, frame_interval_s=STEP_S, snapshot_every=every, insects=insects, seed=seed
        )
        write_night(SyntheticNight(params), folder)
    return folder


def evaluate_night(folder: Path, mode: str, work: Path, model: Path | None = None) -> NightFigures:
    """Replay the night with the default detector and `tracker.mode` (and `model` as the
    classifier, whose embeddings the time-lapse tracker links by); the figures."""
    from edge.config import parse_config
    from edge.evaluation.ground_truth import load_ground_truth
    from edge.evaluation.run import evaluate_frames, isolated_config

    truth = load_ground_truth(folder, "synthetic")
    data = work / f"{folder.name}-{mode}{'-model' if model else ''}"
    classifier = f"{{model: {model}, num_threads: 2}}" if model else "{enabled: false}"
    text = (
        f"data_dir: {data}\nsource: {{kind: folder, path: {folder}}}\n"
        f"classifier: {classifier}\ntracker: {{mode: {mode}}}\nstorage: {{save_crops: false}}\n"
    )
    cfg = isolated_config(parse_config(text, "timelapse-bench.yaml"), data)
    report, result = evaluate_frames(cfg, truth)
    tracking = report.tracking
    if tracking is None:
        raise SystemExit(f"{folder}: the evaluation has no tracking figures")
    wrong = total = 0
    for frame in truth.frames:
        seen = len(result.track_boxes.get(frame.index, ()))
        wrong += abs(seen - len(frame.objects))
        total += len(frame.objects)
    return NightFigures(
        true_individuals=tracking.true_count,
        counted=tracking.counted,
        extra=tracking.extra_tracks,
        merged=tracking.missed,
        per_snapshot_error=wrong / max(total, 1),
        snapshots=len(truth.frames),
        boxes=total,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--spacing", type=float, nargs="+", default=[60.0, 600.0], help="seconds between snapshots"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--insects", type=int, default=40, help="insects visiting over the night")
    parser.add_argument("--hours", type=float, default=4.0, help="length of the night")
    parser.add_argument("--modes", nargs="+", default=["timelapse", "video"], choices=["timelapse", "video"])
    parser.add_argument("--out", help="keep nights and databases here (default: a temporary folder)")
    parser.add_argument(
        "--model",
        help="a bundle trained on the synthetic species (e.g. the demo's, trapcam-data/demo/bundle): the "
        "classifier runs and the time-lapse tracker links by its embeddings (default: no classifier, "
        "colour histograms)",
    )
    args = parser.parse_args(argv)
    # the video rows' warning ("frames are 600 s apart ... set tracker.mode: timelapse") is the point
    # of those rows; the table says it with its zero
    logging.getLogger("trapcam").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="trapcam-timelapse-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        print(
            f"synthetic sheet nights, {args.hours:g} h, {args.insects} insect visits, 1280x720, "
            f"behaviour in {STEP_S:g} s steps; default detector; classifier {args.model or 'none'}; "
            "individual count error = "
            "(counted - true) / true; per-snapshot error = sum |seen - true| / sum true"
        )
        print(
            f"{'spacing':>8s} {'seed':>4s} {'mode':>9s} {'snaps':>5s} {'true':>5s} {'counted':>7s} "
            f"{'twice':>5s} {'merged':>6s} "
            f"{'count err':>9s} {'snapshot err':>12s}"
        )
        for spacing in args.spacing:
            for mode in args.modes:
                totals = [0, 0, 0, 0]
                for seed in args.seeds:
                    folder = night_folder(out, spacing, seed, args.insects, args.hours)
                    f = evaluate_night(folder, mode, out, Path(args.model) if args.model else None)
                    totals[0] += f.true_individuals
                    totals[1] += f.counted
                    totals[2] += f.extra
                    totals[3] += f.merged
                    print(
                        f"{spacing:7g}s {seed:4d} {mode:>9s} {f.snapshots:5d} {f.true_individuals:5d} "
                        f"{f.counted:7d} {f.extra:5d} {f.merged:6d} {f.count_error:+9.1%} "
                        f"{f.per_snapshot_error:12.1%}",
                        flush=True,
                    )
                error = (totals[1] - totals[0]) / max(totals[0], 1)
                print(
                    f"{spacing:7g}s  all {mode:>9s}       {totals[0]:5d} {totals[1]:7d} {totals[2]:5d} "
                    f"{totals[3]:6d} {error:+9.1%}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
