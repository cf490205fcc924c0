"""Error types raised by rat7m. Every message names the file involved and what to do."""

from __future__ import annotations


class Rat7MError(Exception):
    """Base class of every error rat7m raises on purpose."""


class SelectionError(Rat7MError, ValueError):
    """An unknown recording, camera or option value was asked for."""


class MissingFileError(Rat7MError, FileNotFoundError):
    """A file the selection needs is not in the release copy."""


class MocapFormatError(Rat7MError, ValueError):
    """A ``mocap-*.mat`` file is unreadable or does not have the released structure."""


class VideoDecodeError(Rat7MError):
    """An mp4 chunk is corrupt, truncated or shorter than the motion capture says."""


class FrameSizeError(VideoDecodeError):
    """A camera's chunks do not all have the same frame size, so one of them is not the released file.

    Raised with either ``on_corrupt_video`` value: the files alone cannot tell which chunk is the odd
    one, and the camera's calibration (so ``keypoints_2d``) fits one frame size.
    """


class ChecksumError(Rat7MError):
    """A downloaded file does not match figshare's size or md5."""


class DownloadError(Rat7MError):
    """A download failed permanently (HTTP status, retries exhausted, no disk space)."""


class DuplicateFileError(Rat7MError):
    """A local release copy holds two different files with the same release name: which one is meant is unknown."""


class UnsafeArchiveError(Rat7MError):
    """A zip archive holds members that would escape their folder (``..``, absolute paths, links), or
    whose declared sizes are implausible for a release file (a zip bomb, a lying header)."""


class UnsafePickleError(Rat7MError):
    """A pickle asks to build something other than plain data (code execution refused)."""


class CorruptVideoWarning(UserWarning):
    """With ``on_corrupt_video="skip"``: examples were left out because their video frames are damaged."""


class AnnotationFormatError(Rat7MError, ValueError):
    """The mini-RAT7M annotation pickle does not have the expected structure."""
