"""Fault 3: a zip whose member names escape the extraction folder is refused before anything is written.

rat7m never extracts a zip (members are read in place), but a member that *would* escape if
extracted (``../``, an absolute path, a drive letter, a symbolic link) means the archive is not
figshare's: the whole zip is refused with `UnsafeArchiveError` naming it and the member, before any
dataset file is written, and nothing appears outside the cache.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile

import pytest
from standins.figshare import FigshareStandIn, fabricate_release, figshare  # noqa: F401 - fixture

import rat7m
from rat7m_builder import download
from rat7m_builder.download import RetryPolicy
from rat7m_builder.errors import UnsafeArchiveError
from rat7m_builder.manifest import MOCAP_ARTICLE, VIDEO_ARTICLES

from .support import incomplete_dirs, prepared_info_files, snapshot


def _symlink(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.create_system = 3  # unix
    return info


def _cases(outside: str):
    """(member name or ZipInfo, data): each one must make the whole zip refused."""
    return {
        "dot-dot": ("../../evil.mp4", b"x"),
        "dot-dot inside a folder": ("video_sequences/../../../evil.mp4", b"x"),
        "backslash dot-dot": ("..\\..\\evil.mp4", b"x"),
        "absolute": (os.path.join(outside, "evil.mp4"), b"x"),
        "absolute /etc": ("/etc/x", b"x"),
        "drive letter": ("C:/Windows/evil.mp4", b"x"),
        # a link named like a release file, pointing out of the folder
        "symlink to a file": (_symlink("s1-d1-camera1-0.mp4", os.path.join(outside, "target")), None),
        "symlink folder": (_symlink("video_sequences", outside), None),
    }


CASES = list(_cases("/outside"))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("config", ["mocap", "frames"])
def test_unsafe_member_in_data_dir_is_refused_and_nothing_is_written_outside(
    case, config, sample_zips, tmp_path, cache_dir
):
    outside = str(tmp_path / "outside")
    os.makedirs(outside)
    data_dir = tmp_path / "data"
    os.makedirs(data_dir)
    member, data = _cases(outside)[case]
    # The mocap article zip as figshare serves it, plus the hostile member at its end.
    mocap_zip = os.path.join(sample_zips.root, f"{MOCAP_ARTICLE[0]}.zip")
    video_zip = os.path.join(sample_zips.root, f"{VIDEO_ARTICLES['s1-d1'][0]}.zip")
    with zipfile.ZipFile(mocap_zip) as source, zipfile.ZipFile(data_dir / os.path.basename(mocap_zip), "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info))
        target.writestr(member, data if data is not None else os.path.join(outside, "target"))
    os.link(video_zip, data_dir / os.path.basename(video_zip))
    name = member.filename if isinstance(member, zipfile.ZipInfo) else member
    before = snapshot(str(tmp_path), exclude=(cache_dir, str(tmp_path / "hf_home")))

    with pytest.raises(UnsafeArchiveError, match=re.escape(f"{MOCAP_ARTICLE[0]}.zip: member {name!r} is")) as error:
        rat7m.load_dataset(config, data_dir=str(data_dir), cache_dir=cache_dir, recordings=["s1-d1"])
    assert ("a symbolic link" if isinstance(member, zipfile.ZipInfo) else "a path escaping the archive") in str(
        error.value
    )
    assert "download it again from figshare" in str(error.value)
    assert snapshot(str(tmp_path), exclude=(cache_dir, str(tmp_path / "hf_home"))) == before
    assert os.listdir(outside) == []
    assert prepared_info_files(cache_dir) == [] and incomplete_dirs(cache_dir) == []


FAST = RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=0.02, max_wait=0.02, timeout=(5.0, 5.0))


def test_unsafe_member_in_a_downloaded_article_zip_is_refused(figshare, tmp_path, monkeypatch):  # noqa: F811
    """source="archives": figshare's article zip itself is hostile (a stand-in serves it)."""
    monkeypatch.setattr(download, "DEFAULT_RETRY", FAST)
    fabricate_release(figshare, ["s1-d1"])
    figshare.add_file(*MOCAP_ARTICLE, "../../../evil.mat", b"MATLAB 5.0")
    cache_dir = str(tmp_path / "cache")
    before = snapshot(str(tmp_path), exclude=(cache_dir, str(tmp_path / "hf_home")))
    with pytest.raises(UnsafeArchiveError, match=r"member '\.\./\.\./\.\./evil\.mat' is a path escaping"):
        rat7m.load_dataset("mocap", cache_dir=cache_dir, recordings=["s1-d1"], source="archives")
    assert snapshot(str(tmp_path), exclude=(cache_dir, str(tmp_path / "hf_home"))) == before
    assert not (tmp_path / "evil.mat").exists() and not (tmp_path.parent / "evil.mat").exists()
    assert prepared_info_files(cache_dir) == []
    # nothing was extracted: the only files in the cache are the zip download and bookkeeping
    extracted = [
        os.path.join(folder, name)
        for folder, _, files in os.walk(cache_dir)
        for name in files
        if name.endswith((".mat", ".mp4"))
    ]
    assert extracted == []
