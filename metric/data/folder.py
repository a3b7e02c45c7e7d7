"""A class-per-folder image tree, split class-disjointly for metric learning."""

from __future__ import annotations

from pathlib import Path

from metric.data.base import Annotations, RetrievalImageDataset, Transform
from permgym.data.images import visible_file


class ImageFolderSplit(RetrievalImageDataset):
    """``root/<class>/<image>`` with the sorted classes split disjointly: the first ``round(train_fraction * C)``
    classes are ``"train"``, the rest ``"test"``. Labels are 0-based within the split. A class holds the image files
    anywhere under its folder (as torchvision's ``ImageFolder``); hidden entries (names starting with ``.``) and
    folders without image files are not classes, and files of other extensions are ignored.

    Args:
        root: the folder of class folders.
        split: ``"train"`` or ``"test"``.
        transform: applied to the PIL image (default: float tensor, ImageNet-normalised).
        train_fraction: share of the classes used for training, in ``(0, 1)``.
    """

    layout = "  <class>/<image>.jpg (or another image extension), one folder per class"
    source = "your own images"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Transform | None = None,
        train_fraction: float = 0.5,
    ) -> None:
        if not 0 < train_fraction < 1:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        self.train_fraction = train_fraction
        super().__init__(root, split, transform)

    def _locate(self, root: Path) -> Path:
        if not root.is_dir():
            raise FileNotFoundError(self._missing(root))
        return root

    def _read_split(self, root: Path, split: str) -> Annotations:
        files = {
            folder.name: sorted(path for path in folder.rglob("*") if path.is_file() and visible_file(path, folder))
            for folder in root.iterdir()
            if folder.is_dir() and not folder.name.startswith(".")
        }
        classes = sorted(name for name, paths in files.items() if paths)  # no empty or hidden folder is a class
        if len(classes) < 2:
            raise ValueError(
                f"ImageFolderSplit needs >= 2 class folders holding images in {root}, found {len(classes)}"
            )
        cut = min(max(round(self.train_fraction * len(classes)), 1), len(classes) - 1)
        chosen = classes[:cut] if split == "train" else classes[cut:]
        items = [(path, name) for name in chosen for path in files[name]]
        return Annotations([path for path, _ in items], [name for _, name in items])
