"""Config keywords as users pass them: unknown ones, `datasets`' ``name=``, and options a config ignores."""

from __future__ import annotations

import pytest

import rat7m
from rat7m_builder.errors import SelectionError


@pytest.mark.parametrize("keyword", [{"camera": [1]}, {"keep_in_memory": True}, {"frame_steps": 2}])
def test_an_unknown_keyword_is_refused_with_the_valid_ones(sample_release, tmp_path, keyword):
    """A typo (``camera=``) or a stock `datasets.load_dataset` argument we do not take lists the valid keywords."""
    with pytest.raises(SelectionError) as raised:
        rat7m.load_dataset("mocap", data_dir=sample_release.root, cache_dir=str(tmp_path), **keyword)
    message = str(raised.value)
    assert f"unknown keyword(s) {next(iter(keyword))} for the rat7m builder" in message
    for valid in rat7m.CONFIG_KEYWORDS:
        assert valid in message
    assert not list(tmp_path.rglob("*.arrow"))  # refused before anything was built


def test_name_is_the_config_as_in_datasets(sample_release, tmp_path):
    """``name=`` names the config as in `datasets.load_dataset`; one that disagrees with config_name is refused.

    (`datasets` itself took ``name=`` as a new name for the config given, so "mocap" built "frames".)
    """
    mocap = rat7m.load_dataset(name="mocap", split="test", data_dir=sample_release.root, cache_dir=str(tmp_path))
    assert mocap.num_rows == 30 and "image" not in mocap.column_names
    with pytest.raises(SelectionError, match="config_name='mocap' and name='frames' disagree"):
        rat7m.load_dataset("mocap", name="frames", data_dir=sample_release.root, cache_dir=str(tmp_path))
    with pytest.raises(SelectionError, match="unknown keyword.s. name"):
        rat7m.Rat7M(config_name="mocap", name="frames", data_dir=sample_release.root, cache_dir=str(tmp_path))


@pytest.mark.parametrize(
    ("config", "ignored"),
    [
        ("mocap", {"jpeg_quality": 20, "on_corrupt_video": "skip", "annotation_file": "/x.pkl"}),
        ("cameras", {"frame_step": 7, "jpeg_quality": 20, "on_corrupt_video": "skip"}),
        ("videos", {"jpeg_quality": 20, "on_corrupt_video": "skip"}),
        ("frames", {"annotation_file": "/x.pkl"}),
    ],
)
def test_options_a_config_does_not_use_share_its_cache(sample_release, tmp_path, config, ignored):
    """An option a config's rows do not depend on neither rebuilds it nor reaches its config (or card)."""
    plain = rat7m.Rat7M(config_name=config, data_dir=sample_release.root, cache_dir=str(tmp_path))
    given = rat7m.Rat7M(config_name=config, data_dir=sample_release.root, cache_dir=str(tmp_path), **ignored)
    assert given.config_id == plain.config_id and given.cache_dir == plain.cache_dir
    for key in ignored:
        assert getattr(given.config, key) == getattr(plain.config, key)
        assert key not in rat7m.CONFIG_OPTIONS[config]


@pytest.mark.parametrize(
    ("config", "used"),
    [
        ("mocap", {"frame_step": 2}),
        ("videos", {"frame_step": 2}),
        ("frames", {"jpeg_quality": 20}),
        ("frames", {"on_corrupt_video": "skip"}),
        ("multiview", {"jpeg_quality": 20}),
    ],
)
def test_options_a_config_uses_get_their_own_cache(sample_release, tmp_path, config, used):
    plain = rat7m.Rat7M(config_name=config, data_dir=sample_release.root, cache_dir=str(tmp_path))
    given = rat7m.Rat7M(config_name=config, data_dir=sample_release.root, cache_dir=str(tmp_path), **used)
    assert given.config_id != plain.config_id
    for key, value in used.items():
        assert getattr(given.config, key) == value


def test_a_bad_value_of_an_ignored_option_is_still_refused(sample_release, tmp_path):
    """Ignored is not unchecked: ``jpeg_quality=0`` for mocap is a mistake worth saying."""
    with pytest.raises(SelectionError, match="jpeg_quality must be an integer from 1 to 100"):
        rat7m.Rat7M(config_name="mocap", data_dir=sample_release.root, cache_dir=str(tmp_path), jpeg_quality=0)


def test_ignored_options_give_the_same_rows(sample_release, tmp_path):
    """mocap built with a JPEG quality and a corrupt-video policy is the plain mocap build, reused."""
    cache = str(tmp_path / "c")
    plain = rat7m.load_dataset("mocap", split="train", data_dir=sample_release.root, cache_dir=cache)
    given = rat7m.load_dataset(
        "mocap", split="train", data_dir=sample_release.root, cache_dir=cache, jpeg_quality=20, on_corrupt_video="skip"
    )
    assert given.cache_files == plain.cache_files
