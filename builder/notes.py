"""Build notes: what a prepare had to leave out, kept with the cached dataset and shown on the card.

With ``on_corrupt_video="skip"`` the frames of damaged mp4s are left out instead of failing the
build. Nothing may go missing silently, so each shard that left something out writes a small
JSON file into the folder being prepared (``<cache>/rat7m_build_notes/``, moved into place with the
Arrow files, removed with them if the prepare fails); `read_build_notes` sums them into the lines
that ``Rat7M.build_notes`` holds under `CORRUPT_VIDEO_HEADING` and the dataset card prints.
Works the same with ``num_proc`` (every worker writes its own files).

What planning found (e.g. the pixel convention of a ``mini`` annotation) is kept beside them in
`PLAN_NOTES_FILE`, so a dataset loaded from the cache carries the same notes as the build that made it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Folder of the per-shard notes inside a prepared dataset's cache folder.
NOTES_DIR = "rat7m_build_notes"
#: The planning notes of a prepared dataset (heading → lines), in its cache folder.
PLAN_NOTES_FILE = "rat7m_plan_notes.json"
#: At most this many files are listed by name in the notes (the counts cover all).
MAX_FILES_LISTED = 20


@dataclass
class ShardNotes:
    """What one shard left out.

    Attributes:
        rows_skipped: examples not written because a frame they need is damaged.
        frames_skipped: mp4 file name → frame positions in it that were asked for and left out.
        problems: mp4 file name → what the decoder found wrong.
    """

    rows_skipped: int = 0
    frames_skipped: dict[str, set[int]] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.rows_skipped or self.frames_skipped or self.problems)

    def add_reader(self, reader) -> None:
        """Take over what a `rat7m_builder.video.CameraFrames` skipped and found damaged."""
        for name, positions in reader.skipped.items():
            self.frames_skipped.setdefault(name, set()).update(positions)
        for name, damage in reader.damaged.items():
            self.problems[name] = list(damage.problems)

    def to_json(self) -> dict:
        return {
            "rows_skipped": self.rows_skipped,
            "frames_skipped": {name: sorted(positions) for name, positions in sorted(self.frames_skipped.items())},
            "problems": dict(sorted(self.problems.items())),
        }


def shard_key(shard) -> str:
    """A file-name-safe key unique to one shard (its description is deterministic)."""
    return hashlib.sha1(repr(shard).encode()).hexdigest()[:20]


def write_shard_notes(folder: str, key: str, notes: ShardNotes) -> None:
    """Write one shard's notes (atomically) into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{key}.json")
    with open(path + ".tmp", "w", encoding="utf-8") as file:
        json.dump(notes.to_json(), file)
    os.replace(path + ".tmp", path)


def describe_positions(positions: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"0–2, 5"``."""
    values = sorted(set(positions))
    ranges: list[str] = []
    start = previous = None
    for value in [*values, None]:
        if value is not None and previous is not None and value == previous + 1:
            previous = value
            continue
        if start is not None:
            ranges.append(str(start) if start == previous else f"{start}–{previous}")
        start = previous = value
    return ", ".join(ranges)


#: The heading of these notes in ``Rat7M.build_notes`` (and on the dataset card).
CORRUPT_VIDEO_HEADING = "damaged video left out (on_corrupt_video='skip')"


@dataclass
class CorruptVideoSummary:
    """What all shards of a prepared dataset left out (`read_build_notes`).

    Attributes:
        rows_skipped: examples not in the dataset.
        frames: mp4 file name → the frame positions left out.
        problems: mp4 file name → what the decoder found wrong.
    """

    rows_skipped: int = 0
    frames: dict[str, set[int]] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.rows_skipped or self.frames or self.problems)

    @property
    def frames_skipped(self) -> int:
        return sum(len(positions) for positions in self.frames.values())

    @property
    def files(self) -> list[str]:
        return sorted(set(self.frames) | set(self.problems))

    def headline(self) -> str:
        return (
            f"{self.rows_skipped} examples left out: {self.frames_skipped} frames they need, in "
            f"{len(self.files)} damaged mp4 file(s), could not be decoded intact"
        )

    def lines(self) -> list[str]:
        """Card-ready lines: the counts, then per file (at most `MAX_FILES_LISTED`) what was left out and why."""
        lines = [self.headline()]
        for name in self.files[:MAX_FILES_LISTED]:
            left_out = f"frames {describe_positions(self.frames[name])} left out" if self.frames.get(name) else ""
            # a message starts with the file's name, or its path (a loose local file): the line names it already
            why = "; ".join(message.split(f"{name}: ", 1)[-1] for message in self.problems.get(name, [])[:3])
            lines.append(f"{name}: " + " — ".join(part for part in (left_out, why) if part))
        if len(self.files) > MAX_FILES_LISTED:
            lines.append(f"… and {len(self.files) - MAX_FILES_LISTED} more damaged file(s)")
        return lines


def write_plan_notes(folder: str, notes: dict[str, list[str]]) -> None:
    """Keep the planning notes (heading → lines) in the folder being prepared (atomically; none: no file)."""
    if not notes:
        return
    path = os.path.join(folder, PLAN_NOTES_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as file:
        json.dump(notes, file, ensure_ascii=False, indent=1)
    os.replace(path + ".tmp", path)


def read_plan_notes(folder: str) -> dict[str, list[str]]:
    """The planning notes a prepare kept in ``folder`` (`write_plan_notes`); empty when there are none."""
    path = os.path.join(folder, PLAN_NOTES_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as file:
        return {str(heading): [str(line) for line in lines] for heading, lines in json.load(file).items()}


def read_build_notes(folder: str) -> CorruptVideoSummary:
    """Sum the per-shard notes in ``folder`` (empty when nothing was left out, or no such folder)."""
    summary = CorruptVideoSummary()
    if not os.path.isdir(folder):
        return summary
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as file:
            shard = json.load(file)
        summary.rows_skipped += int(shard.get("rows_skipped", 0))
        for file_name, positions in shard.get("frames_skipped", {}).items():
            summary.frames.setdefault(file_name, set()).update(positions)
        for file_name, messages in shard.get("problems", {}).items():
            summary.problems.setdefault(file_name, list(messages))
    return summary
