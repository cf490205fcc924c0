"""Fault 1: the prepare process is SIGKILLed half-way; a re-run completes and equals an uninterrupted build."""

from __future__ import annotations

import glob
import os

import rat7m

from .support import (
    content_digest,
    incomplete_dirs,
    kill_group,
    prepared_info_files,
    start_prepare,
    wait_for,
)


def _files(cache_dir: str) -> list[str]:
    """The files of every prepared dataset folder below a cache (relative to its config folder)."""
    (info,) = prepared_info_files(cache_dir)
    folder = os.path.dirname(info)
    return sorted(os.path.relpath(path, folder) for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True))


def test_sigkill_half_way_then_rerun_equals_uninterrupted_build(sample_release, tmp_path):
    reference_cache = str(tmp_path / "reference")
    reference = rat7m.load_dataset("frames", data_dir=sample_release.root, cache_dir=reference_cache)
    reference_rows, reference_digest = content_digest(reference)
    assert reference_rows == {"test": 180, "train": 180}

    cache_dir = str(tmp_path / "cache")
    marker = str(tmp_path / "half-way")
    # Two workers (num_proc=2), as a long prepare would run; each pauses after 60 of its ~90 train examples.
    process = start_prepare(
        "frames",
        sample_release.root,
        cache_dir,
        num_proc=2,
        env={"FAULT_PAUSE_AFTER": "60", "FAULT_MARKER": marker},
    )
    try:
        wait_for(lambda: os.path.exists(marker), 90, "the prepare to get half-way", process)
    finally:
        kill_group(process)  # SIGKILL to the prepare and its workers, then wait until all are gone

    # What the kill left: half-written Arrow files in `<config dir>.incomplete`, nothing that looks finished.
    assert prepared_info_files(cache_dir) == []
    (incomplete,) = incomplete_dirs(cache_dir)
    assert glob.glob(os.path.join(incomplete, "*.arrow")), os.listdir(incomplete)

    # The re-run (one process this time) starts that folder afresh and completes.
    rerun = rat7m.load_dataset("frames", data_dir=sample_release.root, cache_dir=cache_dir)
    assert content_digest(rerun) == (reference_rows, reference_digest)
    assert incomplete_dirs(cache_dir) == []
    # Nothing of the killed run survived (its workers' `rat7m-train-0000J-…` files would otherwise).
    assert _files(cache_dir) == _files(reference_cache)
