"""Let the jobs of one ``num_proc`` prepare use the cores that finished jobs leave idle.

`datasets` splits a split's shards into ``num_proc`` contiguous groups up front, one job each (a
static split: the rows' order must not depend on timing). The groups take the same time only on
average: chunks differ and the machine's speed drifts, so the first job to finish leaves its core
idle until the last one is done (1.4 s at the end of a 38 s prepare of 12 equal chunks on 2 cores,
BENCHMARKS.md). A finished job leaves a file in a folder the jobs share; a job still decoding asks
`SiblingJobs.spare_threads` every few frames and, from the first positive answer on, encodes its
JPEGs in that many threads while it decodes (`video.CameraFrames.iter_jpegs`). The bytes and
their order are the same either way.

No ``datasets`` here: the builder creates the folder around a split's jobs and removes it after.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class SiblingJobs:
    """The jobs of one split's prepare, as seen from any of them (picklable: it is a folder and a count).

    Attributes:
        directory: a folder shared by the jobs (local); a finished job leaves ``done-<job_id>`` in it.
        num_jobs: how many jobs the split runs, all at once (one per process).
    """

    directory: str
    num_jobs: int

    def finish(self, job_id: int) -> None:
        """Tell the other jobs that ``job_id`` is done (its process takes no more work)."""
        try:
            with open(os.path.join(self.directory, f"done-{job_id}"), "wb"):
                pass
        except OSError:  # only about speed: the others then just keep one thread
            pass

    def finished(self) -> int:
        """How many jobs are done (0 once the folder is gone)."""
        try:
            return sum(1 for name in os.listdir(self.directory) if name.startswith("done-"))
        except OSError:
            return 0

    def spare_threads(self) -> int:
        """Encoding threads each running job may add: the finished jobs' cores shared among the running ones.

        E.g. 2 jobs, 1 done: 1 for the last one; 4 jobs, 1 done: 0 (a third of a core each is not
        worth a thread); 4 jobs, 2 done: 1 each.
        """
        finished = self.finished()
        running = self.num_jobs - finished
        return finished // running if running > 0 else 0
