"""Release names: parsing, numeric chunk order, recordings and splits."""

from __future__ import annotations

import pytest

from rat7m_builder.errors import SelectionError
from rat7m_builder.manifest import (
    MARKER_NAMES,
    MOCAP_ARTICLE,
    RECORDINGS,
    SPLIT_RECORDINGS,
    VIDEO_ARTICLES,
    VideoName,
    parse_mocap_name,
    parse_video_name,
    split_of,
    subject_and_day,
)


def test_video_names_parse_and_sort_numerically():
    names = ["s1-d1-camera1-10500.mp4", "s1-d1-camera1-3500.mp4", "s1-d1-camera1-0.mp4", "s1-d1-camera1-7000.mp4"]
    assert sorted(names)[1] == "s1-d1-camera1-10500.mp4"  # the original script's bug: string order
    parsed = sorted(parse_video_name(name) for name in names)
    assert [p.start for p in parsed] == [0, 3500, 7000, 10500]
    assert parsed[0] == VideoName("s1-d1", 1, 0) and parsed[0].file_name == "s1-d1-camera1-0.mp4"


@pytest.mark.parametrize(
    "name",
    [
        "s1-d2-camera1-0.mp4",  # no such recording
        "s1-d1-camera7-0.mp4",  # no such camera
        "s1-d1-Camera1-0.mp4",  # the release writes lower case
        "s1-d1-camera1-0035.mp4",  # zero-padded starts would alias chunks
        "s1-d1-camera1-0.avi",
        "mocap-s1-d1.mat",
    ],
)
def test_non_release_video_names_are_none(name):
    assert parse_video_name(name) is None


def test_mocap_names():
    assert parse_mocap_name("mocap-s5-d2.mat") == "s5-d2"
    assert parse_mocap_name("mocap-s3-d2.mat") is None
    assert parse_mocap_name("mocap-s05-d2.mat") is None


def test_recordings_and_standard_split():
    assert len(RECORDINGS) == 7 and set(VIDEO_ARTICLES) == set(RECORDINGS)
    assert SPLIT_RECORDINGS["test"] == ("s5-d1", "s5-d2")
    assert split_of("s4-d1") == "train" and subject_and_day("s5-d2") == (5, 2)
    # s5-d2's article id is smaller than s5-d1's: the table, not a sort, maps them.
    assert VIDEO_ARTICLES["s5-d2"][0] < VIDEO_ARTICLES["s5-d1"][0]
    with pytest.raises(SelectionError, match="s1-d1, s2-d1"):
        split_of("s9-d9")


def test_marker_names_are_in_the_documented_order():
    # RAT7M.md's list, written out: the sample fabricator uses the same constant, so a swap there
    # would stay consistent through every other test while mislabelling the published marker axis.
    assert MARKER_NAMES == (
        "HeadF", "HeadB", "HeadL", "SpineF", "SpineM", "SpineL", "Offset1", "Offset2", "HipL", "HipR",
        "ElbowL", "ArmL", "ShoulderL", "ShoulderR", "ElbowR", "ArmR", "KneeR", "KneeL", "ShinL", "ShinR",
    )  # fmt: skip


def test_marker_names_and_skeleton_are_public_and_on_the_card():
    """Users label the keypoint axis and draw the skeleton from ``rat7m`` itself, as the card lists them."""
    import pathlib

    import rat7m
    import rat7m_builder

    assert rat7m.MARKER_NAMES == MARKER_NAMES and "MARKER_NAMES" in rat7m.__all__
    assert len(rat7m.SKELETON_EDGES) == 21 and "SKELETON_EDGES" in rat7m.__all__
    assert all(0 <= a < len(MARKER_NAMES) and 0 <= b < len(MARKER_NAMES) for a, b in rat7m.SKELETON_EDGES)
    card = " ".join(
        (pathlib.Path(rat7m_builder.__file__).parent / "dataset_card.md").read_text(encoding="utf-8").split()
    )
    assert "in this order: " + ", ".join(MARKER_NAMES) in card
    assert " ".join(f"({a},{b})" for a, b in rat7m.SKELETON_EDGES) in card


def test_figshare_articles_are_the_published_ones():
    # Written out from RAT7M.md: the figshare stand-in serves whatever these constants say, so a wrong
    # id or version passes every download test while every real download of that article fails (404).
    # The versions matter too: s4-d1's and the mocap article's are 2.
    assert MOCAP_ARTICLE == (13739233, 2)
    assert VIDEO_ARTICLES == {
        "s1-d1": (13751023, 1),
        "s2-d1": (13753417, 1),
        "s2-d2": (13759336, 1),
        "s3-d1": (13764208, 1),
        "s4-d1": (13767502, 2),
        "s5-d1": (13770565, 1),
        "s5-d2": (13769833, 1),
    }
