"""UCF101 (Soomro et al. 2012): 13,320 YouTube clips of 101 actions, three official train/test splits."""

from __future__ import annotations

from pathlib import Path

from permgym.data.errors import nested_hint, require_path
from permgym.data.video_dataset import OfficialSplitVideos, read_listing

VIDEOS_URL = "https://www.crcv.ucf.edu/data/UCF101/UCF101.rar"
SPLITS_URL = "https://www.crcv.ucf.edu/data/UCF101/UCF101TrainTestSplits-RecognitionTask.zip"
LAYOUT = (
    "Expected root/<Class>/v_<Class>_gGG_cCC.avi (e.g. root/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi, the "
    f"UCF-101 folder of {VIDEOS_URL}) and annotation_path holding classInd.txt, trainlist0N.txt and testlist0N.txt "
    f"(the ucfTrainTestlist folder of {SPLITS_URL})."
)


def parse_class_index(path: Path) -> list[str]:
    """Class names from ``classInd.txt`` (lines ``1 ApplyEyeMakeup`` ... ``101 YoYo``), indexed by 0-based label."""
    classes = []
    for number, text in read_listing(path):
        fields = text.split()
        if len(fields) != 2 or fields[0] != str(len(classes) + 1):
            raise ValueError(
                f"{path}:{number}: expected '<index> <ClassName>' with index {len(classes) + 1}, got {text!r}"
            )
        classes.append(fields[1])
    if not classes:
        raise ValueError(f"{path} lists no classes. {LAYOUT}")
    return classes


def parse_split_list(path: Path, classes: list[str]) -> list[tuple[str, int]]:
    """``(relative video path, 0-based label)`` pairs of a ``trainlist0N.txt`` or ``testlist0N.txt``.

    Train lines are ``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1`` (1-based label); test lines carry no label,
    which is then looked up from the folder name in ``classes``. A given label must agree with the folder.
    """
    label_of = {name: i for i, name in enumerate(classes)}
    entries = []
    first_line: dict[str, int] = {}
    for number, text in read_listing(path):
        fields = text.split()
        folder = fields[0].split("/")[0]
        if len(fields) > 2 or folder not in label_of:
            raise ValueError(
                f"{path}:{number}: expected '<Class>/<video>.avi [label]' with <Class> listed in classInd.txt, "
                f"got {text!r}"
            )
        label = label_of[folder]
        if len(fields) == 2 and fields[1] != str(label + 1):
            raise ValueError(f"{path}:{number}: label {fields[1]} disagrees with folder {folder!r} (class {label + 1})")
        if fields[0] in first_line:
            raise ValueError(f"{path}:{number}: {fields[0]} is listed twice (also on line {first_line[fields[0]]}); "
                             "a video must appear once per split file")  # fmt: skip
        first_line[fields[0]] = number
        entries.append((fields[0], label))
    return entries


def _resolve(root: Path, relative: str, folders: dict[str, str]) -> Path:
    """``root/relative``, matching the class folder case-insensitively if the exact path is missing.

    The UCF101 archive stores ``HandstandPushups/`` while the split files say ``HandStandPushups/``.
    """
    path = root / relative
    folder, _, rest = relative.partition("/")
    if path.exists() or folder.lower() not in folders:
        return path
    return root / folders[folder.lower()] / rest


class UCF101(OfficialSplitVideos):
    """UCF101 action recognition videos with the official train/test splits.

    Get the videos from ``VIDEOS_URL`` (unpack the UCF-101 folder as ``root``) and the splits from ``SPLITS_URL``
    (the ucfTrainTestlist folder is ``annotation_path``). The split files are parsed as distributed; labels are
    0-based (``classInd.txt`` line ``1 ApplyEyeMakeup`` is label 0). Split 1 has 9,537 train and 3,783 test videos
    of 101 classes. Missing and undecodable videos are skipped and counted, see
    ``permgym.data.video_dataset``.

    Args:
        root: folder with one sub-folder of ``.avi`` files per class.
        annotation_path: folder with ``classInd.txt``, ``trainlist0{1,2,3}.txt`` and ``testlist0{1,2,3}.txt``.
        split: official split, 1, 2 or 3.
        train: ``trainlist0N`` if True, else ``testlist0N``.
        frames, size, target_fps, temporal_jitter, backend, transform: as in
            :class:`~permgym.data.video_dataset.OfficialSplitVideos` (native frames are 320x240).

    ``dataset[i]`` returns ``(clip, label)``: ``clip`` a ``[T, 3, H, W]`` uint8 tensor, ``label`` an int in
    ``[0, 101)``. ``dataset.labels`` is the ``[N]`` int64 tensor of all labels, ``dataset.classes`` the names.
    """

    name = "UCF101"
    layout = LAYOUT

    def read_split(
        self, root: Path, annotation_path: Path, split: int, train: bool
    ) -> tuple[list[str], list[Path], list[int]]:
        """The classes, videos and labels of ``{train|test}list0{split}.txt``, refusing a video listed in both parts
        of the split; class folders are matched case-insensitively (see :func:`_resolve`)."""
        listing = annotation_path / f"{'train' if train else 'test'}list0{split}.txt"
        hint = nested_hint(annotation_path, lambda sub: (sub / "classInd.txt").is_file(), "--annotations")
        index = require_path(annotation_path / "classInd.txt", "UCF101 class index", f"{hint} {LAYOUT}".lstrip())
        classes = parse_class_index(index)
        entries = parse_split_list(require_path(listing, "UCF101 split file", LAYOUT), classes)
        other = annotation_path / f"{'test' if train else 'train'}list0{split}.txt"
        if other.is_file():  # the two parts of a split must be disjoint, or test videos leak into training
            shared = sorted({v for v, _ in entries} & {v for v, _ in parse_split_list(other, classes)})
            if shared:
                raise ValueError(f"{len(shared)} video(s) are in both trainlist0{split}.txt and testlist0{split}.txt of "
                                 f"{annotation_path}, e.g. {shared[0]}: the train and test lists must be disjoint")  # fmt: skip
        folders = {p.name.lower(): p.name for p in root.iterdir() if p.is_dir()}
        return classes, [_resolve(root, relative, folders) for relative, _ in entries], [label for _, label in entries]
