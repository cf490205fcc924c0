"""Helpers of the fault suite: content digests, and the prepare subprocess with a pause hook."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import datasets

FAULTS_DIR = os.path.dirname(os.path.abspath(__file__))


def content_digest(dataset_dict: datasets.DatasetDict) -> tuple[dict[str, int], str]:
    """Rows per split and a sha256 over every column of every row (image bytes as stored)."""
    digest = hashlib.sha256()
    rows = {}
    for split in sorted(dataset_dict):
        dataset = dataset_dict[split]
        for column, feature in dataset.features.items():
            if isinstance(feature, datasets.Image):
                dataset = dataset.cast_column(column, datasets.Image(decode=False))
            elif isinstance(feature, datasets.List) and isinstance(feature.feature, datasets.Image):
                dataset = dataset.cast_column(column, datasets.List(datasets.Image(decode=False)))
        rows[split] = dataset.num_rows
        digest.update(split.encode())
        for row in dataset:
            digest.update(repr(sorted(row.items())).encode())
    return rows, digest.hexdigest()


#: Run in ``python -c``: prepares a config like a user would, with a pause hook that only this
#: subprocess has. Once ``FAULT_PAUSE_AFTER`` examples (per process) were generated (``frames`` makes
#: them in Arrow tables: counted per table) it creates ``FAULT_MARKER`` and waits until ``FAULT_GO``
#: exists (never, when unset: it waits to be killed). Prints one JSON line: rows per split, the
#: content digest, and how many examples this process generated itself.
PREPARE_SCRIPT = r"""
import json, os, sys, time
sys.path.insert(0, {faults_dir!r})
import rat7m
from support import content_digest

pause_after = int(os.environ.get("FAULT_PAUSE_AFTER", "0"))
generated = 0
original = rat7m.generate_shard

original_tables = rat7m.frame_tables

def count(rows):
    global generated
    before, generated = generated, generated + rows
    if before < pause_after <= generated:
        open(os.environ["FAULT_MARKER"], "w").close()
        go = os.environ.get("FAULT_GO")
        while not (go and os.path.exists(go)):
            time.sleep(0.05)

def paused_generate_shard(shard, selection, notes=None):
    for example in original(shard, selection, notes):
        yield example
        count(1)

def paused_frame_tables(shard, selection, features, notes=None):
    for table in original_tables(shard, selection, features, notes):
        yield table
        count(table.num_rows)

rat7m.generate_shard = paused_generate_shard
rat7m.frame_tables = paused_frame_tables
dataset_dict = rat7m.load_dataset({config!r}, data_dir={data_dir!r}, cache_dir={cache_dir!r}, num_proc={num_proc!r})
rows, digest = content_digest(dataset_dict)
print(json.dumps({{"rows": rows, "digest": digest, "generated": generated}}))
"""


def start_prepare(
    config: str,
    data_dir: str,
    cache_dir: str,
    *,
    num_proc: int | None = None,
    env: dict | None = None,
    stderr_path: str | None = None,
) -> subprocess.Popen:
    """Start a prepare in its own session (so that it and its workers can be killed as a group).

    ``stderr_path``: write its stderr to that file (to be read while it runs) instead of a pipe.
    """
    code = PREPARE_SCRIPT.format(
        faults_dir=FAULTS_DIR, config=config, data_dir=data_dir, cache_dir=cache_dir, num_proc=num_proc
    )
    stderr = open(stderr_path, "w") if stderr_path else subprocess.PIPE  # noqa: SIM115 - closed below
    try:
        return subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    finally:
        if stderr_path:
            stderr.close()  # the child has its own copy


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    """Poll ``condition()`` until true; fail with ``what`` (and the process's stderr if it died)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            detail = process.stderr.read() if process.stderr is not None else ""
            raise AssertionError(f"{what}: the process ended first (rc {process.returncode}): {detail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def kill_group(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGKILL a process started by `start_prepare` and everything in its session; wait until all are gone."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=timeout)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()

    def group_gone() -> bool:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(group_gone, timeout, f"process group {process.pid} to end")


def finish(process: subprocess.Popen, timeout: float = 90) -> dict:
    """Wait for a `start_prepare` process to succeed and return its JSON report."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            kill_group(process)
    stderr = stderr or ""
    assert process.returncode == 0, f"prepare failed (rc {process.returncode}):\n{stderr[-4000:]}"
    report = json.loads(stdout.strip().splitlines()[-1])
    report["stderr"] = stderr
    return report


def snapshot(root: str, *, exclude: tuple[str, ...] = ()) -> dict[str, int]:
    """Every file and link below ``root`` (path → size), skipping the folders in ``exclude``."""
    found = {}
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [s for s in subfolders if os.path.join(folder, s) not in exclude]
        for name in files + [s for s in subfolders if os.path.islink(os.path.join(folder, s))]:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = os.lstat(path).st_size
    return found


def prepared_info_files(cache_dir: str) -> list[str]:
    """``dataset_info.json`` files below a cache: what makes `datasets` take a folder for a finished build."""
    found = []
    for folder, _, files in os.walk(cache_dir):
        if "dataset_info.json" in files:
            found.append(os.path.join(folder, "dataset_info.json"))
    return found


def incomplete_dirs(cache_dir: str) -> list[str]:
    found = []
    for folder, subfolders, _ in os.walk(cache_dir):
        found.extend(os.path.join(folder, s) for s in subfolders if s.endswith(".incomplete"))
    return found
