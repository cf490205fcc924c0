"""Shared fixtures: fabricated miniature releases (written once per session) and fresh caches."""

from __future__ import annotations

import os
import shutil

import pytest

from rat7m_builder.sample import SampleSpec, write_sample


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path, monkeypatch):
    # Each test gets its own `datasets` / hub cache: nothing leaks between tests or into ~/.cache.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_home" / "datasets"))


@pytest.fixture(scope="session")
def sample_release(tmp_path_factory):
    """The default fabricated release (s1-d1 train, s5-d1 test) in the helper script's layout."""
    return write_sample(str(tmp_path_factory.mktemp("sample_helper")), SampleSpec(layout="helper"))


@pytest.fixture(scope="session")
def sample_zips(tmp_path_factory):
    """The same release as figshare article zips left unopened."""
    return write_sample(str(tmp_path_factory.mktemp("sample_zips")), SampleSpec(layout="zips"))


@pytest.fixture(scope="session")
def sample_flat(tmp_path_factory):
    """The same release, all files in one flat folder."""
    return write_sample(str(tmp_path_factory.mktemp("sample_flat")), SampleSpec(layout="flat"))


@pytest.fixture
def release_copy(sample_release, tmp_path):
    """A private copy of the fabricated release (helper layout) that a test may damage."""
    root = str(tmp_path / "release")
    shutil.copytree(sample_release.root, root)
    return root


@pytest.fixture
def cache_dir(tmp_path):
    path = tmp_path / "cache"
    os.makedirs(path)
    return str(path)
