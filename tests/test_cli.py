"""The `rat7m` command, run in-process through its entry point."""

from __future__ import annotations

import os

import datasets
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
