"""Fault 2: two prepares of the same config and cache at the same time.

`datasets` 5.2 takes a file lock (``<config dir>_builder.lock``) around the whole of
``download_and_prepare``: the second prepare blocks until the first has finished, then finds the
finished dataset (``dataset_info.json``) and reuses it without generating anything. rat7m adds a
warning so that the waiting one says why it waits.
"""

from __future__ import annotations

import os
import re
import time

import rat7m

from .support import content_digest, finish, kill_group, start_prepare, wait_for


def test_second_prepare_waits_for_the_first_then_reuses_its_result(sample_release, tmp_path):
    cache_dir = str(tmp_path / "cache")
    marker, go = str(tmp_path / "first-is-busy"), str(tmp_path / "go")
    pause = {"FAULT_PAUSE_AFTER": "50", "FAULT_MARKER": marker, "FAULT_GO": go}
    first = start_prepare("frames", sample_release.root, cache_dir, env=pause)
    second = None
    try:
        wait_for(lambda: os.path.exists(marker), 90, "the first prepare to be generating", first)
        second_err = str(tmp_path / "second.err")
        second = start_prepare("frames", sample_release.root, cache_dir, stderr_path=second_err)

        def second_says_it_waits() -> bool:
            with open(second_err) as file:
                return "Another process is preparing rat7m 'frames'" in file.read()

        # The second one says that another prepare runs and that it waits …
        wait_for(second_says_it_waits, 90, "the second prepare to say it waits", second)
        with open(second_err) as file:
            said = file.read()
        assert re.search(
            r"Another process is preparing rat7m 'frames' in \S+ right now \(it holds \S+_builder\.lock\)\. "
            r"Waiting for it to finish; its result is then reused, not built again\.",
            said,
        ), said
        # … and does wait: both still run while the first is held.
        time.sleep(1.0)
        assert first.poll() is None and second.poll() is None
        open(go, "w").close()
        first_report, second_report = finish(first), finish(second)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                kill_group(process)

    assert first_report["generated"] == 360  # the first built everything …
    assert second_report["generated"] == 0  # … the second generated nothing: it reused that build
    assert first_report["rows"] == second_report["rows"] == {"test": 180, "train": 180}
    assert first_report["digest"] == second_report["digest"]
    # and the shared cache is that complete dataset, equal to a build of its own
    reference = rat7m.load_dataset("frames", data_dir=sample_release.root, cache_dir=str(tmp_path / "reference"))
    assert content_digest(reference) == (first_report["rows"], first_report["digest"])
