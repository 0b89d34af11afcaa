"""``coinfeed recordings DIR``: what each segment holds, checked by replaying it.

Every segment is read to its end and its runs are replayed through the processor (into no
sink), so the listing also proves the recording replays: the gap count is the processor's own.
A truncated tail (a killed recorder) is reported and is no error; a segment that cannot be read
or replayed is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import trio

from coinfeed.core.controls import ConnectionOpened
from coinfeed.core.events import Event
from coinfeed.processor import Processor, ProcessorCounters
from coinfeed.recording.format import Batch, RecordingError
from coinfeed.recording.replay import (
    RecordedClock,
    ReplayDriver,
    ReplayRecovery,
    processor_for,
)
from coinfeed.recording.segments import SegmentTail
from coinfeed.status import ServiceStatus


@attrs.define(slots=True)
class SegmentSummary:
    path: Path
    run_id: str = ""
    segment: int = 0
    written_by: str = ""
    symbols: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    batches: int = 0
    frames: int = 0
    control_items: int = 0
    connections: int = 0
    gaps: int = 0
    disk_bytes: int = 0
    raw_bytes: int = 0
    truncated_bytes: int = 0
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        """Decompressed over compressed size."""
        return self.raw_bytes / self.disk_bytes if self.disk_bytes else None

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "run_id": self.run_id,
            "segment": self.segment,
            "written_by": self.written_by,
            "from": _iso(self.first_ns),
            "to": _iso(self.last_ns),
            "batches": self.batches,
            "frames": self.frames,
            "control_items": self.control_items,
            "connections": self.connections,
            "gaps": self.gaps,
            "symbols": self.symbols,
            "bytes": self.disk_bytes,
            "raw_bytes": self.raw_bytes,
            "compression_ratio": round(self.ratio, 2) if self.ratio else None,
            "truncated_bytes": self.truncated_bytes,
            "error": self.error,
        }


@attrs.define(slots=True, eq=False)
class _Summarizer:
    """A replay observer that sums each segment up as the replay reads it."""

    gap_counts: dict[str, int]
    """Gaps the processors found (their shared counters): the difference over a segment is
    that segment's."""
    summaries: list[SegmentSummary] = attrs.field(factory=list)
    _gaps_before: int = 0

    def segment_started(self, path: Path, header: dict[str, Any]) -> None:
        self._gaps_before = sum(self.gap_counts.values())
        self.summaries.append(
            SegmentSummary(
                path,
                run_id=header["run_id"],
                segment=header.get("segment", 0),
                written_by=str(header.get("written_by")),
                symbols=len(header.get("symbols", ())),
                disk_bytes=path.stat().st_size,
            )
        )

    def record(self, record: object) -> None:
        if not isinstance(record, Batch):
            return
        summary = self.summaries[-1]
        summary.batches += 1
        if summary.first_ns is None:
            summary.first_ns = record.wall_ns
        summary.last_ns = record.wall_ns
        for item in record.items:
            if isinstance(item, str | bytes):
                summary.frames += 1
            else:
                summary.control_items += 1
                if isinstance(item, ConnectionOpened):
                    summary.connections += 1

    def segment_ended(self, path: Path, tail: SegmentTail) -> None:
        summary = self.summaries[-1]
        summary.raw_bytes = tail.raw_bytes
        summary.truncated_bytes = tail.truncated_bytes
        summary.error = tail.error
        summary.gaps = sum(self.gap_counts.values()) - self._gaps_before


async def summarize(directory: str) -> list[SegmentSummary]:
    """Every segment of ``directory``, oldest first (``RecordingError`` when there is none).
    A segment that fails to read or replay carries the error, and the listing stops there."""
    recovery, clock, status = ReplayRecovery(), RecordedClock(), ServiceStatus()
    counters = ProcessorCounters()
    last_seen: dict[str, dict[str, float]] = {}
    summarizer = _Summarizer(counters.gaps)

    async def discard(_events: list[Event]) -> None:
        pass

    def new_processor(header: dict[str, Any]) -> Processor:
        return processor_for(
            header, recovery=recovery, clock=clock, emit=discard, status=status,
            counters=counters, last_seen=last_seen,
        )  # fmt: skip

    driver = ReplayDriver(
        Path(directory), new_processor, discard, recovery, clock, observer=summarizer
    )
    try:
        await driver.run()
    except RecordingError as exc:
        if not summarizer.summaries:
            raise
        summarizer.summaries[-1].error = str(exc)
    return summarizer.summaries


def render(summaries: list[SegmentSummary]) -> str:
    """The listing as a table, one segment per line, then the totals."""
    header = (
        f"{'segment':<44} {'from (UTC)':<23} {'to (UTC)':<23} {'frames':>9} {'bytes':>11} "
        f"{'ratio':>6} {'symbols':>7} {'conns':>5} {'gaps':>5}  state"
    )
    lines = [header]
    for s in summaries:
        state = "ok"
        if s.error:
            state = f"error: {s.error}"
        elif s.truncated_bytes:
            state = f"truncated tail ({s.truncated_bytes} bytes)"
        ratio = f"{s.ratio:.1f}x" if s.ratio else "-"
        lines.append(
            f"{s.path.name:<44} {_iso(s.first_ns) or '-':<23} {_iso(s.last_ns) or '-':<23} "
            f"{s.frames:>9} {s.disk_bytes:>11} {ratio:>6} {s.symbols:>7} {s.connections:>5} "
            f"{s.gaps:>5}  {state}"
        )
    disk = sum(s.disk_bytes for s in summaries)
    raw = sum(s.raw_bytes for s in summaries)
    frames = sum(s.frames for s in summaries)
    per_frame = f", {disk / frames:.1f} bytes per frame" if frames else ""
    ratio = f", compression {raw / disk:.1f}x" if disk else ""
    lines.append(f"{len(summaries)} segments, {frames} frames, {disk} bytes{ratio}{per_frame}")
    return "\n".join(lines)


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def run_listing(directory: str) -> list[SegmentSummary]:
    return trio.run(summarize, directory)
