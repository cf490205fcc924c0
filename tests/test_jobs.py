"""`SiblingJobs`: how the jobs of a ``num_proc`` prepare tell each other that they are done.

The sharing rule itself and a prepare that uses it are in test_frame_reader.py; these pin that the
marks are only about speed: a folder that is gone or cannot be written never fails a job, nor
makes a job think that cores are idle.
"""

from __future__ import annotations

import os

from rat7m_builder.jobs import SiblingJobs


def test_a_job_finishing_after_the_folder_is_gone_does_not_fail(tmp_path):
    jobs = SiblingJobs(str(tmp_path / "removed"), num_jobs=2)
    jobs.finish(0)  # no error: the job's rows are written, a missing mark only costs speed
    assert not os.path.exists(jobs.directory)


def test_without_the_folder_no_job_counts_as_done(tmp_path):
    # Two jobs: one counted as done by mistake would have the other encode in an extra thread while
    # both cores are still busy.
    jobs = SiblingJobs(str(tmp_path / "never-made"), num_jobs=2)
    assert (jobs.finished(), jobs.spare_threads()) == (0, 0)
