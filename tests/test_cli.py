"""The `rat7m` command, run in-process through its entry point."""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import assert_same_rows
from PIL import Image
from standins.figshare import figshare, serve_release  # noqa: F401  (fixture)

import rat7m
from rat7m_builder.cli import main, size_table
from rat7m_builder.manifest import SKELETON_EDGES
from rat7m_builder.render import draw_skeleton, render_multiview
from rat7m_builder.sample import write_mini_annotation


def test_demo_writes_the_picture_and_summary(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "frames     train     180 rows" in printed and "multiview  test       30 rows" in printed
    with Image.open(out) as picture:
        assert picture.size == (3 * 320, 2 * 256 + 18)  # six views of 320×256 and a title strip
    # the release it leaves is one to try every config on, mini included (a fabricated annotation beside it)
    release = tmp_path / "work" / "release"
    assert f"The fabricated release stays in {release}" in printed
    mini = rat7m.load_dataset("mini", split="test", data_dir=str(release), cache_dir=str(tmp_path / "c"), cameras=[1])
    assert mini.num_rows == 15


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
        rat7m.Rat7M(config_name="frames", data_dir=sample_release.root, cache_dir=str(tmp_path), **kwargs).config_id
        for kwargs in (
            {},
            {"cameras": [1]},
            {"frame_step": 2},
            {"recordings": ["s1-d1"]},
            {"jpeg_quality": 80},
            {"on_corrupt_video": "skip"},
        )
    }
    assert len(ids) == 6
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


# ---------------------------------------------------------------------------- options reach the build


def test_on_corrupt_video_skip_builds_past_a_damaged_chunk(release_copy, tmp_path, capsys):
    # The default fails naming the file; the option must reach the builder, or skipping is impossible.
    path = os.path.join(release_copy, "video_sequences", "s1-d1-camera6-8.mp4")
    with open(path, "r+b") as file:
        file.truncate(300)
    build = ["prepare", "frames", "--data-dir", release_copy, "--cameras", "6", "--recordings", "s1-d1"]
    assert main([*build, "--cache-dir", str(tmp_path / "a")]) == 1
    assert "s1-d1-camera6-8.mp4: cannot be opened as a video" in capsys.readouterr().err
    with pytest.warns(rat7m.CorruptVideoWarning, match="examples left out"):
        assert main([*build, "--cache-dir", str(tmp_path / "b"), "--on-corrupt-video", "skip"]) == 0
    assert re.search(r"frames +train +2\d rows", capsys.readouterr().out)  # 30 samples, chunk 8's left out


def test_annotation_file_option_finds_the_pickle_outside_the_data_dir(sample_release, tmp_path, capsys):
    # sample_release holds no annotation: without the option reaching the builder, mini cannot build.
    annotation = write_mini_annotation(sample_release, str(tmp_path / "elsewhere.pkl"))
    argv = ["prepare", "mini", "--data-dir", sample_release.root, "--cache-dir", str(tmp_path / "c")]
    assert main([*argv, "--annotation-file", annotation, "--cameras", "1"]) == 0
    assert re.search(r"mini +test +15 rows", capsys.readouterr().out)


def test_num_proc_option_reaches_the_prepare(sample_release, tmp_path, capsys, monkeypatch):
    # Only speed depends on it (the rows do not), so the prepare's arguments are what shows it was passed.
    prepare, seen = rat7m.prepare, []

    def recording_prepare(builder, num_proc=None, **kwargs):
        seen.append(num_proc)
        return prepare(builder, num_proc=num_proc, **kwargs)

    monkeypatch.setattr(rat7m, "prepare", recording_prepare)
    argv = ["prepare", "mocap", "--data-dir", sample_release.root, "--cache-dir", str(tmp_path), "--num-proc", "2"]
    assert main(argv) == 0
    assert seen == [2]


def test_download_fetches_only_the_needed_files_by_default(figshare, sample_release, tmp_path, capsys):  # noqa: F811
    # `--source files` is the default (not the whole article zips), and `--no-video` fetches no mp4.
    serve_release(figshare, sample_release.root)
    assert main(["download", "--dry-run", "--recordings", "s1-d1", "--no-video"]) == 0
    assert re.search(r"(?m)^s1-d1 +1 ", capsys.readouterr().out)  # the .mat alone
    assert main(["download", "--dest", str(tmp_path / "copy"), "--recordings", "s1-d1", "--no-video"]) == 0
    fetched = [request.path for request in figshare.downloads()]
    assert fetched == [f"/storage/{figshare.file('mocap-s1-d1.mat').file_id}"]
    assert os.listdir(tmp_path / "copy" / "annotations") == ["mocap-s1-d1.mat"]


def test_size_table_gives_files_and_decimal_gigabytes_per_recording():
    def ref(size):
        return SimpleNamespace(size=size)

    index = SimpleNamespace(
        mocap={"s5-d1": ref(500_000_000), "s1-d1": ref(None)},  # a size figshare did not list counts 0
        videos={
            ("s5-d1", 1): [SimpleNamespace(file=ref(1_000_000_000))] * 2,
            ("s1-d1", 2): [SimpleNamespace(file=ref(250_000_000))],
        },
    )
    assert [line.split() for line in size_table(index).splitlines()] == [
        ["recording", "files", "GB"],
        ["s1-d1", "2", "0.25"],
        ["s5-d1", "3", "2.50"],
        ["total", "5", "2.75"],
    ]


def test_export_card_notes_name_the_selection_and_what_the_build_found(sample_release, tmp_path):
    root = str(tmp_path / "release")
    shutil.copytree(sample_release.root, root)
    write_mini_annotation(sample_release, os.path.join(root, "mini_rat7m_train_test_annotation.pkl"))
    to = tmp_path / "hub"
    argv = ["export", "mini", "--data-dir", root, "--cache-dir", str(tmp_path / "c"), "--to", str(to)]
    assert main([*argv, "--cameras", "2,1", "--frame-step", "2", "--jpeg-quality", "75"]) == 0
    card = (to / "README.md").read_text(encoding="utf-8")
    notes = card.split("## Build notes", 1)[1]
    for line in (
        "recordings: all available",
        "cameras: 1, 2",
        "frame_step: 2",
        "jpeg_quality: 75",
        "annotation: mini_rat7m_train_test_annotation.pkl",
        "files: a local copy (data_dir), used as found (not checked against figshare's md5)",
    ):
        assert f"  - {line}\n" in notes, line
    assert "on_corrupt_video" not in notes  # mini never thins its table: the option means nothing to it
    assert "s1-d1: table 2D keypoints are 1-based; shifted by −1" in notes  # found by the build, kept for the card


def test_card_notes_list_only_the_options_a_config_depends_on(sample_release, tmp_path):
    """mocap's card names its recordings, cameras and step, not a JPEG quality its rows never had."""
    to = tmp_path / "hub"
    argv = ["export", "mocap", "--data-dir", sample_release.root, "--cache-dir", str(tmp_path / "c"), "--to", str(to)]
    assert main([*argv, "--frame-step", "3", "--jpeg-quality", "75", "--on-corrupt-video", "skip"]) == 0
    notes = (to / "README.md").read_text(encoding="utf-8").split("## Build notes", 1)[1]
    assert "  - frame_step: 3\n" in notes and "  - cameras: all\n" in notes
    assert "jpeg_quality" not in notes and "on_corrupt_video" not in notes
    frames_to = tmp_path / "hub-frames"
    argv = ["export", "frames", "--data-dir", sample_release.root, "--cache-dir", str(tmp_path / "c"), "--cameras", "1"]
    assert main([*argv, "--to", str(frames_to), "--jpeg-quality", "75"]) == 0
    notes = (frames_to / "README.md").read_text(encoding="utf-8").split("## Build notes", 1)[1]
    assert "  - jpeg_quality: 75\n" in notes and "  - on_corrupt_video: error\n" in notes


def test_errors_name_the_command_line_option_of_the_keyword_they_suggest(sample_release, tmp_path, capsys):
    """Messages written for Python callers (``cameras=[...]``) also name the option a command-line user types."""
    root = tmp_path / "release"
    shutil.copytree(sample_release.root, root)
    for path in root.rglob("s5-d1-camera2-*.mp4"):
        path.unlink()  # camera 2 of one recording is missing
    argv = ["prepare", "frames", "--data-dir", str(root), "--cache-dir", str(tmp_path / "c"), "--recordings", "s5-d1"]
    assert main([*argv, "--cameras", "1,2"]) == 1
    error = capsys.readouterr().err
    assert "cameras=[...] (--cameras on the command line)" in error
    np.save(tmp_path / "p.npy", np.zeros((1, 20, 3)))
    assert main(["evaluate", str(tmp_path / "p.npy"), "--data-dir", str(root)]) == 1  # no annotation there
    error = capsys.readouterr().err
    assert "annotation_file='/path/to/it.pkl' (--annotation-file on the command line)" in error


def test_evaluate_split_is_train_or_test(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "p.npy", "--split", "validation"])
    assert "invalid choice: 'validation'" in capsys.readouterr().err


def test_export_max_shard_size_splits_the_parquet(sample_release, tmp_path):
    argv = ["export", "frames", "--data-dir", sample_release.root, "--cache-dir", str(tmp_path / "c"), "--cameras", "1"]
    assert main([*argv, "--to", str(tmp_path / "one")]) == 0
    assert main([*argv, "--to", str(tmp_path / "many"), "--max-shard-size", "20KB"]) == 0
    assert sorted(os.listdir(tmp_path / "one" / "frames")) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
    ]
    shards = sorted(os.listdir(tmp_path / "many" / "frames"))
    assert len(shards) > 2 and all(name.endswith(".parquet") for name in shards)
    many = datasets.load_dataset(str(tmp_path / "many"), "frames", split="train", cache_dir=str(tmp_path / "l"))
    assert many.num_rows == 30


def test_push_from_a_folder_that_is_no_export_is_refused_before_any_upload(tmp_path, capsys):
    assert main(["push", "--from", str(tmp_path), "--repo-id", "org/rat7m"]) == 1
    assert f"--from {tmp_path}: not an export folder (no README.md)" in capsys.readouterr().err


# ------------------------------------------------------------------------------- the demo's picture


def _solid_view(colour, size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def test_skeleton_edges_and_markers_are_drawn_but_never_towards_a_missing_marker():
    keypoints = np.full((20, 2), np.nan)
    a, b = SKELETON_EDGES[0]
    keypoints[a], keypoints[b] = (10, 20), (50, 20)
    other = next(n for edge in SKELETON_EDGES if a in edge for n in edge if n not in (a, b))
    keypoints[other] = (np.nan, np.nan)  # its edge to `a` must not be drawn (towards NaN: nowhere)
    picture = np.asarray(draw_skeleton(_solid_view((0, 0, 0), (64, 64)), keypoints))
    assert tuple(picture[20, 30]) == (255, 255, 0)  # the middle of the edge a–b
    assert (picture[17:24, 7:14] == 255).all(axis=2).any()  # the white ring around marker a
    drawn = np.argwhere(picture.any(axis=2))
    assert drawn[:, 0].min() >= 17 and drawn[:, 0].max() <= 23, "something drawn off the row of a–b"


def test_draw_skeleton_takes_jpeg_bytes_in_a_dict_as_rows_hold_them():
    buffer = io.BytesIO()
    _solid_view((0, 0, 255)).save(buffer, format="JPEG")
    picture = draw_skeleton({"bytes": buffer.getvalue(), "path": None}, np.full((20, 2), np.nan))
    assert picture.size == (40, 30) and picture.getpixel((20, 15))[2] > 200


@pytest.mark.parametrize("views", [6, 4, 2])
def test_multiview_picture_has_each_view_in_its_tile(views):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (255, 0, 255), (0, 255, 255)][:views]
    example = {
        "images": [_solid_view(colour) for colour in colours],
        "keypoints_2d": np.full((views, 20, 2), np.nan),
        "cameras": list(range(1, views + 1)),
        "frame_index": [0] * views,
        "recording": "s1-d1",
        "sample_index": 0,
    }
    picture = render_multiview(example)
    rows = -(-views // 3)
    assert picture.size == (3 * 40, rows * 30 + 18)  # three views a row, below an 18 px title strip
    for position, colour in enumerate(colours):
        x, y = position % 3 * 40, position // 3 * 30 + 18
        assert picture.getpixel((x + 20, y + 5)) == colour, position


def _element_types(schema) -> dict[str, str]:
    """Column → its innermost element type (through lists of any depth), as Arrow names it."""
    types = {}
    for field in schema:
        kind = field.type
        while pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
            kind = kind.value_type
        types[field.name] = str(kind)
    return types


def test_exported_parquet_keeps_the_documented_column_types(sample_release, tmp_path):
    # What Arrow, Polars and DuckDB read from the Hub: int32 indices and image sizes, float32 keypoints,
    # float64 calibration (the dataset card's promise), whatever `datasets` would infer.
    to = tmp_path / "hub"
    build = ["--data-dir", sample_release.root, "--cache-dir", str(tmp_path / "c"), "--to", str(to)]
    for config in ("mocap", "cameras"):
        assert main(["export", config, *build]) == 0
    mocap = _element_types(pq.read_schema(to / "mocap" / "test-00000-of-00001.parquet"))
    assert mocap == {
        "recording": "string", "subject": "int32", "day": "int32", "sample_index": "int32", "keypoints_3d": "float",
        "cameras": "int32", "frame_index": "int32",
    }  # fmt: skip
    cameras = _element_types(pq.read_schema(to / "cameras" / "test-00000-of-00001.parquet"))
    assert cameras == {
        "recording": "string", "camera": "int32", "intrinsic_matrix": "double", "rotation_matrix": "double",
        "translation_vector": "double", "distortion": "double", "image_width": "int32", "image_height": "int32",
    }  # fmt: skip
