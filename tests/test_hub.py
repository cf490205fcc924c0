"""Hub export and push: the folder layout, the card, stock loading, and the upload through a Hub stand-in.

The pushes and the loads from the "Hub" run in subprocesses, because ``huggingface_hub`` and
``datasets`` read ``HF_ENDPOINT`` (and ``HF_HUB_DISABLE_XET``) when they are imported: a subprocess
gets them from its environment exactly as a user's shell would give them.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import assert_same_rows, raw_images
from PIL import Image as PILImage
from standins.hub import Blob, Commit, HubStandIn

from rat7m_builder import hub
from rat7m_builder.hub import export_dataset, find_card_body, load_line, push_folder, size_category

TOKEN = "hf_StandInSecretToken0123456789"
SHARD_NAME = re.compile(r"^(?P<split>\w+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.parquet$")

KEYPOINTS_3D = datasets.List(datasets.List(datasets.Value("float32"), length=3), length=20)
FRAMES_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "keypoints_3d": KEYPOINTS_3D,
        "keypoints_2d": datasets.List(datasets.List(datasets.Value("float32"), length=2), length=20),
        "frame_index": datasets.Value("int32"),
        "camera": datasets.Value("int8"),
        "recording": datasets.Value("string"),
    }
)
MOCAP_FEATURES = datasets.Features(
    {
        "keypoints_3d": KEYPOINTS_3D,
        "sample_index": datasets.Value("int32"),
        "recording": datasets.Value("string"),
        "subject": datasets.Value("int32"),
    }
)


# ------------------------------------------------------------------------------------------ fixtures


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _keypoints(rng, n: int, dims: int) -> np.ndarray:
    kp = rng.normal(0.0, 100.0, size=(n, 20, dims)).astype(np.float32)
    kp[::3, 5, :] = np.nan  # untracked marker
    kp[1, :, :] = np.nan  # a fully untracked sample
    return kp


def make_frames(n: int, seed: int = 0, recording: str = "s1-d1") -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {
            "image": [{"bytes": _jpeg(seed * 1000 + i), "path": None} for i in range(n)],
            "keypoints_3d": _keypoints(rng, n, 3).tolist(),
            "keypoints_2d": _keypoints(rng, n, 2).tolist(),
            "frame_index": [seed * 1000 + 5 * i for i in range(n)],
            "camera": [1 + i % 6 for i in range(n)],
            "recording": [recording] * n,
        },
        features=FRAMES_FEATURES,
    )


def make_mocap(n: int, seed: int = 0, recording: str = "s1-d1") -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {
            "keypoints_3d": _keypoints(rng, n, 3).tolist(),
            "sample_index": list(range(n)),
            "recording": [recording] * n,
            "subject": [int(recording[1])] * n,
        },
        features=MOCAP_FEATURES,
    )


@pytest.fixture
def frames_dd():
    return datasets.DatasetDict({"train": make_frames(12, seed=1), "test": make_frames(5, seed=2, recording="s5-d1")})


@pytest.fixture
def mocap_dd():
    return datasets.DatasetDict({"train": make_mocap(40, seed=3), "test": make_mocap(9, seed=4, recording="s5-d1")})


@pytest.fixture
def card_body(tmp_path) -> Path:
    path = tmp_path / "dataset_card.md"
    path.write_text("# RAT7M (test card)\n\nBody written by the test.\n", encoding="utf-8")
    return path


def read_card(folder: Path) -> tuple[dict, str]:
    text = (Path(folder) / "README.md").read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert match, "README.md must start with a YAML header"
    return yaml.safe_load(match.group(1)), match.group(2)


def config_table(body: str) -> dict[str, str]:
    """The "Configs in this repository" table of a card body: config → rows per split."""
    section = body.split("## Configs in this repository", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"(?m)^\| `([^`]+)` \| ([^|]+?) \|", section))


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


def by_config(entries: list[dict] | dict) -> dict[str, dict]:
    entries = entries if isinstance(entries, list) else [entries]
    return {e["config_name"]: e for e in entries}


def assert_same_dataset(loaded: datasets.Dataset, original: datasets.Dataset) -> None:
    assert loaded.features == original.features
    if "image" in original.features:
        assert raw_images(loaded)["image"] == [
            {"bytes": x["bytes"], "path": None} for x in raw_images(original)["image"]
        ], "image bytes must come back unchanged"
        loaded, original = loaded.remove_columns("image"), original.remove_columns("image")
    assert_same_rows(loaded, original)


# ------------------------------------------------------------------------------------------ export


def test_export_layout_and_card(tmp_path, frames_dd, mocap_dd, card_body):
    out = tmp_path / "export"
    summary = export_dataset(
        frames_dd, "frames", out, card_body_path=card_body, build_notes={"source": "fabricated", "frame_step": 5}
    )
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)

    assert files_under(out) == [
        "README.md",
        "frames/test-00000-of-00001.parquet",
        "frames/train-00000-of-00001.parquet",
        "mocap/test-00000-of-00001.parquet",
        "mocap/train-00000-of-00001.parquet",
    ], "no temporary folder may be left behind"
    assert summary["files"] == ["frames/train-00000-of-00001.parquet", "frames/test-00000-of-00001.parquet"]
    assert summary["splits"]["train"]["num_examples"] == 12 and summary["num_examples"] == 17

    meta, body = read_card(out)
    assert meta["pretty_name"] == "RAT7M"
    assert meta["task_categories"] == ["keypoint-detection"]
    assert set(meta["tags"]) >= {
        "pose-estimation", "animal-pose", "3d-pose", "motion-capture", "multiview", "rat", "neuroscience",
    }  # fmt: skip
    assert meta["size_categories"] == ["n<1K"]
    # The licence is not invented: "other", named and linked as the figshare record.
    assert meta["license"] == "other"
    assert meta["license_name"] == "see-the-figshare-record"
    assert "10.6084/m9.figshare.c.5295370" in meta["license_link"]
    readme = (out / "README.md").read_text(encoding="utf-8").lower()
    for invented in ("cc-by", "creative commons", "mit license", "apache", "cc0", "odc-"):
        assert invented not in readme

    configs = {c["config_name"]: c for c in meta["configs"]}
    assert configs["frames"]["data_files"] == [
        {"split": "train", "path": "frames/train-*"},
        {"split": "test", "path": "frames/test-*"},
    ]
    assert configs["mocap"]["data_files"] == [
        {"split": "train", "path": "mocap/train-*"},
        {"split": "test", "path": "mocap/test-*"},
    ]
    infos = by_config(meta["dataset_info"])
    assert datasets.Features._from_yaml_list(infos["frames"]["features"]) == FRAMES_FEATURES
    assert datasets.Features._from_yaml_list(infos["mocap"]["features"]) == MOCAP_FEATURES
    assert {s["name"]: s["num_examples"] for s in infos["mocap"]["splits"]} == {"train": 40, "test": 9}
    assert all(s["num_bytes"] > 0 for s in infos["frames"]["splits"])
    parquet_bytes = sum(p.stat().st_size for p in (out / "frames").iterdir())
    assert infos["frames"]["download_size"] == parquet_bytes

    # Body: the card body file, then the build notes of the configs that had some.
    assert body.lstrip().startswith("# RAT7M (test card)")
    assert "## Build notes" in body and "### `frames`" in body and "**frame_step**: 5" in body
    assert "### `mocap`" not in body
    # The human-readable list of configs shows every config of the folder.
    assert config_table(body) == {"frames": "train: 12, test: 5", "mocap": "train: 40, test: 9"}


def test_stock_load_dataset_reads_the_export(tmp_path, frames_dd, mocap_dd, card_body):
    out = tmp_path / "export"
    export_dataset(frames_dd, "frames", out, card_body_path=card_body)
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    for config, original in (("frames", frames_dd), ("mocap", mocap_dd)):
        loaded = datasets.load_dataset(str(out), config, cache_dir=str(tmp_path / f"cache-{config}"))
        assert list(loaded) == ["train", "test"]
        for split in original:
            assert_same_dataset(loaded[split], original[split])
    # NaN survives and keypoints come back as (20, 3) arrays.
    kp = loaded["train"].with_format("numpy")[:]["keypoints_3d"]
    assert kp.shape == (40, 20, 3) and kp.dtype == np.float32
    assert np.isnan(kp[1]).all() and np.isnan(kp[0, 5]).all() and not np.isnan(kp[2]).any()


def test_second_export_keeps_the_first_and_reexport_replaces_only_its_config(tmp_path, frames_dd, mocap_dd, card_body):
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body, build_notes={"note": "mocap-v1"})
    mocap_files = {f: (out / f).read_bytes() for f in files_under(out) if f.startswith("mocap/")}
    mocap_info = by_config(read_card(out)[0]["dataset_info"])["mocap"]

    export_dataset(frames_dd, "frames", out, card_body_path=card_body, max_shard_size="10KB")
    assert len(list((out / "frames").iterdir())) > 1
    # Re-export frames smaller: its old shards go, mocap stays byte for byte, both stay in the card.
    smaller = datasets.DatasetDict({"train": make_frames(3, seed=7)})
    export_dataset(smaller, "frames", out, card_body_path=card_body, build_notes={"note": "frames-v2"})

    assert files_under(out / "frames") == ["train-00000-of-00001.parquet"]
    assert {f: (out / f).read_bytes() for f in files_under(out) if f.startswith("mocap/")} == mocap_files
    meta, body = read_card(out)
    assert sorted(c["config_name"] for c in meta["configs"]) == ["frames", "mocap"]
    infos = by_config(meta["dataset_info"])
    assert infos["mocap"] == mocap_info
    assert [(s["name"], s["num_examples"]) for s in infos["frames"]["splits"]] == [("train", 3)]
    assert by_config(meta["configs"])["frames"]["data_files"] == [{"split": "train", "path": "frames/train-*"}]
    assert "mocap-v1" in body and "frames-v2" in body
    loaded = datasets.load_dataset(str(out), "frames", cache_dir=str(tmp_path / "cache"))
    assert list(loaded) == ["train"]
    assert_same_dataset(loaded["train"], smaller["train"])


HAND_WRITTEN_CARD = """---
license: mit
language: [en]
my_own_key: kept
configs:
- config_name: extra
  data_files: extra/*.parquet
---

# Our lab's RAT7M mirror

Written by hand: rat7m must not rewrite this text.
"""


def test_the_card_is_as_readable_as_the_shards(tmp_path, mocap_dd, card_body):
    # A shared export folder: others must be able to read the card (the umask decides, as for the shards).
    previous = os.umask(0o022)
    try:
        out = tmp_path / "export"
        export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    finally:
        os.umask(previous)
    modes = {name: stat.S_IMODE(os.stat(out / name).st_mode) for name in files_under(out)}
    assert set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE(os.stat(out / "mocap").st_mode) == 0o755  # the config folder, renamed into place


def test_export_into_a_folder_with_a_hand_written_readme_keeps_its_text_and_keys(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    (out / "extra").mkdir(parents=True)
    datasets.Dataset.from_dict({"a": [1]}).to_parquet(str(out / "extra" / "data.parquet"))
    (out / "README.md").write_text(HAND_WRITTEN_CARD, encoding="utf-8")
    with pytest.warns(UserWarning, match="not written by rat7m"):
        export_dataset(mocap_dd, "mocap", out, card_body_path=card_body, build_notes={"note": "x"})
    meta, body = read_card(out)
    assert body == HAND_WRITTEN_CARD.split("---\n", 2)[2], "the hand-written text is kept as it is"
    assert (meta["license"], meta["language"], meta["my_own_key"]) == ("mit", ["en"], "kept")
    assert by_config(meta["configs"]) == {
        "extra": {"config_name": "extra", "data_files": "extra/*.parquet"},
        "mocap": {
            "config_name": "mocap",
            "data_files": [{"split": "train", "path": "mocap/train-*"}, {"split": "test", "path": "mocap/test-*"}],
        },
    }
    assert set(by_config(meta["dataset_info"])) == {"mocap"}
    for config, rows in (("mocap", 40), ("extra", 1)):
        loaded = datasets.load_dataset(str(out), config, split="train", cache_dir=str(tmp_path / f"c-{config}"))
        assert loaded.num_rows == rows


def test_a_card_written_by_an_earlier_rat7m_is_recognised(tmp_path, frames_dd, mocap_dd, card_body):
    """Cards without the generated-sections mark (earlier versions): body replaced, build notes kept."""
    out = tmp_path / "export"
    export_dataset(frames_dd, "frames", out, card_body_path=card_body, build_notes={"note": "frames-notes"})
    meta, body = read_card(out)
    legacy_body = "# Old RAT7M body\n\n## Build notes\n\n" + body.split("## Build notes\n\n", 1)[1]
    legacy = "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n" + legacy_body
    (out / "README.md").write_text(legacy, encoding="utf-8")
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    meta, body = read_card(out)
    assert "Old RAT7M body" not in body and body.lstrip().startswith("# RAT7M (test card)")
    assert "frames-notes" in body and body.count("## Build notes") == 1
    assert sorted(by_config(meta["configs"])) == ["frames", "mocap"]
    assert config_table(body) == {"frames": "train: 12, test: 5", "mocap": "train: 40, test: 9"}


def test_a_legacy_card_without_build_notes_is_recognised_by_its_licence_name(tmp_path, frames_dd, mocap_dd, card_body):
    """Earlier rat7m cards of configs exported without notes have no notes section: pretty_name + license_name."""
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    meta, _ = read_card(out)
    legacy = "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n# Old RAT7M body\n"
    (out / "README.md").write_text(legacy, encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_dataset(frames_dd, "frames", out, card_body_path=card_body)
    assert not [w for w in caught if "not written by rat7m" in str(w.message)]
    meta, body = read_card(out)
    assert "Old RAT7M body" not in body and body.lstrip().startswith("# RAT7M (test card)")
    assert config_table(body) == {"frames": "train: 12, test: 5", "mocap": "train: 40, test: 9"}


def test_reexport_rewrites_the_keys_rat7m_owns_and_keeps_the_users(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    meta, body = read_card(out)
    # What an older rat7m wrote (still its card: the generated-sections mark is in the body), plus a user's key.
    meta.update(tags=["rat"], task_categories=["other"], license_link="https://example.org/old", my_own_key="kept")
    (out / "README.md").write_text("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n" + body, encoding="utf-8")
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    meta, _ = read_card(out)
    assert {k: meta[k] for k in hub.CARD_METADATA} == hub.CARD_METADATA
    assert meta["my_own_key"] == "kept"


def test_size_category_follows_the_largest_config_not_the_old_card(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    assert read_card(out)[0]["size_categories"] == ["n<1K"]
    # Only the card is written: the 1500 rows need not exist for the size category to count them.
    sizes = {"train": {"num_examples": 1500, "num_bytes": 1, "download_size": 1}}
    hub.write_card(out, "frames", FRAMES_FEATURES, sizes, card_body_path=card_body)
    assert read_card(out)[0]["size_categories"] == ["1K<n<10K"]


def test_export_refuses_a_readme_whose_yaml_header_is_not_a_mapping(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    out.mkdir()
    (out / "README.md").write_text("---\n- a\n---\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"README\.md .*must be a mapping"):
        export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    assert files_under(out) == ["README.md"] and (out / "README.md").read_text() == "---\n- a\n---\n"


def test_merging_a_card_into_itself_changes_nothing(tmp_path, frames_dd, mocap_dd, card_body):
    out = tmp_path / "export"
    export_dataset(frames_dd, "frames", out, card_body_path=card_body, build_notes={"a": 1})
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body, build_notes={"b": [1, 2]})
    text = (out / "README.md").read_text(encoding="utf-8")
    card = hub._parse_card(text)
    assert card.ours
    for configs in (["frames"], ["mocap"], ["frames", "mocap"]):
        assert hub._merge_cards(card, card, configs) == text
    assert hub._merge_cards(None, card, ["frames", "mocap"]) == text
    # A card holding only mocap, merged into one holding only frames: both, notes of both.
    alone = tmp_path / "alone"
    export_dataset(mocap_dd, "mocap", alone, card_body_path=card_body, build_notes={"b": [1, 2]})
    only_frames = hub._merge_cards(None, card, ["frames"])
    merged = hub._merge_cards(
        hub._parse_card(only_frames), hub._parse_card((alone / "README.md").read_text()), ["mocap"]
    )
    assert merged == text
    with pytest.raises(ValueError, match="YAML header cannot be read"):
        hub._parse_card("---\nconfigs: [unclosed\n---\nbody\n")


def test_failed_export_leaves_the_previous_one_untouched(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    before = {f: (out / f).read_bytes() for f in files_under(out)}
    broken = datasets.DatasetDict(
        {"train": make_mocap(5), "test": make_mocap(5).cast_column("subject", datasets.Value("int64"))}
    )
    with pytest.raises(ValueError, match="features"):
        export_dataset(broken, "mocap", out, card_body_path=card_body)
    assert {f: (out / f).read_bytes() for f in files_under(out)} == before
    assert not (out / ".cache").exists()


def test_max_shard_size_splits_like_push_to_hub(tmp_path, card_body):
    big = datasets.DatasetDict({"train": make_frames(30, seed=5)})
    max_shard_size = big["train"].data.nbytes // 4
    out = tmp_path / "export"
    summary = export_dataset(big, "frames", out, card_body_path=card_body, max_shard_size=max_shard_size)
    names = sorted(os.listdir(out / "frames"))
    # push_to_hub's rule, on the uncompressed size it reports (dataset_info num_bytes).
    expected = int(summary["splits"]["train"]["num_bytes"] / max_shard_size) + 1
    assert expected > 2
    assert len(names) == expected == summary["splits"]["train"]["num_shards"]
    assert names == [f"train-{i:05d}-of-{expected:05d}.parquet" for i in range(expected)]
    assert all(SHARD_NAME.match(n) for n in names)
    assert sum(pq.read_metadata(out / "frames" / n).num_rows for n in names) == 30
    loaded = datasets.load_dataset(str(out), "frames", split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded["frame_index"] == big["train"]["frame_index"]  # shards are contiguous, order kept


def test_card_body_lookup_and_front_matter(tmp_path, mocap_dd, monkeypatch):
    with pytest.raises(FileNotFoundError):
        find_card_body(tmp_path / "missing.md")
    # A source checkout / editable install finds dataset_card.md at the repository root.
    root = Path(hub.__file__).resolve().parent.parent
    if (root / "dataset_card.md").is_file():
        assert find_card_body() == root / "dataset_card.md"
    env_body = tmp_path / "env_card.md"
    env_body.write_text("---\nlicense: cc-by-4.0\nlanguage_creators: [found]\n---\n# From env\n", encoding="utf-8")
    monkeypatch.setenv("RAT7M_CARD_BODY", str(env_body))
    assert find_card_body() == env_body
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out)
    meta, body = read_card(out)
    assert body.lstrip().startswith("# From env") and "---" not in body
    assert meta["language_creators"] == ["found"]  # extra metadata of the body file is kept ...
    assert meta["license"] == "other"  # ... but it cannot put a licence in the card


def test_small_helpers():
    assert load_line("org/rat7m", "frames") == 'datasets.load_dataset("org/rat7m", "frames")'
    assert (
        load_line("org/rat7m", "mocap", revision="v1") == 'datasets.load_dataset("org/rat7m", "mocap", revision="v1")'
    )
    assert [size_category(n) for n in (0, 999, 1000, 112_730, 1_180_000, 7_080_000, 20_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "100K<n<1M", "1M<n<10M", "1M<n<10M", "10M<n<100M",
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------ push


def _env(hub_url: str, home: Path, *, xet: bool, token: str | None = TOKEN) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(
        HF_ENDPOINT=hub_url,
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONUNBUFFERED="1",
    )
    if token is not None:
        env["HF_TOKEN"] = token  # standard token discovery: nothing passes it explicitly
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    return env


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=180
    )


def _load_from_hub(
    repo_id: str, configs: list[str], save_to: Path, env: dict, revision: str | None = None
) -> dict[str, datasets.DatasetDict]:
    """Stock load_dataset("org/name", config) in a fresh process, saved to disk for comparison here."""
    result = _run(
        f"""
        import datasets
        for config in {configs!r}:
            ds = datasets.load_dataset({repo_id!r}, config, revision={revision!r})
            ds.save_to_disk({str(save_to)!r} + "/" + config)
        """,
        env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return {c: datasets.load_from_disk(str(save_to / c)) for c in configs}


@pytest.mark.parametrize(
    "upload_mode, xet",
    [
        pytest.param("auto", False, id="lfs-batch-and-put"),  # HF_HUB_DISABLE_XET=1: LFS for the shards
        pytest.param("regular", True, id="xet-pipeline-inline"),  # hf_xet installed: upload_folder's pipeline
    ],
)
def test_push_then_stock_load_from_the_hub(tmp_path, frames_dd, mocap_dd, card_body, upload_mode, xet):
    out = tmp_path / "export"
    export_dataset(frames_dd, "frames", out, card_body_path=card_body, max_shard_size="20KB")
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    assert len(os.listdir(out / "frames")) > 1

    with HubStandIn(upload_mode=upload_mode, token=TOKEN) as standin:
        env = _env(standin.url, tmp_path / "hf_home", xet=xet)
        # Push twice: the second run must find everything in place and upload nothing.
        push = _run(
            f"""
            from rat7m_builder.hub import push_folder, load_line
            for attempt in range(2):
                print("URL", push_folder({str(out)!r}, "org/rat7m"), flush=True)
                print("PUSHED", attempt, flush=True)
            print(load_line("org/rat7m", "frames"))
            """,
            env,
        )
        output = push.stdout + push.stderr
        assert push.returncode == 0, push.stderr[-4000:]
        assert TOKEN not in output
        assert f"URL {standin.url}/datasets/org/rat7m" in push.stdout
        assert 'datasets.load_dataset("org/rat7m", "frames")' in push.stdout

        # What the Hub holds: exactly the export (+ the .gitattributes of a new repository).
        remote = standin.files("org/rat7m")
        assert sorted(remote) == [".gitattributes", *files_under(out)]
        assert all(remote[f] == (out / f).read_bytes() for f in files_under(out))
        repo = standin.repo("org/rat7m")
        assert len(repo.commits) == 2, "initial commit + one upload commit; the re-push commits nothing"
        writes = [r for r in standin.log if r["method"] in ("POST", "PUT") and "/lfs-upload/" not in r["path"]]
        assert all(r["authorized"] for r in writes)
        second = standin.log[[i for i, r in enumerate(standin.log) if r["path"] == "/api/repos/create"][1] :]
        assert not [r for r in second if r["method"] == "PUT" or "/commit/" in r["path"]]
        if xet:
            assert not standin.requests("PUT"), "regular mode: contents go inline in the commit"
        else:
            lfs_puts = standin.requests("PUT", "/lfs-upload/")
            assert len(lfs_puts) == sum(f.endswith(".parquet") for f in files_under(out))

        # Stock datasets reads the same rows back from the Hub.
        loaded = _load_from_hub("org/rat7m", ["frames", "mocap"], tmp_path / "from_hub", env)
        for config, original in (("frames", frames_dd), ("mocap", mocap_dd)):
            assert list(loaded[config]) == ["train", "test"]
            for split in original:
                assert_same_dataset(loaded[config][split], original[split])

        # Re-export with fewer shards and push to a branch: stale shards are deleted there, main is untouched.
        main_head = standin.head("org/rat7m")
        export_dataset(frames_dd, "frames", out, card_body_path=card_body)
        push = _run(
            f"""
            from rat7m_builder.hub import push_folder
            print("URL", push_folder({str(out)!r}, "org/rat7m", revision="dev"))
            """,
            env,
        )
        assert push.returncode == 0, push.stderr[-4000:]
        assert TOKEN not in push.stdout + push.stderr
        assert f"URL {standin.url}/datasets/org/rat7m/tree/dev" in push.stdout
        assert standin.head("org/rat7m") == main_head
        dev = standin.files("org/rat7m", "dev")
        assert sorted(f for f in dev if f.startswith("frames/")) == [
            "frames/test-00000-of-00001.parquet",
            "frames/train-00000-of-00001.parquet",
        ]


def _put_files(standin: HubStandIn, repo_id: str, files: dict[str, bytes]) -> str:
    """Commit files to a stand-in repository directly (as if someone had pushed them); return the commit."""
    with standin.lock:
        repo = standin.repos.get(("dataset", repo_id)) or standin.create_repo("dataset", repo_id)
        head = repo.commits[repo.branches["main"]]
        sha = standin._new_sha(repo_id, head.sha, "by hand")
        blobs = {path: Blob(data, lfs=path.endswith(".parquet")) for path, data in files.items()}
        tree = {**head.files, **blobs}
        repo.commits[sha] = Commit(sha=sha, parent=head.sha, title="by hand", date=head.date, files=tree)
        repo.branches["main"] = sha
    return sha


def _push(env: dict, folder: Path, repo_id: str, **kwargs) -> subprocess.CompletedProcess:
    return _run(
        f"""
        from rat7m_builder.hub import push_folder
        print("URL", push_folder({str(folder)!r}, {repo_id!r}, **{kwargs!r}))
        """,
        env,
    )


def test_pushing_one_config_after_another_keeps_both_loadable(tmp_path, frames_dd, mocap_dd, card_body):
    """What `rat7m push frames` then `rat7m push mocap` do: two exports, each pushed from its own folder."""
    frames_dir, mocap_dir = tmp_path / "frames-export", tmp_path / "mocap-export"
    notes = {"n": "f1"}
    export_dataset(frames_dd, "frames", frames_dir, card_body_path=card_body, max_shard_size="20KB", build_notes=notes)
    export_dataset(mocap_dd, "mocap", mocap_dir, card_body_path=card_body, build_notes={"n": "m1"})
    frames_shards = files_under(frames_dir / "frames")
    assert len(frames_shards) > 2

    with HubStandIn(upload_mode="auto", token=TOKEN) as standin:
        env = _env(standin.url, tmp_path / "hf_home", xet=False)
        for folder in (frames_dir, mocap_dir):
            pushed = _push(env, folder, "org/rat7m")
            assert pushed.returncode == 0, pushed.stderr[-4000:]
        remote = standin.files("org/rat7m")
        assert sorted(remote) == [".gitattributes", "README.md"] + [f"frames/{f}" for f in frames_shards] + [
            "mocap/test-00000-of-00001.parquet",
            "mocap/train-00000-of-00001.parquet",
        ]
        (tmp_path / "hub-card").mkdir()
        (tmp_path / "hub-card" / "README.md").write_bytes(remote["README.md"])
        meta, body = read_card(tmp_path / "hub-card")
        assert sorted(by_config(meta["configs"])) == ["frames", "mocap"]
        assert sorted(by_config(meta["dataset_info"])) == ["frames", "mocap"]
        assert config_table(body) == {"frames": "train: 12, test: 5", "mocap": "train: 40, test: 9"}
        assert "### `frames`" in body and "### `mocap`" in body and body.count("## Build notes") == 1
        loaded = _load_from_hub("org/rat7m", ["frames", "mocap"], tmp_path / "from_hub", env)
        for config, original in (("frames", frames_dd), ("mocap", mocap_dd)):
            for split in original:
                assert_same_dataset(loaded[config][split], original[split])

        # frames again, smaller (one shard, one split): its stale shards go; mocap and its entries stay.
        smaller = datasets.DatasetDict({"train": make_frames(3, seed=7)})
        again = tmp_path / "frames-again"
        export_dataset(smaller, "frames", again, card_body_path=card_body, build_notes={"n": "f2"})
        pushed = _push(env, again, "org/rat7m")
        assert pushed.returncode == 0, pushed.stderr[-4000:]
        after = standin.files("org/rat7m")
        assert sorted(f for f in after if f.startswith("frames/")) == ["frames/train-00000-of-00001.parquet"]
        assert {f: after[f] for f in after if f.startswith("mocap/")} == {
            f: remote[f] for f in remote if f.startswith("mocap/")
        }
        (tmp_path / "hub-card" / "README.md").write_bytes(after["README.md"])
        meta, body = read_card(tmp_path / "hub-card")
        assert by_config(meta["dataset_info"])["mocap"] == by_config(read_card(mocap_dir)[0]["dataset_info"])["mocap"]
        assert config_table(body) == {"frames": "train: 3", "mocap": "train: 40, test: 9"}
        assert "f2" in body and "f1" not in body and "m1" in body
        loaded = _load_from_hub("org/rat7m", ["frames", "mocap"], tmp_path / "from_hub_2", env)
        assert list(loaded["frames"]) == ["train"]
        assert_same_dataset(loaded["frames"]["train"], smaller["train"])
        assert_same_dataset(loaded["mocap"]["test"], mocap_dd["test"])


def test_push_onto_a_card_rat7m_did_not_write(tmp_path, mocap_dd, card_body):
    """A hand-written card keeps its text and YAML keys; a card whose YAML cannot be read is not touched."""
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    extra = io.BytesIO()
    datasets.Dataset.from_dict({"a": [1, 2]}).to_parquet(extra)
    broken = b"---\nconfigs: [unclosed\n---\nHand-written.\n"
    with HubStandIn(upload_mode="auto", token=TOKEN) as standin:
        hand = {"README.md": HAND_WRITTEN_CARD.encode(), "extra/data.parquet": extra.getvalue()}
        _put_files(standin, "org/hand", hand)
        broken_head = _put_files(standin, "org/broken", {"README.md": broken})
        env = _env(standin.url, tmp_path / "hf_home", xet=False)

        pushed = _push(env, out, "org/hand")
        assert pushed.returncode == 0, pushed.stderr[-4000:]
        assert "not written by rat7m" in pushed.stderr
        card = standin.files("org/hand")["README.md"].decode()
        assert card.endswith(HAND_WRITTEN_CARD.split("---\n", 2)[2]), "the hand-written text is kept"
        meta = yaml.safe_load(card.split("---\n")[1])
        assert (meta["license"], meta["my_own_key"]) == ("mit", "kept")
        assert sorted(by_config(meta["configs"])) == ["extra", "mocap"]
        loaded = _load_from_hub("org/hand", ["mocap", "extra"], tmp_path / "from_hub", env)
        assert_same_dataset(loaded["mocap"]["test"], mocap_dd["test"])
        assert loaded["extra"]["train"]["a"] == [1, 2]

        refused = _push(env, out, "org/broken")
        assert refused.returncode != 0 and "YAML header cannot be read" in refused.stderr
        assert standin.head("org/broken") == broken_head and standin.files("org/broken")["README.md"] == broken


def test_export_matches_stock_push_to_hub(tmp_path, mocap_dd, card_body):
    """Our folder and `DatasetDict.push_to_hub` give the same files, rows, configs and dataset_info."""
    saved = tmp_path / "saved"
    mocap_dd.save_to_disk(str(saved))
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body, max_shard_size="8KB")

    with HubStandIn(upload_mode="auto") as standin:
        env = _env(standin.url, tmp_path / "hf_home", xet=False)
        result = _run(
            f"""
            import datasets
            datasets.load_from_disk({str(saved)!r}).push_to_hub("org/reference", "mocap", max_shard_size="8KB")
            """,
            env,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        reference = standin.files("org/reference")

    ours = files_under(out)
    assert sorted(f for f in reference if f.endswith(".parquet")) == [f for f in ours if f.endswith(".parquet")]
    assert len([f for f in ours if f.startswith("mocap/train-")]) > 1
    for name in (f for f in ours if f.endswith(".parquet")):
        theirs_table = pq.read_table(io.BytesIO(reference[name]))
        ours_table = pq.read_table(out / name)
        assert ours_table.schema == theirs_table.schema
        assert ours_table.schema.metadata == theirs_table.schema.metadata  # the `datasets` features
        assert_same_rows(ours_table.to_pylist(), theirs_table.to_pylist())

    theirs_meta = yaml.safe_load(reference["README.md"].decode().split("---")[1])
    ours_meta, _ = read_card(out)
    assert by_config(ours_meta["configs"]) == by_config(theirs_meta["configs"])
    assert by_config(ours_meta["dataset_info"]) == by_config(theirs_meta["dataset_info"])
    # One config: `dataset_info:` is a mapping, `configs:` a list, as push_to_hub writes them.
    assert type(ours_meta["dataset_info"]) is type(theirs_meta["dataset_info"]) is dict
    assert type(ours_meta["configs"]) is type(theirs_meta["configs"]) is list


def test_push_with_a_bad_token_fails_without_printing_it(tmp_path, mocap_dd, card_body):
    out = tmp_path / "export"
    export_dataset(mocap_dd, "mocap", out, card_body_path=card_body)
    wrong = "hf_WrongSecretTokenABCDEFGHIJ"
    with HubStandIn(token=TOKEN) as standin:
        env = _env(standin.url, tmp_path / "hf_home", xet=False, token=wrong)
        result = _run(
            f"""
            from rat7m_builder.hub import push_folder
            push_folder({str(out)!r}, "org/rat7m")
            """,
            env,
        )
        assert result.returncode != 0
        assert "401" in result.stderr or "Unauthorized" in result.stderr or "credentials" in result.stderr
        assert wrong not in result.stdout + result.stderr
        assert ("dataset", "org/rat7m") not in standin.repos


def test_interrupted_push_resumes_without_uploading_again(tmp_path, frames_dd, card_body):
    """An upload cut short before its commit: the re-run skips the LFS objects already uploaded."""
    out = tmp_path / "export"
    export_dataset(frames_dd, "frames", out, card_body_path=card_body, max_shard_size="20KB")
    shards = [f for f in files_under(out) if f.endswith(".parquet")]
    with HubStandIn(upload_mode="auto", token=TOKEN) as standin:
        standin.fail_commits = 1
        env = _env(standin.url, tmp_path / "hf_home", xet=False)
        code = f"""
            from rat7m_builder.hub import push_folder
            print("URL", push_folder({str(out)!r}, "org/rat7m", private=True))
            """
        first = _run(code, env)
        assert first.returncode != 0 and "503" in first.stderr, first.stderr[-3000:]
        assert len(standin.repo("org/rat7m").commits) == 1  # nothing committed ...
        assert len(standin.requests("PUT", "/lfs-upload/")) == len(shards)  # ... but the shards went up
        n_before = len(standin.log)
        second = _run(code, env)
        assert second.returncode == 0, second.stderr[-4000:]
        assert TOKEN not in first.stdout + first.stderr + second.stdout + second.stderr
        assert not [r for r in standin.log[n_before:] if r["method"] == "PUT"], "no shard is uploaded twice"
        assert sorted(standin.files("org/rat7m")) == [".gitattributes", *files_under(out)]
        assert standin.repo("org/rat7m").private
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(f"{standin.url}/api/datasets/org/rat7m")
        assert anonymous.value.code == 404 and anonymous.value.headers["X-Error-Code"] == "RepoNotFound"


def test_push_folder_refuses_a_folder_without_card(tmp_path):
    with pytest.raises(FileNotFoundError, match="README.md"):
        push_folder(tmp_path, "org/rat7m")


def test_standin_answers_like_the_hub(tmp_path):
    """Direct probes of the stand-in's error shapes (what the clients key their exceptions on)."""
    with HubStandIn() as standin:
        standin.create_repo("dataset", "org/x")

        def status(path, method="GET", headers=None):
            request = urllib.request.Request(standin.url + path, method=method, headers=headers or {})
            try:
                with urllib.request.urlopen(request) as response:
                    return response.status, dict(response.headers), response.read()
            except urllib.error.HTTPError as err:
                return err.code, dict(err.headers), err.read()

        code, headers, _ = status("/api/datasets/org/missing")
        assert (code, headers["X-Error-Code"]) == (404, "RepoNotFound")
        code, headers, _ = status("/api/datasets/org/x/revision/nope")
        assert (code, headers["X-Error-Code"]) == (404, "RevisionNotFound")
        code, headers, _ = status("/datasets/org/x/resolve/main/nope.txt", "HEAD")
        assert (code, headers["X-Error-Code"]) == (404, "EntryNotFound")
        code, headers, body = status("/datasets/org/x/resolve/main/.gitattributes", headers={"Range": "bytes=2-5"})
        assert code == 206 and len(body) == 4 and headers["Content-Range"].startswith("bytes 2-5/")
        assert headers["X-Repo-Commit"] == standin.head("org/x") and headers["ETag"]
        code, _, _ = status("/datasets/org/x/resolve/main/.gitattributes", headers={"Range": "bytes=99999-"})
        assert code == 416
        code, _, body = status("/api/datasets/org/x/tree/main")
        assert code == 200 and json.loads(body)[0]["path"] == ".gitattributes"


def test_rat7m_push_command_end_to_end(tmp_path, sample_release):
    """`rat7m push` builds, exports and uploads; stock `datasets` loads the same rows back from the Hub."""
    with HubStandIn(upload_mode="auto", token=TOKEN) as standin:
        env = _env(standin.url, tmp_path / "hf_home", xet=False)
        command = [
            "rat7m", "push", "cameras", "--repo-id", "org/rat7m", "--data-dir", sample_release.root,
            "--cache-dir", str(tmp_path / "cache"), "--workdir", str(tmp_path / "export"),
        ]  # fmt: skip
        pushed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        assert pushed.returncode == 0, pushed.stderr[-4000:]
        assert f"{standin.url}/datasets/org/rat7m" in pushed.stdout
        assert 'datasets.load_dataset("org/rat7m", "cameras")' in pushed.stdout
        assert TOKEN not in pushed.stdout + pushed.stderr
        loaded = _load_from_hub("org/rat7m", ["cameras"], tmp_path / "loaded", env)["cameras"]
    local = datasets.load_dataset(str(tmp_path / "export"), "cameras")
    for split in ("train", "test"):
        assert_same_rows(loaded[split], local[split])
    assert loaded["test"]["camera"] == [1, 2, 3, 4, 5, 6]


def _rat7m(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["rat7m", *args], env=env, capture_output=True, text=True, timeout=180)


def test_rat7m_push_exports_to_a_temporary_folder_and_deletes_it(tmp_path, sample_release):
    """Two `rat7m push` of different configs to one branch: both load from it; no temporary export is left."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    build = ["--data-dir", sample_release.root, "--cache-dir", str(tmp_path / "cache")]
    with HubStandIn(upload_mode="auto", token=TOKEN) as standin:
        env = {**_env(standin.url, tmp_path / "hf_home", xet=False), "TMPDIR": str(scratch)}
        for config in ("cameras", "mocap"):
            pushed = _rat7m(["push", config, "--repo-id", "org/rat7m", "--revision", "dev", *build], env)
            assert pushed.returncode == 0, pushed.stderr[-4000:]
            assert f'Load it with: datasets.load_dataset("org/rat7m", "{config}", revision="dev")' in pushed.stdout
            assert f"{standin.url}/datasets/org/rat7m/tree/dev" in pushed.stdout
            assert not list(scratch.iterdir()), "the temporary export is deleted"
        assert (
            sorted(f.split("/")[0] for f in standin.files("org/rat7m", "dev") if "/" in f)
            == ["cameras"] * 2 + ["mocap"] * 2
        )
        assert "README.md" not in standin.files("org/rat7m"), "main is untouched"
        loaded = _load_from_hub("org/rat7m", ["cameras", "mocap"], tmp_path / "loaded", env, revision="dev")
        assert loaded["cameras"]["test"]["camera"] == [1, 2, 3, 4, 5, 6]
        assert loaded["mocap"]["test"].num_rows > 0

        # A push that fails (here: a wrong token) deletes its temporary export too, and says why in one line.
        env["HF_TOKEN"] = "hf_WrongSecretTokenABCDEFGHIJ"
        failed = _rat7m(["push", "cameras", "--repo-id", "org/rat7m", *build], env)
        assert failed.returncode == 1 and "Traceback" not in failed.stderr
        assert "rat7m push: error:" in failed.stderr and "hf_WrongSecretTokenABCDEFGHIJ" not in failed.stderr
        assert not list(scratch.iterdir())


def test_rat7m_push_from_an_export_folder(tmp_path, sample_release):
    """`export` two configs into one folder, then `push --from` it: nothing is built, both configs go up."""
    from rat7m_builder.cli import main

    to = tmp_path / "hub"
    build = ["--data-dir", sample_release.root, "--cache-dir", str(tmp_path / "cache")]
    for config in ("cameras", "mocap"):
        assert main(["export", config, *build, "--to", str(to)]) == 0
    with HubStandIn(upload_mode="auto", token=TOKEN) as standin:
        env = _env(standin.url, tmp_path / "hf_home", xet=False)
        refused = _rat7m(["push", "mocap", "--from", str(to), "--repo-id", "org/rat7m", "--frame-step", "2"], env)
        assert refused.returncode == 1 and "--frame-step only apply when push builds" in refused.stderr
        assert ("dataset", "org/rat7m") not in standin.repos

        pushed = _rat7m(["push", "--from", str(to), "--repo-id", "org/rat7m"], env)
        assert pushed.returncode == 0, pushed.stderr[-4000:]
        assert 'Load it with: datasets.load_dataset("org/rat7m", "cameras")' in pushed.stdout
        assert 'Load it with: datasets.load_dataset("org/rat7m", "mocap")' in pushed.stdout
        remote = standin.files("org/rat7m")
        assert sorted(remote) == [".gitattributes", *files_under(to)]
        assert all(remote[f] == (to / f).read_bytes() for f in files_under(to)), "the card too, byte for byte"
        loaded = _load_from_hub("org/rat7m", ["cameras", "mocap"], tmp_path / "loaded", env)
    for config in ("cameras", "mocap"):
        local = datasets.load_dataset(str(to), config, cache_dir=str(tmp_path / f"local-{config}"))
        for split in ("train", "test"):
            assert_same_rows(loaded[config][split], local[split])
