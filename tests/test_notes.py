"""Build notes: what an ``on_corrupt_video="skip"`` prepare left out, as the dataset card prints it.

The end-to-end path (a damaged mp4, the warning, the card) is in faults/test_fault_corrupt_video.py;
these pin what the fabricated damage there never produces: scattered and single frames, a damaged
file none of whose needed frames was lost, one file in two shards, and more files than are listed.
"""

from __future__ import annotations

from rat7m_builder.notes import (
    MAX_FILES_LISTED,
    CorruptVideoSummary,
    ShardNotes,
    describe_positions,
    read_build_notes,
    write_shard_notes,
)


def test_positions_are_described_as_sorted_ranges_and_single_frames():
    # Readers hand positions over as sets: the card must not depend on their order, nor repeat one.
    assert describe_positions([9, 1, 2, 3, 7, 5, 2, 10]) == "1–3, 5, 7, 9–10"
    assert describe_positions({1000, 4}) == "4, 1000"
    assert describe_positions([6]) == "6"
    assert describe_positions([]) == ""


def test_a_damaged_file_whose_needed_frames_were_intact_is_still_reported(tmp_path):
    # E.g. frame_step stepped over the damaged group of pictures: nothing is left out, but the file
    # is damaged, and a shard that found it must say so (its notes are not "empty").
    message = "s1-d1-camera3-0.mp4: corrupt frame at position 12"
    notes = ShardNotes(problems={"s1-d1-camera3-0.mp4": [message]})
    assert notes
    write_shard_notes(str(tmp_path), "shard", notes)
    summary = read_build_notes(str(tmp_path))
    assert summary
    assert summary.lines() == [
        "0 examples left out: 0 frames they need, in 1 damaged mp4 file(s), could not be decoded intact",
        "s1-d1-camera3-0.mp4: corrupt frame at position 12",
    ]


def test_what_two_shards_left_out_of_one_file_adds_up(tmp_path):
    # multiview: neighbouring shards both read the first frames of a camera's next chunk, so one
    # file's positions come from two shards; each shard's rows count too.
    name = "s1-d1-camera2-8.mp4"
    problem = {name: [f"{name}: cannot be opened as a video"]}
    write_shard_notes(str(tmp_path), "a", ShardNotes(3, {name: {0, 1, 2}}, problem))
    write_shard_notes(str(tmp_path), "b", ShardNotes(2, {name: {6, 7}}, problem))
    summary = read_build_notes(str(tmp_path))
    assert (summary.rows_skipped, summary.frames_skipped, summary.files) == (5, 5, [name])
    assert summary.lines()[1] == f"{name}: frames 0–2, 6–7 left out — cannot be opened as a video"


def test_at_most_the_listed_number_of_files_is_named_and_the_rest_counted():
    def summary_of(count: int) -> CorruptVideoSummary:
        return CorruptVideoSummary(rows_skipped=count, frames={f"f{i:02d}.mp4": {i} for i in range(count)})

    assert MAX_FILES_LISTED == 20
    exactly = summary_of(20).lines()
    assert len(exactly) == 1 + 20 and exactly[-1] == "f19.mp4: frames 19 left out"  # no "and more" line
    more = summary_of(23).lines()
    assert more[1:21] == [f"f{i:02d}.mp4: frames {i} left out" for i in range(20)]
    assert more[21:] == ["… and 3 more damaged file(s)"]
    assert more[0].startswith("23 examples left out: 23 frames they need, in 23 damaged mp4 file(s)")
