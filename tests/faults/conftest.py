"""Fixtures of the fault suite (the session fixtures of tests/conftest.py apply too)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def release_copy(sample_release, tmp_path):
    """A private copy of the fabricated release (helper layout) that a test may damage."""
    root = str(tmp_path / "release")
    shutil.copytree(sample_release.root, root)
    return root
