"""DeepFashion In-shop Clothes Retrieval (Liu et al. 2016): query and gallery images of 7,982 items."""

from __future__ import annotations

from pathlib import Path

from metric.data.base import Annotations, RetrievalImageDataset, read_rows


class InShop(RetrievalImageDataset):
    """In-shop Clothes Retrieval, split by the official ``Eval/list_eval_partition.txt``.

    ``"train"``: 25,882 images of 3,997 items. The test protocol retrieves ``"query"`` images (14,218) in the
    ``"gallery"`` (12,612), both over the same 3,985 items: their labels share one numbering (0-based over the
    query and gallery items together), so a query and its gallery images have equal labels.

    Args:
        root: the benchmark folder (holding ``Eval/`` and ``img/``).
        split: ``"train"``, ``"query"`` or ``"gallery"``.
        transform: applied to the PIL image (default: float tensor, ImageNet-normalised).
    """

    splits = ("train", "query", "gallery")
    base_folder = "In-shop Clothes Retrieval Benchmark"
    marker = "Eval/list_eval_partition.txt"
    layout = (
        "  Eval/list_eval_partition.txt   line 1: image count, line 2: 'image_name item_id evaluation_status',\n"
        "                                 then rows 'img/<...>.jpg id_<8 digits> train|query|gallery'\n"
        "  img/<...>.jpg                  (from Img/img.zip; Img/img/<...>.jpg is read too)"
    )
    source = "https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html"

    def _read_split(self, root: Path, split: str) -> Annotations:
        rows = read_rows(self.require(root / self.marker), 3, skip=2)
        if split == "train":
            universe = None
        else:
            universe = sorted({item for _, item, status in rows if status in ("query", "gallery")})
        keep = [(name, item) for name, item, status in rows if status == split]
        # img.zip unpacked where it lies (Img/img/...) rather than in the benchmark folder: read the images there
        images = root / "Img" if not (root / "img").is_dir() and (root / "Img" / "img").is_dir() else root
        return Annotations([images / name for name, _ in keep], [item for _, item in keep], universe=universe)
