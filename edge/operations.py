"""Field operations around the counting loop: summaries, health, retention, schedule, MQTT, watchdog.

The loop (edge/pipeline.py) counts; this module makes a season of counting watchable and safe:

- every finished track becomes a `track` message in the outbox, written by the database writer in
  the same order as the track row (a crash keeps both or neither);
- frames and finished tracks feed the interval summaries (stored, and published retained);
- every `health.interval_s` a health sample is stored and published;
- every `retention.check_interval_s` old crops make room, and the WAL is checkpointed;
- the schedule says whether the trap watches now; the light follows it;
- systemd's watchdog is pinged only while frames flow (or the trap is idle by schedule).

Times: the schedule and the summaries follow the frames' own timestamps (a replayed night gives
the same summaries as the live one); health and retention run on the wall clock.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge import __version__
from edge.classify.types import UNKNOWN, UNSURE
from edge.config import TrapConfig
from edge.detect.rebuild_watch import RebuildWatch
from edge.health import HealthMonitor, LoopStats, SystemProbes, store_health
from edge.intervals import IntervalSummarizer, SummaryRow, store_summary
from edge.light import LightController
from edge.mqtt import (
    Discovery,
    Outbox,
    Publisher,
    SensorTaxa,
    discovery,
    event_message,
    health_message,
    summary_message,
    track_message,
)
from edge.retention import GB, Retention, RetentionReport
from edge.schedule import Schedule
from edge.store.db import Database
from edge.store.schema import TrackRow
from edge.view import ViewMonitor
from edge.watchdog import Notifier

log = logging.getLogger("trapcam.ops")

OUTBOX_COMPACT_INTERVAL_S = 600.0
# An interval's summary waits this long at most for its tracks to finish (time-lapse tracks are
# never lost by elapsed time, only after missed snapshots).
_MAX_SETTLE_S = 3600.0
# After a full disk: retention runs this often (wall clock) until there is room again, and crops
# resume once the free space (with the reserve written back) reaches the retention watermark or
# this much, whichever is less (a small card may never reach a watermark of 1 GB).
_FULL_CHECK_S = 5.0
_RESUME_ROOM = 256 * 1024 * 1024


@dataclass
class OpsCounters:
    """What the operations did in this run (for the run summary and tests)."""

    tracks_published: int = 0
    summaries: int = 0
    health_samples: int = 0
    retention_checks: int = 0
    crops_deleted: int = 0
    crops_paused: int = 0  # crops (and kept snapshots) not saved while the disk was full
    rows_thinned: int = 0  # detection rows of sitting insects not stored while the disk was full
    inactive_frames: int = 0
    last_health: dict[str, Any] = field(default_factory=dict)


class FieldOps:
    """Owns the summarizer, health monitor, retention, schedule, light, outbox, publisher, notifier."""

    def __init__(
        self,
        cfg: TrapConfig,
        db: Database,
        run_id: int,
        *,
        model_sha256: str | None,
        model_name: str | None,
        taxa: Sequence[str] = (),
        open_set: bool = False,
        extra_flags: Sequence[str] = (),
        notifier: Notifier | None = None,
        probes: SystemProbes | None = None,
        free_bytes: Callable[[Path], int] | None = None,
        light_pin_factory: Any | None = None,
    ) -> None:
        """probes, free_bytes, light_pin_factory: the hardware boundary (tests give fakes there).
        open_set: the classifier can answer `unknown`, so Home Assistant gets a sensor for it."""
        self.cfg = cfg
        self.db = db
        self.run_id = run_id
        self.extra_flags = list(extra_flags)
        self.counters = OpsCounters()
        self.started = datetime.now(timezone.utc)
        tracker = cfg.tracker.effective()
        delay = min(max(tracker.max_gap_s or 0.0, tracker.reid_window_s or 0.0), _MAX_SETTLE_S) + 60.0
        self.summarizer = IntervalSummarizer(cfg.summary, run_id, tz=cfg.site.timezone, close_delay_s=delay)
        self.health = HealthMonitor(cfg, model_sha256, self.started, probes=probes)
        self.view = ViewMonitor(cfg.health.view)  # fed by the capture thread (Pipeline's detect step)
        self.rebuilds = RebuildWatch()  # the detector's background rebuilds (same thread)
        self.retention = Retention(cfg.retention, db, cfg.crops_path, cfg.data_dir, free_bytes=free_bytes)
        self.schedule = Schedule(cfg.schedule, cfg.site)
        self.light = (
            LightController(cfg.schedule.light, pin_factory=light_pin_factory)
            if cfg.schedule.light is not None
            else None
        )
        self.notifier = notifier or Notifier()
        self.outbox: Outbox | None = None
        self.publisher: Publisher | None = None
        self.sensor_taxa: SensorTaxa | None = None  # with MQTT: the taxa with a Home Assistant sensor
        self._state_before_stop: tuple[str, str | None] | None = None
        self._inference_ms: deque[float] = deque(maxlen=512)
        self._last_health = -float("inf")
        self._last_compact = -float("inf")
        self._last_report: RetentionReport | None = None
        self._last_full_check = -float("inf")
        self._active: bool | None = None
        self._last_detection: datetime | None = None
        self._fps_window: deque[float] = deque(maxlen=64)  # monotonic times of recent frames
        try:
            self.db.run_sync(lambda conn: self.summarizer.seed_today(conn, datetime.now(timezone.utc)))
        except Exception as exc:  # a count shown on a dashboard must never stop the trap
            log.warning("could not read today's earlier counts: %s", exc)
        if cfg.mqtt.enabled:
            self.outbox = Outbox(db, cfg.mqtt)
            ha = cfg.mqtt.homeassistant
            self.sensor_taxa = SensorTaxa(ha.taxa, list(taxa), ha.top_taxa)
            if self.sensor_taxa.by_count:
                self._seed_sensor_taxa()
                log.info(
                    "home assistant: %d labels are too many for a sensor each: the total, and the %d taxa "
                    "counted most so far (mqtt.homeassistant.taxa lists your own)",
                    len(taxa),
                    ha.top_taxa,
                )

            outcomes = (UNSURE, UNKNOWN) if open_set else (UNSURE,)  # counted without a taxon

            def discovery_plan() -> Discovery:
                chosen = self.sensor_taxa.chosen()
                return discovery(cfg.mqtt, cfg.device_id, __version__, model_name, chosen, outcomes)

            self._publish_recovered_tracks()
            self.publisher = Publisher(cfg.mqtt, cfg.device_id, self.outbox, discovery=discovery_plan)
            self.publisher.start()

    # ------------------------------------------------------------ called by the loop

    def is_active(self, moment: datetime) -> bool:
        """Whether the trap watches at `moment` (a frame's time); switches the light on changes."""
        active = self.schedule.is_active(moment)
        if active != self._active:
            if self._active is not None:
                log.info("schedule: %s", self.schedule.describe(moment))
            if not active:
                self.summarizer.pause()
            if self.light is not None:
                self.light.set(active)
            self._active = active
        return active

    def on_frame(
        self,
        ts: datetime,
        dropped_total: int,
        detections: int,
        monotonic_now: float,
        insects: int | None = None,
    ) -> None:
        """A processed (active) frame: effort, summaries that it closed, the watchdog.

        insects: how many insects the frame showed (one per track), for `max_insects`.
        """
        self._fps_window.append(monotonic_now)
        if detections:
            self._last_detection = ts
        for row in self.summarizer.on_frame(ts, dropped_total, insects):
            self._emit_summary(row)
        for row in self.summarizer.provisional():  # stored, not published: what a kill leaves
            store_summary(self.db, row)
        self.notifier.ping()

    def on_idle_frame(self) -> None:
        """A frame outside the active windows: not counted, but the loop is alive."""
        self.counters.inactive_frames += 1
        self.notifier.ping()

    def on_inference(self, ms_per_crop: float) -> None:
        self._inference_ms.append(ms_per_crop)

    def _seed_sensor_taxa(self) -> None:
        """The labels counted so far (all runs), so the top taxa survive a restart."""

        def read(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT label, COUNT(*) FROM tracks WHERE status = 'ended' AND label IS NOT NULL "
                "GROUP BY label"
            )
            return {str(label): int(n) for label, n in rows}

        try:
            self.sensor_taxa.seed(self.db.run_sync(read))
        except Exception as exc:  # a dashboard must never stop the trap
            log.warning("could not read the labels counted so far: %s", exc)

    def _count_for_sensors(self, row: TrackRow) -> None:
        """A counted track's label may bring a taxon into the dashboard's top ones: announce it."""
        if self.sensor_taxa is not None and self.sensor_taxa.add(row.label) and self.publisher is not None:
            self.publisher.rediscover()

    def on_track_finished(self, row: TrackRow) -> None:
        """A finished, counted track: summary counts, and its message queued right after its row."""
        self.summarizer.on_track_finished(row)
        if row.status == "ended":
            self._count_for_sensors(row)
        if self.outbox is not None and row.status == "ended":
            # track_message takes the row's fields (lineage_json as a mapping or JSON text)
            self.outbox.enqueue(track_message(self.cfg.mqtt.topic_prefix, self.cfg.device_id, asdict(row)))
            self.counters.tracks_published += 1

    def on_track_continued(self, row: TrackRow, counted_before: bool, revision: int) -> None:
        """A track an earlier run left open, continued and now finished by this run: summarised here
        unless that run counted it, and published again as the next revision (same track_id)."""
        if not counted_before:
            self.summarizer.on_track_finished(row)
            if row.status == "ended":
                self._count_for_sensors(row)
        if self.outbox is not None:  # also when it is no count now: the revision says counted false
            message = track_message(self.cfg.mqtt.topic_prefix, self.cfg.device_id, asdict(row), revision)
            self.outbox.enqueue(message)
            self.counters.tracks_published += 1

    def on_event(self, event: str, **fields: Any) -> None:
        """Something a consumer must act on (runs superseded by a re-processed replay), published."""
        if self.outbox is not None:
            self.outbox.enqueue(
                event_message(self.cfg.mqtt.topic_prefix, self.cfg.device_id, event, **fields)
            )

    def tick(
        self, monotonic_now: float, queue_depth: int, dropped: int, camera_state: str, frames: int
    ) -> None:
        """Periodic work on the wall clock: health, retention, WAL checkpoint, outbox bound."""
        now = datetime.now(timezone.utc)
        full = self.db.disk_full.is_set()
        if self.retention.due(now) or (full and monotonic_now - self._last_full_check >= _FULL_CHECK_S):
            if full:
                self._last_full_check = monotonic_now
            self.make_room(now)
        self.retention.maintain(now)
        if monotonic_now - self._last_health >= self.cfg.health.interval_s:
            self._last_health = monotonic_now
            self._sample_health(now, monotonic_now, queue_depth, dropped, camera_state, frames)
        if self.outbox is not None and monotonic_now - self._last_compact >= OUTBOX_COMPACT_INTERVAL_S:
            self._last_compact = monotonic_now
            self.outbox.compact(now)

    def make_room(self, now: datetime) -> RetentionReport:
        """A retention check now; with room again after a full disk, crops resume and the reserve
        (edge/store/reserve.py) is written back."""
        reserve = self.db.reserve
        missing = 0 if reserve is None else max(0, reserve.size - reserve.held)
        report = self._last_report = self.retention.check(now, extra_bytes=missing)
        self.counters.retention_checks += 1
        self.counters.crops_deleted += report.deleted_files  # retention logs it
        room_again = min(int(self.cfg.retention.min_free_gb * GB), _RESUME_ROOM)
        if reserve is not None and not reserve.ensure(report.free_bytes, room_again):
            return report  # not even room for the reserve above the mark: still full
        if report.free_bytes - missing >= room_again:
            self.db.disk_has_room()
        return report

    def finish(self, end: datetime, queue_depth: int, dropped: int, camera_state: str, frames: int) -> None:
        """At run end: the partial summary interval and a last health sample (before the db closes)."""
        for row in self.summarizer.finish(end):
            self._emit_summary(row)
        self._sample_health(datetime.now(timezone.utc), None, queue_depth, dropped, camera_state, frames)

    def leave_room(self) -> None:
        """At a stop, after the last rows were flushed: a retention check when the disk is full or
        the reserve was given up, so the trap stops with its reserve whole (old crops make room).

        The full-disk checks come every _FULL_CHECK_S, so a run can end between the writer's
        release and the check that writes the reserve back (the stop's own rows may fill the disk
        last of all); the next start would then begin on a full disk without its margin. Deletion
        marks are queued for the writer, which writes them before it closes.
        """
        reserve = self.db.reserve
        if self.db.disk_full.is_set() or (reserve is not None and reserve.held < reserve.size):
            self.make_room(datetime.now(timezone.utc))

    def close(self) -> None:
        """Stop the publisher (before the database closes) and switch the light off."""
        if self.publisher is not None:
            self._state_before_stop = self.publisher.state, self.publisher.last_error
            self.publisher.stop()
        if self.light is not None:
            self.light.close()

    def status(self) -> dict[str, Any]:
        """Publisher (with its state before a clean stop), outbox and counters."""
        publisher = self.publisher.stats() if self.publisher else None
        if publisher is not None and self._state_before_stop is not None:
            publisher["state"], publisher["last_error"] = self._state_before_stop
        return {
            "publisher": publisher,
            "outbox": self.outbox.stats() if self.outbox else None,
            "counters": asdict(self.counters),
        }

    # ------------------------------------------------------------ internals

    def _publish_recovered_tracks(self) -> None:
        """Track messages for tracks a killed run left open and `start_run` has just ended.

        The process died before it could queue their messages; without this they would be in the
        database and the daily files but never reach the dashboard.
        """
        assert self.outbox is not None
        columns = [name for name in TrackRow.__dataclass_fields__ if name != "votes_json"]

        def read(conn: Any) -> list[tuple[Any, ...]]:
            return conn.execute(
                f"SELECT {', '.join(columns)} FROM tracks t WHERE t.status = 'ended' AND t.run_id IN "
                "(SELECT run_id FROM runs WHERE exit_reason LIKE 'interrupted (no clean shutdown%') "
                "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.kind = 'track' "
                "AND json_extract(o.payload, '$.track_id') = t.track_id) ORDER BY t.track_id"
            ).fetchall()

        rows = self.db.run_sync(read)
        for values in rows:
            track = dict(zip(columns, values, strict=True))
            self.outbox.enqueue(track_message(self.cfg.mqtt.topic_prefix, self.cfg.device_id, track))
        if rows:
            log.warning(
                "mqtt: %d track(s) ended by the restart after an unclean stop are published now", len(rows)
            )

    def _fps(self, monotonic_now: float | None) -> float:
        times = list(self._fps_window)
        if len(times) < 2:
            return 0.0
        end = times[-1] if monotonic_now is None else max(times[-1], monotonic_now)
        return (len(times) - 1) / max(end - times[0], 1e-6)

    def _sample_health(
        self,
        now: datetime,
        monotonic_now: float | None,
        queue_depth: int,
        dropped: int,
        camera_state: str,
        frames: int,
    ) -> None:
        flags = list(self.extra_flags)
        if self.db.disk_full.is_set():  # rows still go in (the reserve); crops wait for room
            flags += ["disk-full", "crops-paused"]
        if self.publisher is not None and self.publisher.state in ("auth-failed", "tls-failed"):
            flags.append(f"mqtt-{self.publisher.state}")
        flags += self.view.flags()  # the camera no longer sees the sheet as it did at the start
        flags += self.rebuilds.flags()  # the detector keeps rebuilding its background: it sees nothing
        stats = LoopStats(
            fps=self._fps(monotonic_now),
            inference_ms=list(self._inference_ms),
            queue_depth=queue_depth,
            frames_dropped=dropped,
            camera_state=camera_state,
            last_detection_utc=self._last_detection,
            frames_processed=frames,
            active=bool(self._active) if self._active is not None else True,
        )
        sample = self.health.sample(now, stats, extra_flags=flags, retention=self._last_report)
        sample.update(self.view.values())
        sample["detector_rebuilds"] = self.rebuilds.total
        sample["detector_view_moves"] = self.rebuilds.moves
        if self.outbox is not None:
            sample["outbox_pending"] = self.outbox.stats().get("pending")
        store_health(self.db, self.run_id, sample)
        self.counters.health_samples += 1
        self.counters.last_health = sample
        if self.outbox is not None:
            body = {key: value for key, value in sample.items() if key != "ts"}  # the message has its own
            self.outbox.enqueue(health_message(self.cfg.mqtt.topic_prefix, self.cfg.device_id, body))
        self.notifier.status(f"{sample['status']}; {frames} frames")

    def _emit_summary(self, row: SummaryRow) -> None:
        store_summary(self.db, row)
        self.counters.summaries += 1
        if self.outbox is not None:
            payload = row.to_payload(self.summarizer.today_counts())
            self.outbox.enqueue(summary_message(self.cfg.mqtt.topic_prefix, self.cfg.device_id, payload))
