"""HMDB51 (Kuehne et al. 2011): 6,766 clips of 51 actions, three official 70/30 train/test splits."""

from __future__ import annotations

import re
from pathlib import Path

from permgym.data.errors import nested_hint
from permgym.data.video_dataset import OfficialSplitVideos, read_listing

VIDEOS_URL = "https://serre-lab.clps.brown.edu/wp-content/uploads/2013/10/hmdb51_org.rar"
SPLITS_URL = "https://serre-lab.clps.brown.edu/wp-content/uploads/2013/10/test_train_splits.rar"
LAYOUT = (
    f"Expected root/<class>/<video>.avi (e.g. root/brush_hair/...avi; unpack {VIDEOS_URL} and the per-class "
    "archives inside it) and annotation_path holding <class>_test_split<N>.txt files (the testTrainMulti_7030_splits "
    f"folder of {SPLITS_URL})."
)
TAGS = {True: "1", False: "2"}  # split-file tag of train and test videos; "0" marks videos in neither


def parse_split_files(annotation_path: Path, split: int, train: bool) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes and ``(class/video, 0-based label)`` entries of one official split.

    Each ``<class>_test_split<N>.txt`` has lines ``<video>.avi <tag>``: tag 1 = train, 2 = test, 0 = unused.
    Classes are sorted alphabetically by the file names.

    Returns:
        ``(classes, entries)``.
    """
    suffix = f"_test_split{split}.txt"
    files = sorted(p for p in annotation_path.iterdir() if p.name.endswith(suffix))
    if not files:
        hint = nested_hint(annotation_path, lambda sub: any(sub.glob(f"*{suffix}")), "--annotations")
        raise FileNotFoundError(f"no HMDB51 split files '*{suffix}' in {str(annotation_path)!r}.{hint} {LAYOUT}")
    classes = [p.name[: -len(suffix)] for p in files]
    entries = []
    for label, path in enumerate(files):
        for number, text in read_listing(path):
            fields = text.rsplit(None, 1)
            if len(fields) != 2 or not re.fullmatch(r"[012]", fields[1]):
                raise ValueError(f"{path}:{number}: expected '<video>.avi <0|1|2>', got {text!r}")
            if fields[1] == TAGS[train]:
                entries.append((f"{classes[label]}/{fields[0]}", label))
    return classes, entries


class HMDB51(OfficialSplitVideos):
    """HMDB51 action recognition videos with the official train/test splits.

    Get the videos from ``VIDEOS_URL`` (unpack to ``root/<class>/*.avi``) and the splits from ``SPLITS_URL``
    (the folder of ``<class>_test_split<N>.txt`` files is ``annotation_path``). Labels are 0-based indices into
    the alphabetically sorted class names. Missing and undecodable videos are skipped and counted, see
    ``permgym.data.video_dataset``.

    Args:
        root: folder with one sub-folder of ``.avi`` files per class.
        annotation_path: folder with the ``<class>_test_split<N>.txt`` files.
        split: official split, 1, 2 or 3.
        train: videos tagged 1 (train) if True, else those tagged 2 (test).
        frames, size, target_fps, temporal_jitter, backend, transform: as in
            :class:`~permgym.data.video_dataset.OfficialSplitVideos`.

    ``dataset[i]`` returns ``(clip, label)``: ``clip`` a ``[T, 3, H, W]`` uint8 tensor, ``label`` an int in
    ``[0, 51)``. ``dataset.labels`` is the ``[N]`` int64 tensor of all labels, ``dataset.classes`` the names.
    """

    name = "HMDB51"
    layout = LAYOUT

    def read_split(
        self, root: Path, annotation_path: Path, split: int, train: bool
    ) -> tuple[list[str], list[Path], list[int]]:
        """The classes, videos and labels of one split (see :func:`parse_split_files`)."""
        classes, entries = parse_split_files(annotation_path, split, train)
        return classes, [root / relative for relative, _ in entries], [label for _, label in entries]
