"""VideoFolder: any videos laid out as one folder per class, like torchvision's ImageFolder."""

from __future__ import annotations

from pathlib import Path

from permgym.data.errors import require_path
from permgym.data.video import Backend, Size
from permgym.data.video_dataset import Transform, VideoClipDataset

VIDEO_EXTENSIONS: tuple[str, ...] = (".avi", ".mp4", ".mkv", ".webm", ".mov")
LAYOUT = "Expected root/<class>/<video> with one sub-folder per class (sub-folders inside a class are searched too)."


class VideoFolder(VideoClipDataset):
    """Videos in ``root/<class>/...``: classes are the sorted sub-folder names, labels their 0-based indices.

    Every file under a class folder (recursively) whose extension is in ``extensions`` (case-insensitive) is one
    video, in sorted path order. Undecodable videos are skipped and counted, see ``permgym.data.video_dataset``.

    Args:
        root: folder with one sub-folder per class.
        frames: frames per clip ``T``.
        size: ``None`` (native), an int (short side) or ``(height, width)``.
        target_fps: sampling rate in frames per second; ``None`` spreads the frames over the whole video.
        temporal_jitter: random frame positions instead of deterministic centred ones.
        backend: ``"auto"``, ``"decord"`` or ``"pyav"``.
        transform: optional callable applied to each ``[T, 3, H, W]`` uint8 clip.
        extensions: file extensions counted as videos.

    ``dataset[i]`` returns ``(clip, label)``: ``clip`` a ``[T, 3, H, W]`` uint8 tensor, ``label`` an int.
    """

    def __init__(
        self,
        root: str | Path,
        frames: int = 16,
        size: Size = None,
        target_fps: float | None = None,
        temporal_jitter: bool = False,
        backend: Backend = "auto",
        transform: Transform | None = None,
        extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
    ) -> None:
        root = require_path(root, "VideoFolder root", LAYOUT)
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        videos, labels = [], []
        for label, name in enumerate(classes):
            found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in extensions and p.is_file())
            videos += found
            labels += [label] * len(found)
        if not videos:
            raise FileNotFoundError(
                f"VideoFolder found no videos with extensions {extensions} under {str(root)!r} "
                f"(class folders: {classes[:5]}). {LAYOUT}"
            )
        super().__init__(
            videos,
            labels,
            classes,
            root=root,
            frames=frames,
            size=size,
            target_fps=target_fps,
            temporal_jitter=temporal_jitter,
            backend=backend,
            transform=transform,
            layout_help=LAYOUT,
            source={"extensions": list(extensions)},
        )
