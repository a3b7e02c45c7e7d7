"""Errors of the video data layer: undecodable videos and missing dataset files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


class VideoDecodeError(RuntimeError):
    """A video file is missing, empty, truncated or cannot be decoded by any allowed backend.

    Attributes:
        path: the video file.
        reason: what went wrong, one line per backend tried.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot decode video {str(path)!r}: {reason}")
        self.path = str(path)
        self.reason = reason


def require_path(path: str | Path, what: str, how_to_get: str) -> Path:
    """Return ``path`` as a ``Path`` if it exists, else raise an error saying what it should hold.

    Args:
        path: a file or directory the caller needs.
        what: what the path should be, e.g. ``"UCF101 video root"``.
        how_to_get: the expected layout and where to download the data.

    Raises:
        FileNotFoundError: naming ``path``, ``what`` and ``how_to_get``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {str(path)!r}. {how_to_get}")
    return path


def require_dir(path: str | Path, what: str, how_to_get: str) -> Path:
    """Like :func:`require_path`, for a folder.

    Raises:
        FileNotFoundError: ``path`` does not exist (see :func:`require_path`).
        ValueError: ``path`` is a file, not a folder; the message names it, ``what`` and ``how_to_get``.
    """
    path = require_path(path, what, how_to_get)
    if not path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a file, not a folder. {how_to_get}")
    return path


def nested_hint(folder: Path, holds: Callable[[Path], bool], option: str) -> str:
    """A hint for a dataset unpacked one level deeper than given (``UCF101/UCF-101/...``): ``" The files are in
    'UCF101/UCF-101': give that folder as --root."`` for the first sub-folder of ``folder`` for which ``holds`` is
    true, else ``""``.

    Args:
        folder: the folder the user gave.
        holds: whether a sub-folder is the one that was meant.
        option: the command-line option to name, e.g. ``"--root"``.
    """
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if holds(sub):
                return f" The files are in {str(sub)!r}: give that folder as {option}."
    return ""
