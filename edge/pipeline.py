"""The device loop: frames -> detections -> crops -> classes -> tracks -> SQLite.

Threads: the capture thread decodes frames into a bounded queue; this loop detects,
crops, classifies and tracks; the database writer thread stores rows and crop JPEGs in
batched transactions. Counts come from tracks, never from frames.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import platform
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from edge import __version__
from edge.classify.classifier import Classifier
from edge.classify.taxonomy import Taxonomy, lineage_of
from edge.classify.types import BACKGROUND, Classification, count_key, names_a_taxon
from edge.config import TrackerConfig, TrapConfig, timelapse_advice
from edge.detect.base import Box, Detection
from edge.detect.crop import crop_batch
from edge.detect.factory import make_detector
from edge.detect.mask import check_mask
from edge.detect.static_screen import SCREEN_TEXTURE_MAX, StaticScreenDetector
from edge.errors import SourceError, StorageError
from edge.frames import Frame
from edge.intervals import counts_json, crop_lineage, level_counts
from edge.operations import FieldOps
from edge.proc import process_age_s
from edge.restart import carried_tracks, describe, forget, processed_before, supersede
from edge.retention import make_room_to_open
from edge.sheet import CarriedBackground, LampOnSheet
from edge.sources.base import FrameSource, ResumableSource
from edge.sources.capture import CaptureThread
from edge.sources.factory import make_source
from edge.store.crops import scaled_to_width
from edge.store.db import Database, DetectionRow, RunInfo, TrackRow
from edge.store.reserve import Reserve
from edge.track.appearance import appearance_descriptor
from edge.track.resume import ResumeState
from edge.track.tracker import Tracker, TrackInput, TrackState
from edge.watchdog import Notifier

log = logging.getLogger("trapcam.loop")

# Crops are cut at this size for appearance and storage when no classifier sets the size.
DEFAULT_CROP_SIZE = 128
# An open track's row (last box, hits, votes, resume state) is written again once it moved by this
# share of its box's diagonal, and at least every RESUME_SAVE_EVERY_S of frame time: a killed run
# leaves each insect's place close enough for the next run to continue its track (a sitting moth
# costs one write per interval, not one per frame).
RESUME_SAVE_MOVED = 0.1
RESUME_SAVE_EVERY_S = 10.0
# While the disk is full, a counted insect whose box stays within this share of its diagonal of its
# last stored detection is sitting: its detection rows are thinned (see Pipeline._thinned).
SITTER_MOVED = 0.25
# How long a stop waits for a database writer that is failing (a full disk) before it gives up and
# names what was not written: systemd's TimeoutStopSec (60 s) would SIGKILL it otherwise.
STUCK_WRITER_WAIT_S = 3.0


@dataclass
class RunResult:
    """What a run did, for the CLI's summary and for tests."""

    run_id: int
    frames: int = 0
    dropped: int = 0
    corrupt: int = 0
    detections: int = 0
    # Finished, confirmed tracks by id (a revived track replaces its earlier state, never adds).
    finished_tracks: dict[int, TrackState] = field(default_factory=dict)
    not_insects: int = 0  # finished tracks the classifier voted a "not insect" label (not counted)
    partial_tracks: int = 0  # finished tracks only ever seen as a nameless sliver at the border (not counted)
    noise_tracks: int = 0  # tracks discarded before they confirmed (fewer than confirm_hits detections)
    longest_gap_s: float = 0.0  # the longest time between two processed frames
    exit_reason: str = "completed"
    first_frame_s: float | None = None  # from run()
    first_frame_process_s: float | None = None  # from the process's start (imports, model load included)
    elapsed_s: float = 0.0
    # Per frame: [(track_id, box)] for evaluation against ground truth.
    track_boxes: dict[int, list[tuple[int, Any]]] = field(default_factory=dict)
    # Per processed frame (also frames without detections): [(box, classification, track_id)] for
    # every detection, for detection and classification scores (`trapcam evaluate`).
    frame_detections: dict[int, list[tuple[Box, Classification | None, int]]] = field(default_factory=dict)
    inactive_frames: int = 0  # frames outside the schedule's active windows (not processed)
    skipped_frames: int = 0  # replay frames an earlier run already processed (not processed again)
    carried_tracks: int = 0  # tracks the previous run left open, handed to this run's tracker
    continued_tracks: int = 0  # of those, seen again: the same insect, still one count
    operations: dict[str, Any] = field(default_factory=dict)  # FieldOps.status() at the end

    @property
    def confirmed_tracks(self) -> list[TrackState]:
        return list(self.finished_tracks.values())

    def why_nothing_counted(self, tracker: TrackerConfig) -> str | None:
        """Why a run that found insects counted none (a silent zero is worse than no trap); else None."""
        if self.finished_tracks or not self.detections or not self.noise_tracks:
            return None
        settings = tracker.effective()
        what = f"{self.noise_tracks:,} track(s) discarded before they confirmed"
        if settings.mode == "video" and self.longest_gap_s > (settings.max_gap_s or 0.0):
            return (
                f"{what}: frames are up to {self.longest_gap_s:,.0f} s apart, longer than tracker.max_gap_s "
                f"({settings.max_gap_s:g} s), so every insect was a one-frame track; for snapshots set "
                "tracker.mode: timelapse"
            )
        return (
            f"{what}: each had fewer than tracker.confirm_hits ({settings.confirm_hits}) detections "
            "(insects that never stayed; or snapshots far apart: tracker.mode: timelapse)"
        )

    def counts(self) -> dict[str, int]:
        """Finished, confirmed tracks per taxon, as the exports count them: "unsure" where the vote
        abstained or named no taxon (a model's `background` class; see `named_background`),
        "unknown" where the open set found the insect unlike every taxon of the model."""
        out: dict[str, int] = {}
        for track in self.finished_tracks.values():
            key = count_key(track.label)
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def named_background(self) -> int:
        """Of the unsure in `counts`, the tracks the model called `background` (what it said)."""
        return sum(1 for track in self.finished_tracks.values() if track.label == BACKGROUND)


def _shift_in_diagonals(before: Box, after: Box) -> float:
    """How far a box's centre moved, in diagonals of the earlier box (a size-free 'has it moved')."""
    (ax, ay), (bx, by) = before.center, after.center
    return math.hypot(bx - ax, by - ay) / math.hypot(before.width, before.height)


@dataclass
class _Carried:
    """A track an earlier run left open (edge/restart.py), as this run sees it."""

    seen: bool  # seen again in this run: this run's track from then on
    counted: bool  # an earlier run counted it in its summaries already
    revision: int  # the revision of the last MQTT message published for it


class _Timer:
    """Rolling timings for the periodic stats log (bounded memory)."""

    def __init__(self, size: int = 512) -> None:
        self.samples: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def mean_ms(self) -> float:
        return 1000.0 * float(np.mean(self.samples)) if self.samples else 0.0


def is_partial(track: TrackState, sliver_max_px: float = math.inf) -> bool:
    """A sliver, not a count: every detection of the track was cut by the frame's border, the
    model could not name it (no classifier, no level above its threshold, or a third-party model's
    `background`), and it stayed small (longest side of its box at most `sliver_max_px`).

    A moth mostly outside the frame shows a wing edge or legs; counted, each such sliver adds an
    insect that the frame never showed (real light-trap frames: legs and wing tips at the border
    became tracks). A track that shows its whole body once, or that the model names, is an insect:
    an insect that walks in from the border is one count, and a half-visible moth the model knows
    is counted too. So is a large one it does not know: on a real time-lapse snapshot five insects
    cut by the border, 97-234 px across and unknown to the iNaturalist model, were set aside as
    slivers before the size limit (`detector.sliver_limit_px`).
    """
    sized = track.best_box or track.box
    small = max(sized.width, sized.height, track.box.width, track.box.height) <= sliver_max_px
    return track.hits > 0 and track.edge_hits >= track.hits and not names_a_taxon(track.label) and small


class Pipeline:
    """Wires source, detector, cropper, classifier, tracker and database for one run."""

    def __init__(
        self,
        cfg: TrapConfig,
        source: FrameSource | None = None,
        record_tracks: bool = False,
        notifier: Notifier | None = None,
        ops_options: Mapping[str, Any] | None = None,
        from_start: bool = False,
    ) -> None:
        """ops_options: extra FieldOps arguments at the hardware boundary (probes, free_bytes, ...).

        from_start: a replay re-processes every frame into a new run that supersedes the earlier
        runs of the same source (edge/restart.py); otherwise it resumes after their last frame.
        """
        self.cfg = cfg
        self.from_start = from_start
        self.ops_options = dict(ops_options or {})
        self.notifier = notifier or Notifier()
        self.ops: FieldOps | None = None
        self.source = source or make_source(cfg.source)
        self.detector = make_detector(cfg.detector)
        self.classifier: Classifier | None = (
            Classifier.from_config(cfg.classifier, data_dir=cfg.data_dir) if cfg.classifier.enabled else None
        )
        taxonomy: Taxonomy | None = self.classifier.bundle.taxonomy if self.classifier else None
        self.taxonomy = taxonomy
        # a track voted to one of these is no insect: the config's (a third-party model's
        # `background`) and the one the bundle declares (trained from crops labelled not_insect)
        self.not_insect_labels = frozenset(cfg.classifier.not_insect_labels) | frozenset(
            self.classifier.not_insect_labels if self.classifier else ()
        )
        self.crop_size = self.classifier.input_size[0] if self.classifier else DEFAULT_CROP_SIZE
        # a full disk must not keep the database from opening (edge/store/reserve.py)
        reserve = self.reserve = Reserve(cfg.data_dir, cfg.storage.reserve_mb)
        make_room_to_open(cfg.data_dir, cfg.crops_path, reserve, self.ops_options.get("free_bytes"))
        self.db = Database.from_config(cfg, reserve=reserve)  # every storage setting, not a hand-picked few
        next_track_id, self._next_detection_id = self.db.next_ids()
        self.tracker = Tracker(cfg.tracker, taxonomy=taxonomy, first_track_id=next_track_id)
        self._spacing_said = False
        self._scene_said = False
        self._frame_insects = 0
        if self.tracker.timelapse and not (self.classifier is not None and self.classifier.has_embedding):
            log.warning(
                "tracker.mode timelapse: %s, so insects are linked across snapshots by colour histograms "
                "(a bundle from `trapcam convert` carries the features that tell look-alikes apart)",
                "no classifier runs"
                if self.classifier is None
                else f"the model {self.classifier.bundle.model_path.name} gives no embedding output here",
            )
        self.record_tracks = record_tracks
        self.stop_event = threading.Event()
        # Per track: (time of the last saved crop, best score saved) - limits crops on disk.
        self._crop_memory: dict[int, tuple[datetime, float]] = {}
        # Tracks carried over from earlier runs (edge/restart.py), until this run finishes them.
        self._carried: dict[int, _Carried] = {}
        self._saved_open: dict[int, tuple[datetime, Box]] = {}  # open track -> (when, box) last written
        self._row_memory: dict[int, tuple[datetime, Box]] = {}  # counted track -> its last detection row

    # ------------------------------------------------------------ run

    def run(self, max_frames: int | None = None) -> RunResult:
        started = time.monotonic()
        run_info = self._run_info()
        try:
            run_id = self.db.start_run(run_info)
        except StorageError:  # a full disk with nothing left to free: the error says so, nothing more
            with contextlib.suppress(StorageError):
                self.db.close(timeout=STUCK_WRITER_WAIT_S)
            raise
        result = RunResult(run_id=run_id)
        detect_t, classify_t, frame_t = _Timer(), _Timer(), _Timer()
        try:
            ops = self.ops = FieldOps(
                self.cfg,
                self.db,
                run_id,
                model_sha256=run_info.model_sha256,
                model_name=run_info.model_name,
                taxa=self._taxa(),
                open_set=self.classifier is not None and self.classifier.has_open_set,
                extra_flags=self.classifier.backend_flags if self.classifier else (),
                notifier=self.notifier,
                **self.ops_options,
            )
            advice = timelapse_advice(self.cfg)
            if advice:  # said at start, not after the first long gap (a snapshot camera's first hour)
                self._spacing_said = True
                ops.extra_flags.append("frames-too-far-apart")
                log.warning(advice)
            self._take_over(run_id, result)
            ops.make_room(datetime.now(timezone.utc))  # before the first frame, not after the first timer
        except BaseException as exc:
            self.db.end_run(run_id, f"error: {type(exc).__name__}")
            self.db.close()
            self.source.close()
            raise

        lamp_on = (
            LampOnSheet(self.cfg, ops.schedule) if self.cfg.detector.sheet_reference == "lamp_on" else None
        )
        sheet_pending = True
        static = self.detector if isinstance(self.detector, StaticScreenDetector) else None
        carry = CarriedBackground(self.cfg, self.source.name) if static is not None else None

        def detect(frame: Frame) -> tuple[Frame, list[Detection] | None]:
            """Runs in the capture thread: detecting the next frame overlaps classifying this one.

            Outside the schedule's windows the frame is not looked at (None): no effort, no count.
            """
            if not ops.schedule.is_active(frame.timestamp):
                return frame, None
            ops.view.observe(frame.image, frame.timestamp)  # still seeing the sheet? (health flags)
            nonlocal sheet_pending
            if sheet_pending:
                sheet_pending = False  # the run's first active frame decides, once
                sheet = lamp_on.for_first_frame(frame.image, frame.timestamp) if lamp_on else None
                if sheet is not None and static is not None:
                    static.use_sheet(sheet)
                elif static is not None and static.sheet is None and carry is not None:
                    self._continue_background(static, carry, frame)
            t0 = time.perf_counter()
            detections = self.detector.detect(frame.image)
            detect_t.add(time.perf_counter() - t0)
            self._watch_rebuilds(ops, frame.timestamp)
            if static is not None:
                self._check_scene(static, ops)
                if carry is not None:
                    self._keep_background(static, carry, frame.timestamp)
            return frame, detections

        capture = CaptureThread(self.source, self.cfg.source, prepare=detect)
        capture.start()
        self.notifier.ready(f"running {self.source.name}")
        last_stats, frames_at_last_stats = time.monotonic(), 0
        last_tick = -float("inf")
        last_frame_time: datetime | None = None
        checked_size: tuple[int, int] | None = None
        try:
            while not self.stop_event.is_set():
                if time.monotonic() - last_tick >= 1.0:
                    last_tick = time.monotonic()
                    ops.tick(
                        last_tick, capture.queue_depth, capture.dropped_frames, capture.state, result.frames
                    )
                if max_frames is not None and result.frames >= max_frames:
                    result.exit_reason = "max-frames"
                    break
                # let the last frame go before waiting for the next one: held across the wait it
                # would be one more frame in memory while the capture thread decodes (24 MiB at 4K)
                item = frame = detections = None
                item = capture.get(timeout=0.5)
                if item is None:
                    if capture.done:
                        result.exit_reason = "end-of-source"
                        break
                    if capture.stalled():
                        result.exit_reason = "stalled"
                        raise SourceError(
                            f"no frame from {self.source.name} for {self.cfg.source.stall_timeout_s:.0f} s "
                            f"(camera state: {capture.state}, last error: {capture.last_error}); "
                            "exiting so the service manager restarts trapcam"
                        )
                    continue
                if result.first_frame_s is None:
                    result.first_frame_s = time.monotonic() - started
                    result.first_frame_process_s = process_age_s()
                frame, detections = item
                size = (frame.image.shape[1], frame.image.shape[0])
                if size != checked_size:  # a mask for another camera must stop the run, not go quiet
                    check_mask(self.cfg.detector.mask, *size)
                    checked_size = size
                if not ops.is_active(frame.timestamp) or detections is None:
                    ops.on_idle_frame()
                    result.inactive_frames += 1
                    continue
                t0 = time.perf_counter()
                self._process(frame, detections, result, classify_t)
                frame_t.add(time.perf_counter() - t0)
                if last_frame_time is not None:
                    self._check_spacing((frame.timestamp - last_frame_time).total_seconds(), result, ops)
                last_frame_time = frame.timestamp
                result.frames += 1
                ops.on_frame(
                    frame.timestamp,
                    capture.dropped_frames,
                    len(detections),
                    time.monotonic(),
                    insects=self._frame_insects,
                )
                window_s = time.monotonic() - last_stats
                if window_s >= self.cfg.logging.stats_interval_s:
                    fps = (result.frames - frames_at_last_stats) / window_s
                    self._log_stats(result, capture, fps, detect_t, classify_t, frame_t)
                    frames_at_last_stats, last_stats = result.frames, time.monotonic()
                    self.db.update_run(run_id, **self._counters(result, capture))
            if self.stop_event.is_set():
                result.exit_reason = "stopped"
        except KeyboardInterrupt:
            result.exit_reason = "interrupted"
        except BaseException as exc:
            if result.exit_reason not in ("stalled",):
                result.exit_reason = f"error: {type(exc).__name__}"
            raise
        finally:
            self.notifier.stopping(result.exit_reason)
            capture.stop()
            if carry is not None and static is not None and last_frame_time is not None:
                self._keep_background(static, carry, last_frame_time, final=True)
            end_time = last_frame_time or datetime.now(timezone.utc)
            # what the next run needs to continue the tracks this stop closes (counted here)
            held = [*self.tracker.active_tracks(), *self.tracker.lost_tracks()]
            resume = {t.track_id: self.tracker.resume_state(t.track_id, counted=True) for t in held}
            for track in self.tracker.finish(end_time):
                self._store_track(run_id, track, result, resume=resume.get(track.track_id))
            result.dropped, result.corrupt = capture.dropped_frames, capture.corrupt_frames
            result.skipped_frames = getattr(self.source, "skipped_frames", 0)
            try:
                ops.finish(
                    end_time, capture.queue_depth, capture.dropped_frames, capture.state, result.frames
                )
            except Exception as exc:  # the run's own rows below matter more than a last summary
                log.error("finishing summaries and health failed: %s", exc)
            self.db.update_run(run_id, **self._counters(result, capture))
            self.db.end_run(run_id, result.exit_reason)
            # a writer stuck on a full disk gets seconds, not minutes: systemd's stop timeout is 60 s
            stuck = self.db.failing
            self.db.flush(timeout=STUCK_WRITER_WAIT_S if stuck else 30.0)
            try:
                ops.leave_room()  # a stop on a full disk leaves the reserve whole for the next start
            except StorageError as exc:
                log.error("making room at the stop failed: %s", exc)
            ops.close()  # the publisher sends what the last flush committed, then stops
            result.operations = ops.status() if not self.db.closed else {}
            self.source.close()
            self.db.close(timeout=STUCK_WRITER_WAIT_S if stuck or self.db.failing else 60.0)
            result.elapsed_s = time.monotonic() - started
        return result

    def stop(self) -> None:
        """Ask the loop to finish the current frame and shut down cleanly (signal handlers call this).

        Also while the loop waits for room in a write queue that a full disk keeps full: it stops
        waiting, and the stop ends within seconds, naming what could not be written.
        """
        self.stop_event.set()
        self.db.stop_waiting()

    def _take_over(self, run_id: int, result: RunResult) -> None:
        """Pick up where the runs of this source before this one stopped (edge/restart.py).

        A replay resumes after the last frame they stored (or, with from_start, supersedes them);
        the tracks the previous run left open go back to the tracker, so an insect that sat
        through the restart stays one track.
        """
        name = self.source.name
        if self.from_start:
            older = supersede(self.db, run_id, name)
            if older and self.ops is not None:  # a consumer drops those runs' tracks and summaries
                self.ops.on_event("runs-superseded", runs=older, by_run=run_id, source=name)
            if older:
                log.warning(
                    "%s: re-processing from the start; run(s) %s are superseded (their rows stay, marked, "
                    "and the exports count this run instead)",
                    name,
                    ", ".join(map(str, older)),
                )
            return
        if not self.source.live and isinstance(self.source, ResumableSource):
            processed = processed_before(self.db, run_id, name)
            if processed is not None:
                self.source.skip_through(processed.last_utc)
                log.warning(describe(processed, name))
        carried = carried_tracks(self.db, run_id, name)
        if carried:
            self.tracker.carry_over(carried)
            self._carried = {
                state.track_id: _Carried(seen=False, counted=resume.counted, revision=resume.revision)
                for state, resume in carried
            }
            result.carried_tracks = len(carried)
            log.info(
                "continuing %d track(s) the previous run left open (an insect still there stays one count)",
                len(carried),
            )

    def _continue_background(
        self, static: StaticScreenDetector, carry: CarriedBackground, frame: Frame
    ) -> None:
        """Start the detector from the background an earlier run left tonight, if it still fits.

        Not for `--from-start`: a re-processing starts as the first run did, so it gives what the
        first run would have given.
        """
        if self.from_start:
            return
        background = carry.load(frame.timestamp)
        if background is None:
            return
        refused = static.continue_from(background, frame.image)
        if refused is None:
            log.info("detector: continuing from the background the previous run kept (%s)", carry.image_path)
        else:
            log.warning(
                "detector: not continuing from the previous run's background %s: %s; building it "
                "from this first frame (an insect sitting still in it may count again when it moves)",
                carry.image_path,
                refused,
            )

    def _check_scene(self, static: StaticScreenDetector, ops: FieldOps) -> None:
        """Once: a static_screen detector looking at a natural scene says so, in the log and in health."""
        if self._scene_said or static.texture is None:
            return
        self._scene_said = True
        if static.texture > SCREEN_TEXTURE_MAX:
            ops.extra_flags.append("scene-not-a-screen")
            log.warning(
                "detector.kind static_screen: this scene is textured like a natural background (median "
                "local contrast %.1f; a lit sheet or a board is below %.0f): every leaf or petal that moves "
                "will be taken for an insect. For flowers, grass or other natural scenes set "
                "detector.kind: motion",
                static.texture,
                SCREEN_TEXTURE_MAX,
            )

    def _keep_background(
        self, static: StaticScreenDetector, carry: CarriedBackground, moment: datetime, final: bool = False
    ) -> None:
        """Save the detector's background for a restart when it changed, drifted long enough, or at a stop.

        Only a background of its own (no sheet reference): with one, a restart reads that again. Only
        while the disk reserve is whole and the disk not full: like crops, it waits until retention has
        made room (the space goes to the rows and the reserve first).
        """
        if static.background is None or static.sheet is not None:
            return
        if self.db.disk_full.is_set() or self.reserve.held < self.reserve.size:
            return
        if final or carry.due(static.background_version, moment):
            carry.save(static.background, static.background_version, moment)

    # ------------------------------------------------------------ one frame

    def _process(
        self, frame: Frame, detections: list[Detection], result: RunResult, classify_t: _Timer
    ) -> None:
        crops = crop_batch(frame.image, [d.box for d in detections], self.cfg.crop, self.crop_size)
        classifications: list[Classification | None] = [None] * len(detections)
        if self.classifier is not None and len(detections):
            t1 = time.perf_counter()
            classifications = list(self.classifier.classify(crops))
            per_crop = (time.perf_counter() - t1) / len(detections)
            classify_t.add(per_crop)
            if self.ops is not None:
                self.ops.on_inference(1000.0 * per_crop)
        inputs = []
        for i, detection in enumerate(detections):
            inputs.append(
                TrackInput(
                    detection=detection,
                    detection_id=self._next_detection_id,
                    classification=classifications[i],
                    appearance=appearance_descriptor(crops[i]),
                    embedding=classifications[i].embedding if classifications[i] is not None else None,
                )
            )
            self._next_detection_id += 1
        update = self.tracker.update(frame.timestamp, inputs)
        counted = {t.track_id for t in update.active if t.status == "confirmed"}
        for i, (item, track_id) in enumerate(zip(inputs, update.assignments, strict=True)):
            if track_id in counted and self._thinned(track_id, frame.timestamp, item.detection.box):
                continue
            classification = item.classification
            crop = crops[i] if self._keep_crop(track_id, frame.timestamp, classification) else None
            row = DetectionRow.from_parts(
                item.detection_id, result.run_id, track_id, frame, item.detection, item.classification
            )
            self.db.add_detection(row, crop)
        for track in update.confirmed:
            self._store_track(result.run_id, track, result, finished=False)
        for track in update.revived:  # re-identified or carried over: open again, not a finished count
            result.finished_tracks.pop(track.track_id, None)
            carried = self._carried.get(track.track_id)
            if carried is not None and not carried.seen:
                carried.seen = True
                result.continued_tracks += 1
            self._store_track(result.run_id, track, result, finished=False)
        for track in update.ended:
            self._store_track(result.run_id, track, result)
        self._save_open_tracks(result.run_id, frame.timestamp, update.active, result)
        result.detections += len(detections)
        self._frame_insects = len(set(update.assignments))  # one per track: pieces of an insect once
        if self.tracker.timelapse:
            self._store_snapshot(result.run_id, frame, inputs, update.assignments)
        if self.record_tracks:  # one box per track and frame: fragments widen their track's box
            boxes: dict[int, Box] = {}
            for item, track_id in zip(inputs, update.assignments, strict=True):
                b, seen = item.detection.box, boxes.get(track_id)
                if seen is not None:
                    b = Box(min(b.x0, seen.x0), min(b.y0, seen.y0), max(b.x1, seen.x1), max(b.y1, seen.y1))
                boxes[track_id] = b
            result.track_boxes[frame.index] = list(boxes.items())
            result.frame_detections[frame.index] = [
                (item.detection.box, item.classification, track_id)
                for item, track_id in zip(inputs, update.assignments, strict=True)
            ]

    def _save_open_tracks(
        self, run_id: int, now: datetime, active: Sequence[TrackState], result: RunResult
    ) -> None:
        """Write again the open, counted tracks that moved or were not written for a while."""
        waiting = {track_id for track_id, carried in self._carried.items() if not carried.seen}
        still_open = set()
        for track in active:
            if track.status != "confirmed" or track.track_id in waiting:
                continue
            still_open.add(track.track_id)
            saved = self._saved_open.get(track.track_id)
            if saved is not None:
                when, box = saved
                moved = _shift_in_diagonals(box, track.box) > RESUME_SAVE_MOVED
                if not moved and (now - when).total_seconds() < RESUME_SAVE_EVERY_S:
                    continue
                self._store_track(run_id, track, result, finished=False)
            self._saved_open[track.track_id] = (now, track.box)  # new ones were written on confirming
        for track_id in set(self._saved_open) - still_open:
            del self._saved_open[track_id]

    def _store_snapshot(
        self, run_id: int, frame: Frame, inputs: Sequence[TrackInput], assignments: Sequence[int]
    ) -> None:
        """One `snapshots` row: the insects this frame showed, by their crop's answer and size class.

        An insect is one track: of a track's pieces in this frame the largest speaks for it, counted
        by its crop's answer as a finished track is by its vote (edge.intervals.crop_lineage).
        """
        main: dict[int, TrackInput] = {}
        for item, track_id in zip(inputs, assignments, strict=True):
            seen = main.get(track_id)
            if seen is None or item.detection.box.area > seen.detection.box.area:
                main[track_id] = item
        insects = []
        for item in main.values():
            box = item.detection.box
            size_class = self.cfg.size.measure(float(max(box.width, box.height)))[1]
            insects.append((crop_lineage(item.classification, self.taxonomy), size_class))
        text = counts_json(level_counts(insects))
        image = None
        if self.cfg.storage.save_snapshots and self.db.crops is not None:
            if not self.db.disk_full.is_set():
                image = scaled_to_width(frame.image, self.cfg.storage.snapshot_width)
            elif self.ops is not None:
                self.ops.counters.crops_paused += 1
        self.db.add_snapshot(run_id, frame.timestamp, frame.index, len(main), text, image)

    def _watch_rebuilds(self, ops: FieldOps, moment: datetime) -> None:
        """Say it, and flag it in health, while the detector keeps rebuilding its background."""
        detector = self.detector
        changed = ops.rebuilds.observe(
            getattr(detector, "reinits", 0), moment, moves=getattr(detector, "view_moves", 0)
        )
        if changed:
            log.error(
                "detector: the background was rebuilt (or moved with the view) %d times within %.0f min "
                "of frames (a loose or swinging camera, or light that keeps jumping): nothing is detected "
                "while it rebuilds; fix the mount or the light",
                ops.rebuilds.recent,
                ops.rebuilds.window_s / 60.0,
            )
        elif changed is False:
            log.warning(
                "detector: the background holds again (%d rebuilds, %d moves in all)",
                ops.rebuilds.total,
                ops.rebuilds.moves,
            )

    def _check_spacing(self, gap_s: float, result: RunResult, ops: FieldOps) -> None:
        """Say it once, and flag it in health, when frames come further apart than the tracker links.

        The video tracker loses a track unseen for tracker.max_gap_s: with snapshots further apart
        every insect is a one-frame track and nothing is ever counted.
        """
        result.longest_gap_s = max(result.longest_gap_s, gap_s)
        settings = self.tracker.cfg
        if self.tracker.timelapse or gap_s <= (settings.max_gap_s or 0.0) or self._spacing_said:
            return
        self._spacing_said = True
        ops.extra_flags.append("frames-too-far-apart")
        log.warning(
            "frames are %.0f s apart, longer than tracker.max_gap_s (%g s): the video tracker loses every "
            "insect between such frames, and one that such frames show once is never counted; for a "
            "time-lapse camera set tracker.mode: timelapse",
            gap_s,
            settings.max_gap_s,
        )

    def _thinned(self, track_id: int, ts: datetime, box: Box) -> bool:
        """While the disk is full: leave out the detection rows of a counted insect that sits still.

        The second step of a full disk's degradation, after crops: a confirmed track keeps one row
        per `crop_every_s` while its box stays within a quarter of its diagonal of the last row
        stored; a moving insect keeps every row. Tracks and summaries are never thinned.
        """
        seen = self._row_memory.get(track_id)
        if self.db.disk_full.is_set() and seen is not None:
            when, last = seen
            still = _shift_in_diagonals(last, box) <= SITTER_MOVED
            if still and (ts - when).total_seconds() < self.cfg.storage.crop_every_s:
                if self.ops is not None:
                    self.ops.counters.rows_thinned += 1
                return True
        self._row_memory[track_id] = (ts, box)
        return False

    def _keep_crop(self, track_id: int, ts: datetime, classification: Classification | None) -> bool:
        """Save a track's first crop, any better-scored one, and one per `crop_every_s` otherwise;
        none while the disk is full (rows first: they are the counts)."""
        if not self.cfg.storage.save_crops:
            return False
        if self.db.disk_full.is_set():
            if self.ops is not None:
                self.ops.counters.crops_paused += 1
            return False
        score = classification.score if classification is not None else 0.0
        seen = self._crop_memory.get(track_id)
        if seen is None or score > seen[1] or (ts - seen[0]).total_seconds() >= self.cfg.storage.crop_every_s:
            self._crop_memory[track_id] = (ts, max(score, seen[1] if seen else 0.0))
            return True
        return False

    def _store_track(
        self,
        run_id: int,
        track: TrackState,
        result: RunResult,
        finished: bool = True,
        resume: ResumeState | None = None,
    ) -> None:
        """Write the track's row (open: with its resume state; finished: counted once).

        resume: for a finished track, the state a stop that closed it leaves for the next run;
        an open track's is taken from the tracker. A track carried over from an earlier run and
        never seen again keeps that run's row; one seen again is this run's from then on, counted
        in this run's summaries only if no earlier run counted it, and published as the next
        revision of its MQTT message (a killed run's open tracks went out at the restart's recovery).
        """
        carried = self._carried.get(track.track_id)
        if not finished:
            resume = self.tracker.resume_state(track.track_id)
            if resume is not None and carried is not None:
                resume = dataclasses.replace(resume, counted=carried.counted, revision=carried.revision)
        elif carried is not None:
            del self._carried[track.track_id]
            if carried.seen and resume is not None:  # closed by this stop after its message below
                resume = dataclasses.replace(resume, revision=carried.revision + 1)
        reason = "noise" if track.status == "discarded" else None
        if reason == "noise" and finished:
            result.noise_tracks += 1
        if track.status == "ended" and track.label in self.not_insect_labels:
            # the model says this was no insect: keep the record, do not count it
            track, reason = dataclasses.replace(track, status="discarded"), "not_insect"
            result.not_insects += 1
        elif track.status == "ended" and is_partial(track, self.cfg.detector.sliver_limit_px):
            track, reason = dataclasses.replace(track, status="discarded"), "partial"
            result.partial_tracks += 1
        sized = track.best_box or track.box  # the best detection's box; the last one if none was kept
        length_px = float(max(sized.width, sized.height))
        length_mm, size_class = self.cfg.size.measure(length_px)
        row = TrackRow(
            track_id=track.track_id,
            run_id=run_id,
            status=track.status,
            first_utc=track.first_seen,
            last_utc=track.last_seen,
            hits=track.hits,
            level=track.level,
            label=track.label,
            score=track.score if track.label is not None else None,  # no answer: no confidence
            votes_json=json.dumps(track.votes) if track.votes else None,
            best_detection_id=track.best_detection_id,
            x0=track.box.x0,
            y0=track.box.y0,
            x1=track.box.x1,
            y1=track.box.y1,
            moved_px=track.moved_px,
            lineage_json=self.lineage(track),
            edge_hits=track.edge_hits,
            discard_reason=reason,
            length_px=length_px,
            length_mm=None if length_mm is None else round(length_mm, 2),
            size_class=size_class,
            resume_json=resume.to_json() if resume is not None else None,
        )
        if carried is not None and not carried.seen:  # the insect had gone: the row stays as it was
            if finished and resume is None:  # ended for good here (a stop leaves it to the next run)
                if not carried.counted and self.ops is not None:
                    self.ops.summarizer.on_track_finished(row)  # its message went out at the restart
                forget(self.db, track.track_id)
            return
        self.db.upsert_track(row)
        if finished:
            self._crop_memory.pop(track.track_id, None)
            self._row_memory.pop(track.track_id, None)
            if track.status == "ended":
                result.finished_tracks[track.track_id] = track
            if self.ops is not None and carried is None:
                self.ops.on_track_finished(row)
            elif self.ops is not None and carried is not None:
                self.ops.on_track_continued(row, carried.counted, carried.revision + 1)

    def lineage(self, track: TrackState) -> dict[str, str] | None:
        """The track's taxon at its level and every level above it (counts per level need this)."""
        if track.level is None or track.label is None:
            return None
        return lineage_of(self.taxonomy, track.level, track.label)

    def _taxa(self) -> list[str]:
        """The finest level's labels (what 'today' counts are keyed by), for dashboards."""
        if self.classifier is None:
            return []
        return list(self.classifier.bundle.manifest.outputs[-1].labels)

    # ------------------------------------------------------------ bookkeeping

    def _run_info(self) -> RunInfo:
        describe = self.classifier.describe() if self.classifier else {}
        return RunInfo(
            device_id=self.cfg.device_id,
            started_utc=datetime.now(timezone.utc),
            software_version=__version__,
            config_json=self.cfg.stored_json(),
            model_sha256=describe.get("sha256"),
            model_name=describe.get("name"),
            source=self.source.name,
            host=platform.node(),
        )

    @staticmethod
    def _counters(result: RunResult, capture: CaptureThread) -> dict[str, int]:
        return {
            "frames_processed": result.frames,
            "frames_dropped": capture.dropped_frames,
            "frames_corrupt": capture.corrupt_frames,
            "detections": result.detections,
            "tracks_confirmed": len(result.finished_tracks),
        }

    def _log_stats(
        self,
        result: RunResult,
        capture: CaptureThread,
        fps: float,
        detect_t: _Timer,
        classify_t: _Timer,
        frame_t: _Timer,
    ) -> None:
        log.info(
            "stats",
            extra={
                "fields": {
                    "fps": fps,
                    "frames": result.frames,
                    "queue": capture.queue_depth,
                    "dropped": capture.dropped_frames,
                    "corrupt": capture.corrupt_frames,
                    "camera": capture.state,
                    "main_ms_per_frame": frame_t.mean_ms(),  # main thread: crop, classify, track, store
                    "detect_ms_per_frame": detect_t.mean_ms(),  # capture thread
                    "classify_ms_per_crop": classify_t.mean_ms(),
                    "active_tracks": len(self.tracker.active_tracks()),
                    "confirmed_total": len(result.finished_tracks),
                    "db_pending": self.db.pending(),
                }
            },
        )
