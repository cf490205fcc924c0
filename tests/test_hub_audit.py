"""Hub export and push: what a demanding user would check beyond tests/test_hub.py.

The card (its YAML, table and build notes) as people read it, the files an export and a push leave
behind, the inputs refused before anything is written or uploaded, and the upload itself (what goes
up, in which commit, on top of which commit). Pushes run in subprocesses against the Hub stand-in,
for the reason given in tests/test_hub.py.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from standins.hub import HubStandIn
from test_hub import FRAMES_FEATURES, MOCAP_FEATURES, TOKEN, _env, _jpeg, _run, make_frames, make_mocap, read_card

from rat7m_builder import hub
from rat7m_builder.hub import export_dataset, exported_configs, find_card_body, load_line, write_card


@pytest.fixture
def card_body(tmp_path) -> Path:
    path = tmp_path / "dataset_card.md"
    path.write_text("# RAT7M (test card)\n\nBody written by the test.\n", encoding="utf-8")
    return path


@pytest.fixture
def mocap_dd():
    return datasets.DatasetDict({"train": make_mocap(40, seed=3), "test": make_mocap(9, seed=4, recording="s5-d1")})


def table_rows(body: str) -> dict[str, tuple[str, str]]:
    """The "Configs in this repository" table: config → (rows per split, Parquet size), in card order."""
    section = body.split("## Configs in this repository", 1)[1].split("\n## ", 1)[0]
    return {name: (rows, size) for name, rows, size in re.findall(r"(?m)^\| `([^`]+)` \| (.+?) \| (.+?) \|$", section)}


def all_paths_under(folder: Path) -> list[str]:
    """Files and folders (empty ones too) under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


def make_frames_dd() -> datasets.DatasetDict:
    return datasets.DatasetDict({"train": make_frames(4, seed=1)})


def card_sizes(rows: int, download_size: int = 1, num_bytes: int = 1) -> dict:
    return {"train": {"num_examples": rows, "num_bytes": num_bytes, "download_size": download_size}}


# ------------------------------------------------------------------------------------------ card body


def test_a_card_body_path_that_is_not_a_file_is_refused(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="Dataset card body not found"):
        find_card_body(tmp_path)  # a folder
    monkeypatch.setenv("RAT7M_CARD_BODY", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="RAT7M_CARD_BODY points to a missing file"):
        find_card_body()


def test_the_card_body_is_never_taken_from_another_projects_root(tmp_path, monkeypatch):
    """A `dataset_card.md` beside site-packages (another project's root) is not rat7m's body."""
    monkeypatch.delenv("RAT7M_CARD_BODY", raising=False)
    site = tmp_path / "site-packages"
    (site / "rat7m_builder").mkdir(parents=True)
    (site / "pyproject.toml").write_text('[project]\nname = "someone-else"\n', encoding="utf-8")
    (site / "dataset_card.md").write_text("# Not RAT7M\n", encoding="utf-8")
    monkeypatch.setattr(hub, "__file__", str(site / "rat7m_builder" / "hub.py"))
    with pytest.raises(FileNotFoundError) as missing:
        find_card_body()
    # The message names where it looked (the package's own copy), and only there.
    assert str(site / "rat7m_builder" / "dataset_card.md") in str(missing.value)
    assert str(site / "dataset_card.md") not in str(missing.value)
    (site / "rat7m_builder" / "dataset_card.md").write_text("# RAT7M packaged\n", encoding="utf-8")
    assert find_card_body() == site / "rat7m_builder" / "dataset_card.md"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("---\r\nlanguage_creators: [found]\r\n---\r\n# Card body\r\n", id="crlf"),
        pytest.param("---\n\n---\n# Card body\n", id="empty-header"),
    ],
)
def test_card_body_front_matter_of_any_shape_is_read(tmp_path, mocap_dd, text):
    """A body edited on Windows (CRLF) or with an empty YAML header still gives one clean header."""
    body_path = tmp_path / "body.md"
    body_path.write_bytes(text.encode("utf-8"))
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=body_path)
    meta, body = read_card(out)
    assert body.lstrip().startswith("# Card body") and "---" not in body
    if "language_creators" in text:
        assert meta["language_creators"] == ["found"]


def test_a_hand_written_card_with_windows_line_ends_keeps_its_header(tmp_path, card_body):
    """`write_card` reads the README as bytes (fsspec): CRLF line ends reach the front matter parser."""
    out = tmp_path / "export"
    out.mkdir()
    (out / "README.md").write_bytes(b"---\r\nlicense: mit\r\nmy_own_key: kept\r\n---\r\n\r\n# Our mirror\r\n")
    with pytest.warns(UserWarning, match="not written by rat7m"):
        write_card(out, "mocap", MOCAP_FEATURES, card_sizes(5), card_body_path=card_body)
    meta, body = read_card(out)
    assert (meta["license"], meta["my_own_key"]) == ("mit", "kept")
    assert body.strip() == "# Our mirror" and [c["config_name"] for c in meta["configs"]] == ["mocap"]


# ------------------------------------------------------------------------------------------ card contents


def test_size_category_of_a_trillion_examples():
    assert hub.size_category(10**12 - 1) == "100B<n<1T"
    assert hub.size_category(10**12) == "n>1T"


def test_build_notes_read_well_on_the_card(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    notes = {"selection": ["recordings: s1-d1", "cameras:\n   1, 2"], "crop": {"x": [1, 2]}}
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body, build_notes=notes)
    _, body = read_card(out)
    # Lines of text as a nested list (each on one line), mappings and lists inline as YAML.
    assert "- **selection**:\n  - recordings: s1-d1\n  - cameras: 1, 2\n" in body
    assert "- **crop**: `{x: [1, 2]}`\n" in body


def test_config_table_gives_rows_and_parquet_size_readably(tmp_path, card_body):
    out = tmp_path / "export"
    write_card(out, "mocap", MOCAP_FEATURES, card_sizes(1500, download_size=1_010_000), card_body_path=card_body)
    write_card(out, "frames", FRAMES_FEATURES, card_sizes(7, download_size=987_654_321_000), card_body_path=card_body)
    write_card(out, "cameras", FRAMES_FEATURES, card_sizes(3, download_size=999), card_body_path=card_body)
    _, body = read_card(out)
    assert table_rows(body) == {
        "cameras": ("train: 3", "999 B"),
        "frames": ("train: 7", "987.7 GB"),
        "mocap": ("train: 1,500", "1.0 MB"),  # decimal units, as the Hub shows sizes
    }


def test_config_table_size_is_the_parquet_bytes_not_the_arrow_bytes(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    summary = export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    parquet_bytes = sum(p.stat().st_size for p in (out / "mocap").iterdir())
    assert summary["download_size"] == parquet_bytes != summary["num_bytes"]
    _, body = read_card(out)
    assert table_rows(body)["mocap"][1] == hub._human_size(parquet_bytes)


def test_configs_and_build_notes_are_listed_by_name_whatever_the_export_order(tmp_path, card_body):
    out = tmp_path / "export"
    for config in ("mocap", "frames", "cameras"):
        write_card(out, config, MOCAP_FEATURES, card_sizes(5), card_body_path=card_body, build_notes={"n": config})
    meta, body = read_card(out)
    assert [c["config_name"] for c in meta["configs"]] == ["cameras", "frames", "mocap"]
    assert [c["config_name"] for c in meta["dataset_info"]] == ["cameras", "frames", "mocap"]
    assert list(table_rows(body)) == ["cameras", "frames", "mocap"]
    positions = [body.index(f"### `{config}`") for config in ("cameras", "frames", "mocap")]
    assert positions == sorted(positions)


def test_render_card_lists_configs_and_notes_by_name_whatever_order_it_is_given():
    """`render_card` is public: a caller's metadata in any order gives the same sorted sections."""
    metadata = {"configs": [{"config_name": c, "data_files": f"{c}/*"} for c in ("mocap", "frames")]}
    text = hub.render_card(metadata, "Body", {"mocap": "mocap-notes\n", "frames": "frames-notes\n"})
    _, body = hub._split_front_matter(text)
    assert list(table_rows(body)) == ["frames", "mocap"]
    assert body.index("frames-notes") < body.index("mocap-notes")


def test_one_config_has_its_dataset_info_as_a_mapping_like_push_to_hub(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    meta, _ = read_card(out)
    assert isinstance(meta["dataset_info"], dict) and meta["dataset_info"]["config_name"] == "mocap"
    assert isinstance(meta["configs"], list)


def test_size_category_is_the_largest_config_and_follows_it_down(tmp_path, card_body):
    out = tmp_path / "export"
    write_card(out, "mocap", MOCAP_FEATURES, card_sizes(600), card_body_path=card_body)
    write_card(out, "frames", FRAMES_FEATURES, card_sizes(600), card_body_path=card_body)
    # Views of the same recordings: 600 + 600 rows is not 1.2K examples.
    assert read_card(out)[0]["size_categories"] == ["n<1K"]
    write_card(out, "frames", FRAMES_FEATURES, card_sizes(5000), card_body_path=card_body)
    assert read_card(out)[0]["size_categories"] == ["1K<n<10K"]
    write_card(out, "frames", FRAMES_FEATURES, card_sizes(10), card_body_path=card_body)
    assert read_card(out)[0]["size_categories"] == ["n<1K"]


def test_reexport_without_notes_drops_the_configs_old_notes(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body, build_notes={"note": "stale-notes"})
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    _, body = read_card(out)
    assert "stale-notes" not in body and "### `mocap`" not in body


def test_notes_of_a_config_removed_from_the_card_by_hand_go_too(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    write_card(out, "frames", FRAMES_FEATURES, card_sizes(5), card_body_path=card_body, build_notes={"n": "gone"})
    meta, body = read_card(out)
    # The maintainer deletes `frames` from the YAML; its notes block is still in the text.
    meta["configs"], meta["dataset_info"] = [], []
    (out / "README.md").write_text("---\n" + yaml.safe_dump(meta) + "---\n" + body, encoding="utf-8")
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    meta, body = read_card(out)
    assert [c["config_name"] for c in meta["configs"]] == ["mocap"]
    assert "### `frames`" not in body and "gone" not in body


def test_a_hand_written_card_named_rat7m_is_still_the_maintainers(tmp_path, mocap_dd, card_body):
    """`pretty_name: RAT7M` alone does not make a card rat7m's: its text stays."""
    out = tmp_path / "export"
    out.mkdir()
    hand = "---\npretty_name: RAT7M\nlicense: mit\n---\n\n# Our mirror\n\nHand-written.\n"
    (out / "README.md").write_text(hand, encoding="utf-8")
    with pytest.warns(UserWarning, match="not written by rat7m"):
        export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    meta, body = read_card(out)
    assert body == "\n# Our mirror\n\nHand-written.\n" and meta["license"] == "mit"


def test_an_earlier_rat7m_card_with_notes_but_another_licence_name_is_recognised(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body, build_notes={"note": "kept-notes"})
    meta, body = read_card(out)
    meta.pop("license_name")  # what a card of an earlier rat7m may lack
    legacy = "---\n" + yaml.safe_dump(meta) + "---\n\n# Old body\n\n## Build notes\n\n"
    legacy += body.split("## Build notes\n\n", 1)[1]
    (out / "README.md").write_text(legacy, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_dataset(make_frames_dd(), "frames", out, card_body_path=card_body)
    meta, body = read_card(out)
    assert "# Old body" not in body and "kept-notes" in body
    assert meta["license_name"] == "see-the-figshare-record"


def test_a_hand_written_local_card_pushed_onto_an_earlier_rat7m_card_keeps_one_notes_section(tmp_path, card_body):
    """The Hub holds an earlier rat7m's card (body, then build notes); the export folder a hand-written one."""
    out = tmp_path / "export"
    write_card(out, "frames", FRAMES_FEATURES, card_sizes(5), card_body_path=card_body, build_notes={"n": "f1"})
    write_card(out, "mocap", MOCAP_FEATURES, card_sizes(5), card_body_path=card_body, build_notes={"n": "m1"})
    meta, body = read_card(out)
    legacy = "---\n" + yaml.safe_dump(meta) + "---\n\n# Old body\n\n## Build notes\n\n"
    legacy += body.split("## Build notes\n\n", 1)[1]
    local = "---\n" + yaml.safe_dump(meta) + "---\n\n# Hand-written export card\n"
    local = local.replace("pretty_name: RAT7M", "pretty_name: Our RAT7M")
    merged = hub._merge_cards(hub._parse_card(legacy), hub._parse_card(local), ["frames"])
    _, merged_body = hub._split_front_matter(merged)
    # The Hub card's prose stays; mocap's notes once; frames' old notes go (the pushed card has none).
    assert merged_body.startswith("\n# Old body\n")
    assert merged_body.count("## Build notes") == 1 and merged_body.count("### `mocap`") == 1
    assert "f1" not in merged_body and "### `frames`" not in merged_body


def test_a_new_card_from_a_hand_written_one_gives_no_warning(card_body):
    """Nothing was there before: there is no existing card whose text could have been kept."""
    local = hub._parse_card(
        "---\nconfigs:\n- config_name: extra\n  data_files: extra/*.parquet\n"
        "dataset_info:\n  config_name: extra\n---\n# Hand-written\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        merged = hub._merge_cards(None, local, ["extra"])
    assert merged.endswith("---\n# Hand-written\n")


def test_a_push_to_hub_default_config_keeps_a_named_entry_next_to_ours(tmp_path, mocap_dd, card_body):
    """`push_to_hub` writes `dataset_info:` of its "default" config without a name; next to ours it gets one."""
    out = tmp_path / "export"
    (out / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"a": [1, 2]}).to_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
    (out / "README.md").write_text(
        "---\ndataset_info:\n  features:\n  - name: a\n    dtype: int64\n  splits:\n  - name: train\n"
        "    num_examples: 2\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
        "    path: data/train-*\n---\n# Hand-written\n",
        encoding="utf-8",
    )
    with pytest.warns(UserWarning, match="not written by rat7m"):
        export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    meta, _ = read_card(out)
    assert [e.get("config_name") for e in meta["dataset_info"]] == ["default", "mocap"]
    loaded = datasets.load_dataset(str(out), "default", split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded["a"] == [1, 2]


# ------------------------------------------------------------------------------------------ shards


def test_no_empty_shard_when_the_size_limit_is_tiny(tmp_path, card_body):
    out = tmp_path / "export"
    dd = datasets.DatasetDict({"train": make_mocap(3)})
    summary = export_dataset(dd, "mocap", out, card_body_path=card_body, max_shard_size=1)
    names = sorted(p.name for p in (out / "mocap").iterdir())
    assert names == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    assert [pq.read_metadata(out / "mocap" / n).num_rows for n in names] == [1, 1, 1]
    assert summary["download_size"] == sum((out / "mocap" / n).stat().st_size for n in names)
    assert read_card(out)[0]["dataset_info"]["download_size"] == summary["download_size"]


def test_an_empty_split_is_one_empty_shard(tmp_path, card_body):
    out = tmp_path / "export"
    dd = datasets.DatasetDict({"train": make_mocap(4), "test": make_mocap(4).select([])})
    export_dataset(dd, "mocap", out, card_body_path=card_body)
    assert pq.read_metadata(out / "mocap" / "test-00000-of-00001.parquet").num_rows == 0
    assert [s["num_examples"] for s in read_card(out)[0]["dataset_info"]["splits"]] == [4, 0]
    # (`datasets` cannot load an empty split itself, but the config's other splits load.)
    loaded = datasets.load_dataset(str(out), "mocap", split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == 4


def test_images_given_by_path_are_embedded_and_counted(tmp_path, card_body):
    """The Parquet holds the image bytes (it is read elsewhere), and the sizes count them as push_to_hub does."""
    images = tmp_path / "images"
    images.mkdir()
    paths = []
    for i in range(6):
        paths.append(str(images / f"{i}.jpg"))
        Path(paths[-1]).write_bytes(_jpeg(i))
    ds = datasets.Dataset.from_dict({"image": paths, "n": list(range(6))}, features=None)
    ds = ds.cast_column("image", datasets.Image())
    out = tmp_path / "export"
    summary = export_dataset(datasets.DatasetDict({"train": ds}), "pics", out, card_body_path=card_body)
    image_bytes = sum(Path(p).stat().st_size for p in paths)
    assert summary["num_bytes"] >= image_bytes  # the uncompressed size includes the embedded images
    assert summary["download_size"] >= image_bytes
    for path in paths:
        Path(path).unlink()  # another machine: the source files are not there
    loaded = datasets.load_dataset(str(out), "pics", split="train", cache_dir=str(tmp_path / "cache"))
    assert [row["image"].size for row in loaded] == [(32, 24)] * 6
    raw = loaded.cast_column("image", datasets.Image(decode=False))
    assert [row["image"]["bytes"] for row in raw] == [_jpeg(i) for i in range(6)]


def test_data_files_of_a_split_do_not_match_a_longer_splits_shards(tmp_path, card_body):
    out = tmp_path / "export"
    dd = datasets.DatasetDict({"train": make_mocap(4), "train_aug": make_mocap(6, seed=9)})
    export_dataset(dd, "mocap", out, card_body_path=card_body)
    loaded = datasets.load_dataset(str(out), "mocap", cache_dir=str(tmp_path / "cache"))
    assert (loaded["train"].num_rows, loaded["train_aug"].num_rows) == (4, 6)


# ------------------------------------------------------------------------------------------ refused inputs


def test_export_refuses_bad_inputs_before_writing_anything(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    with pytest.raises(TypeError, match="needs a datasets.DatasetDict, got Dataset"):
        export_dataset(mocap_dd["train"], "mocap", out, card_body_path=card_body)
    for name in ("data", "../escape", "a/b", ".hidden", "-x", ""):
        with pytest.raises(ValueError, match="Invalid config name"):
            export_dataset(mocap_dd, name, out, card_body_path=card_body)
    for split in ("my-split", "a/b", "train-00000"):
        with pytest.raises(ValueError, match="Invalid split name"):
            export_dataset(datasets.DatasetDict({split: mocap_dd["train"]}), "mocap", out, card_body_path=card_body)
    for size in (0, "0MB"):
        with pytest.raises(ValueError, match="max_shard_size must be positive"):
            export_dataset(mocap_dd, "mocap", out, card_body_path=card_body, max_shard_size=size)
    with pytest.raises(FileNotFoundError):
        export_dataset(mocap_dd, "mocap", out, card_body_path=tmp_path / "missing.md")
    assert not out.exists() and not (tmp_path / "escape").exists()


def test_write_card_refuses_bad_config_names_and_creates_its_folder(tmp_path, card_body):
    for name in ("data", "../escape", ""):
        with pytest.raises(ValueError, match="Invalid config name"):
            write_card(tmp_path / "x", name, MOCAP_FEATURES, card_sizes(1), card_body_path=card_body)
    assert not (tmp_path / "x").exists()
    text = write_card(tmp_path / "new" / "folder", "mocap", MOCAP_FEATURES, card_sizes(1), card_body_path=card_body)
    assert (tmp_path / "new" / "folder" / "README.md").read_text(encoding="utf-8") == text


def test_the_placeholder_card_body_is_flagged(tmp_path, mocap_dd):
    placeholder = tmp_path / "placeholder.md"
    placeholder.write_text(f"# RAT7M\n\n{hub._PLACEHOLDER_MARK}\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="still the placeholder card body"):
        export_dataset(mocap_dd, "mocap", tmp_path / "export", card_body_path=placeholder)
    with pytest.warns(UserWarning, match="still the placeholder card body"):
        write_card(tmp_path / "export", "frames", FRAMES_FEATURES, card_sizes(1), card_body_path=placeholder)


# ------------------------------------------------------------------------------------------ left behind


def test_reexport_leaves_no_temporary_folder(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    assert all_paths_under(out) == [
        "README.md", "mocap", "mocap/test-00000-of-00001.parquet", "mocap/train-00000-of-00001.parquet",
    ]  # fmt: skip


def test_an_interrupted_exports_leftovers_go_but_not_another_configs(tmp_path, mocap_dd, card_body):
    """What a killed export of mocap left is removed by the next one; a concurrent frames export's is not touched."""
    out = tmp_path / "export"
    tmp_parent = out / ".cache" / "huggingface" / "rat7m-export"
    for name in ("mocap.0123456789ab", "mocap.old-0123456789ab", "frames.0123456789ab"):
        (tmp_parent / name).mkdir(parents=True)
        (tmp_parent / name / "train-00000-of-00001.parquet").write_bytes(b"partial")
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    assert sorted(p.name for p in tmp_parent.iterdir()) == ["frames.0123456789ab"]


def test_a_card_that_cannot_be_written_leaves_the_previous_export_whole(tmp_path, mocap_dd, card_body):
    """A build note that is not UTF-8 (a file name read with surrogate escapes): the old shards and card stay."""
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    before = {f: (out / f).read_bytes() for f in ("README.md", *(f"mocap/{p.name}" for p in (out / "mocap").iterdir()))}
    bigger = datasets.DatasetDict({"train": make_mocap(50, seed=8)})
    with pytest.raises(UnicodeEncodeError):
        export_dataset(bigger, "mocap", out, card_body_path=card_body, build_notes={"skipped": ["chunk\udcff.mp4"]})
    assert all_paths_under(out) == ["README.md", "mocap", *sorted(before)[1:]]
    assert {f: (out / f).read_bytes() for f in before} == before
    loaded = datasets.load_dataset(str(out), "mocap", cache_dir=str(tmp_path / "cache"))
    assert (loaded["train"].num_rows, loaded["test"].num_rows) == (40, 9)


def test_write_card_that_fails_leaves_no_temporary_file(tmp_path, card_body):
    out = tmp_path / "export"
    write_card(out, "mocap", MOCAP_FEATURES, card_sizes(1), card_body_path=card_body)
    before = (out / "README.md").read_bytes()
    with pytest.raises(UnicodeEncodeError):
        write_card(out, "mocap", MOCAP_FEATURES, card_sizes(1), card_body_path=card_body, build_notes={"x": "\udcff"})
    assert all_paths_under(out) == ["README.md"] and (out / "README.md").read_bytes() == before


# ------------------------------------------------------------------------------------------ folder helpers


def test_exported_configs_are_the_folders_holding_shards_in_name_order(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    for config in ("mocap", "frames"):
        export_dataset(mocap_dd, config, out, card_body_path=card_body)
    (out / "images").mkdir()  # a folder of the user's, not an export
    (out / "images" / "cover.png").write_bytes(b"png")
    more = ["k", "b", "x", "d", "q", "a", "m2", "c", "z", "e"]  # made out of order: listed sorted all the same
    for config in more:
        (out / config).mkdir()
        (out / config / "train-00000-of-00001.parquet").write_bytes(b"")
    assert exported_configs(out) == sorted(["frames", "mocap", *more])


def test_load_line_is_valid_python_for_any_path():
    for where in (r"C:\data\hub", 'a "quoted" dir', "org/rat7m"):
        line = load_line(where, "frames", revision='re"v')
        call = re.fullmatch(r"datasets\.load_dataset\((.*)\)", line).group(1)
        assert eval(f"(lambda *a, **k: (a, k))({call})") == ((where, "frames"), {"revision": 're"v'})  # noqa: S307


# ------------------------------------------------------------------------------------------ push


def test_push_refuses_a_folder_it_cannot_push_before_any_request(tmp_path, mocap_dd, card_body):
    """Configs the folder does not hold, a folder without shards, a card without the config's entries."""
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    no_shards = tmp_path / "no-shards"
    no_shards.mkdir()
    (no_shards / "README.md").write_text((out / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    no_entries = tmp_path / "no-entries"
    export_dataset(mocap_dd, "mocap", no_entries, card_body_path=card_body)
    (no_entries / "README.md").write_text("---\nlicense: mit\n---\n# Hand-written\n", encoding="utf-8")
    with HubStandIn(upload_mode="auto", token=TOKEN) as standin:
        env = _env(standin.url, tmp_path / "hf_home", xet=False)
        result = _run(
            f"""
            import json
            from rat7m_builder.hub import push_folder
            errors = []
            attempts = [({str(out)!r}, ["frames"]), ({str(no_shards)!r}, None), ({str(no_entries)!r}, None)]
            for folder, configs in attempts:
                try:
                    push_folder(folder, "org/rat7m", configs=configs)
                    errors.append(None)
                except Exception as error:
                    errors.append(f"{{type(error).__name__}}: {{error}}")
            print(json.dumps(errors))
            """,
            env,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        errors = json.loads(result.stdout.strip().splitlines()[-1])
        assert ("dataset", "org/rat7m") not in standin.repos, "nothing is created for a push that cannot be made"
        assert not standin.log
    assert errors[0] == f"ValueError: {out} holds no export of 'frames' (it holds: mocap)"
    assert errors[1] == f"ValueError: {no_shards} holds no exported config: export one into it first"
    assert errors[2].startswith(f"ValueError: {no_entries / 'README.md'}: the card has no `configs:` entry for 'mocap'")


def test_push_uploads_only_the_shards_in_one_named_commit_and_cleans_up(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    (out / "mocap" / "notes.txt").write_text("mine, not for the Hub", encoding="utf-8")
    (out / "mocap" / ".DS_Store").write_bytes(b"\0")
    local = all_paths_under(out)
    with HubStandIn(upload_mode="auto", token=TOKEN) as standin:
        env = _env(standin.url, tmp_path / "hf_home", xet=False)
        result = _run(
            f"""
            from rat7m_builder.hub import push_folder
            push_folder({str(out)!r}, "org/rat7m", configs=["mocap", "mocap"])
            push_folder({str(out)!r}, "org/other", commit_message="Mocap for the lab")
            """,
            env,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        assert sorted(standin.files("org/rat7m")) == [
            ".gitattributes", "README.md", "mocap/test-00000-of-00001.parquet", "mocap/train-00000-of-00001.parquet",
        ]  # fmt: skip
        repo = standin.repo("org/rat7m")
        assert repo.commits[repo.branches["main"]].title == "Upload RAT7M (mocap)"
        other = standin.repo("org/other")
        assert other.commits[other.branches["main"]].title == "Mocap for the lab"
    assert all_paths_under(out) == local, "the staging folder and its .cache parents are gone"


def test_push_from_a_folder_it_cannot_stage_in(tmp_path, mocap_dd, card_body):
    """No staging folder can be made inside the export (read-only, or `.cache` is a file): staged elsewhere."""
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    (out / ".cache").write_text("not a folder", encoding="utf-8")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with HubStandIn(upload_mode="auto", token=TOKEN) as standin:
        env = {**_env(standin.url, tmp_path / "hf_home", xet=False), "TMPDIR": str(scratch)}
        result = _run(f"from rat7m_builder.hub import push_folder; push_folder({str(out)!r}, 'org/rat7m')", env)
        assert result.returncode == 0, result.stderr[-4000:]
        remote = standin.files("org/rat7m")
    assert remote["mocap/train-00000-of-00001.parquet"] == (out / "mocap" / "train-00000-of-00001.parquet").read_bytes()
    assert remote["README.md"] == (out / "README.md").read_bytes()
    assert not list(scratch.iterdir()), "the staging folder elsewhere is removed too"


def test_push_fails_rather_than_overwrite_a_commit_made_meanwhile(tmp_path, mocap_dd, card_body):
    """Someone pushes to the branch between the card's read and the upload: their commit and card stay."""
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    frames_dir = tmp_path / "frames-export"
    export_dataset(make_frames_dd(), "frames", frames_dir, card_body_path=card_body)
    with HubStandIn(upload_mode="auto", token=TOKEN) as standin:
        env = _env(standin.url, tmp_path / "hf_home", xet=False)
        first = _run(f"from rat7m_builder.hub import push_folder; push_folder({str(frames_dir)!r}, 'org/rat7m')", env)
        assert first.returncode == 0, first.stderr[-4000:]
        racing = _run(
            f"""
            import huggingface_hub
            from rat7m_builder.hub import push_folder

            download = huggingface_hub.HfApi.hf_hub_download

            def download_then_someone_commits(self, *args, **kwargs):
                path = download(self, *args, **kwargs)
                huggingface_hub.HfApi().upload_file(
                    path_or_fileobj=b"theirs", path_in_repo="theirs.txt", repo_id="org/rat7m", repo_type="dataset"
                )
                return path

            huggingface_hub.HfApi.hf_hub_download = download_then_someone_commits
            push_folder({str(out)!r}, "org/rat7m")
            """,
            env,
        )
        assert racing.returncode != 0 and "412" in racing.stderr, racing.stderr[-4000:]
        files = standin.files("org/rat7m")
    assert files["theirs.txt"] == b"theirs"
    assert files["README.md"] == (frames_dir / "README.md").read_bytes(), "the card of their commit is kept"
    assert not [f for f in files if f.startswith("mocap/")]


def test_a_rat7m_card_pushed_is_the_exported_card_byte_for_byte(tmp_path, mocap_dd, card_body):
    """Pushed to an empty repository, the card is the export's (one table, one notes section)."""
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body, build_notes={"note": "n1"})
    with HubStandIn(upload_mode="auto", token=TOKEN) as standin:
        env = _env(standin.url, tmp_path / "hf_home", xet=False)
        result = _run(f"from rat7m_builder.hub import push_folder; push_folder({str(out)!r}, 'org/rat7m')", env)
        assert result.returncode == 0, result.stderr[-4000:]
        card = standin.files("org/rat7m")["README.md"].decode()
    assert card == (out / "README.md").read_text(encoding="utf-8")
    assert card.count("## Configs in this repository") == 1 and card.count("## Build notes") == 1
