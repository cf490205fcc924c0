"""The `rat7m` command, run in-process through its entry point."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import datasets
import pytest
from helpers import assert_same_rows
from PIL import Image
from standins.figshare import figshare, serve_release  # noqa: F401  (fixture)

import rat7m
from rat7m_builder.cli import main


def test_demo_writes_the_picture_and_summary(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "frames     train     180 rows" in printed and "multiview  test       30 rows" in printed
    with Image.open(out) as picture:
        assert picture.size == (3 * 320, 2 * 256 + 18)  # six views of 320×256 and a title strip


def test_prepare_prints_where_it_is_cached(sample_release, tmp_path, capsys):
    argv = ["prepare", "mocap", "--data-dir", sample_release.root, "--cache-dir", str(tmp_path), "--cameras", "2,3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "mocap      train      30 rows" in printed and f"cached in {tmp_path}" in printed


def test_what_prepare_caches_is_what_load_dataset_reuses(sample_release, tmp_path, capsys, monkeypatch):
    # The command line passes every default (--frame-step 1, --jpeg-quality 90, --source files);
    # Python callers pass none, or spell the same selection otherwise: one cache for all of them.
    cache = str(tmp_path / "cache")
    argv = ["prepare", "mocap", "--data-dir", sample_release.root, "--cache-dir", cache, "--cameras", "3,1"]
    assert main(argv) == 0
    capsys.readouterr()
    built = {os.path.dirname(path) for path in Path(cache).rglob("dataset_info.json")}

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached build was not reused: it is being built again")

    monkeypatch.setattr(rat7m.Rat7M, "_split_generators", no_rebuild)
    for spelling in (
        {"cameras": [1, 3]},
        {"cameras": (3, 1), "frame_step": 1, "jpeg_quality": 90, "on_corrupt_video": "error"},
        {"cameras": 3 * [3, 1], "source": "archives", "recordings": ["s5-d1", "s1-d1"]},
    ):
        mocap = rat7m.load_dataset("mocap", data_dir=sample_release.root, cache_dir=cache, **spelling)
        assert {split: mocap[split].num_rows for split in mocap} == {"train": 30, "test": 30}
    assert {os.path.dirname(path) for path in Path(cache).rglob("dataset_info.json")} == built


def test_selections_that_differ_get_their_own_cache(sample_release, tmp_path):
    ids = {
        rat7m.Rat7M(config_name="mocap", data_dir=sample_release.root, cache_dir=str(tmp_path), **kwargs).config_id
        for kwargs in ({}, {"cameras": [1]}, {"frame_step": 2}, {"recordings": ["s1-d1"]}, {"jpeg_quality": 80})
    }
    assert len(ids) == 5
    without_data_dir = rat7m.Rat7M(config_name="frames", cache_dir=str(tmp_path), cameras=list(range(1, 7)))
    assert without_data_dir.config_id == "frames"  # all six cameras is the default: the plain config's folder
    archives = rat7m.Rat7M(config_name="frames", cache_dir=str(tmp_path), source="archives")
    assert (archives.config_id, archives.config.source) == ("frames", "archives")
    assert rat7m.Rat7M.BUILDER_CONFIGS[2].source == "files"  # the shared config is never changed


def test_bad_selection_is_a_one_line_error(sample_release, tmp_path, capsys):
    assert main(["prepare", "mocap", "--data-dir", sample_release.root, "--recordings", "s7-d1"]) == 1
    assert "error: recordings: unknown ['s7-d1']. Valid recordings:" in capsys.readouterr().err


def test_download_materialises_the_helper_layout(figshare, sample_release, tmp_path, capsys):  # noqa: F811
    serve_release(figshare, sample_release.root)
    assert main(["download", "--dry-run", "--recordings", "s5-d1", "--cameras", "1"]) == 0
    assert "s5-d1           6" in capsys.readouterr().out  # one .mat and five chunks, sizes from the listing
    assert figshare.downloads() == []
    dest = tmp_path / "copy"
    assert main(["download", "--dest", str(dest), "--recordings", "s5-d1", "--cameras", "1"]) == 0
    assert sorted(os.listdir(dest / "video_sequences")) == [f"s5-d1-camera1-{s}.mp4" for s in (0, 16, 24, 32, 8)]
    assert os.listdir(dest / "annotations") == ["mocap-s5-d1.mat"]
    copied = rat7m.load_dataset("frames", split="test", data_dir=str(dest), cache_dir=str(tmp_path / "a"), cameras=[1])
    original = rat7m.load_dataset(
        "frames", split="test", data_dir=sample_release.root, cache_dir=str(tmp_path / "b"), cameras=[1]
    )
    assert_same_rows(copied.to_list(), original.to_list())


def test_export_loads_with_stock_datasets(sample_release, tmp_path):
    to = tmp_path / "hub"
    argv = ["export", "cameras", "--data-dir", sample_release.root, "--cache-dir", str(tmp_path / "c"), "--to", str(to)]
    assert main(argv) == 0
    loaded = datasets.load_dataset(str(to), "cameras", split="test")
    assert loaded.num_rows == 6 and loaded["camera"] == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------------------------------ options

COMMANDS = ("demo", "prepare", "download", "export", "push", "evaluate")
BUILD_OPTIONS = {
    "--data-dir", "--annotation-file", "--recordings", "--cameras", "--frame-step", "--jpeg-quality", "--source",
    "--on-corrupt-video", "--num-proc", "--cache-dir",
}  # fmt: skip
OFFERED = {
    "demo": {"--workdir", "--out"},
    "prepare": BUILD_OPTIONS,
    "download": {"--dest", "--recordings", "--cameras", "--source", "--no-video", "--cache-dir", "--dry-run"},
    "export": BUILD_OPTIONS | {"--to", "--max-shard-size", "--engine", "--ray-address"},
    "push": BUILD_OPTIONS | {"--repo-id", "--private", "--revision", "--from", "--workdir", "--max-shard-size"},
    "evaluate": {
        "--split", "--config", "--data-dir", "--annotation-file", "--recordings", "--frame-step", "--cache-dir",
    },
}  # fmt: skip


def offered_options(command: str, capsys) -> set[str]:
    """The options in the usage line of `rat7m COMMAND --help`."""
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out.split("\n\n", 1)[0]
    return set(re.findall(r"\[?(--[a-z][a-z-]*)", usage)) - {"--help"}


def test_each_subcommand_offers_only_the_options_it_uses(capsys):
    for command in COMMANDS:
        assert offered_options(command, capsys) == OFFERED[command], command


def test_readme_command_lines_use_only_offered_options(capsys):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    names = "|".join(COMMANDS)
    uses = re.findall(rf"`rat7m ({names})\b([^`]*)`", readme)
    uses += re.findall(rf"(?m)^rat7m ({names})\b([^#\n]*)", readme)
    assert {command for command, _ in uses} >= {"prepare", "download", "export", "push", "evaluate"}
    offered = {command: offered_options(command, capsys) for command in COMMANDS}
    for command, text in uses:
        unknown = set(re.findall(r"(--[a-z][a-z-]*)", text)) - offered[command]
        assert not unknown, f"README: `rat7m {command}{text}` uses {sorted(unknown)}"


def test_download_dry_run_leaves_no_temporary_folder(figshare, sample_release, tmp_path, monkeypatch, capsys):  # noqa: F811
    serve_release(figshare, sample_release.root)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert main(["download", "--dry-run", "--recordings", "s1-d1", "--cameras", "2", "--no-video"]) == 0
    assert "s1-d1" in capsys.readouterr().out
    assert list(scratch.iterdir()) == []
    assert main(["download", "--recordings", "s1-d1", "--no-video"]) == 1  # --dest is required without --dry-run
    assert "--dest DIR is required" in capsys.readouterr().err
