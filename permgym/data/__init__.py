"""Datasets: embedded SyntheticActions, video files (UCF101, HMDB51, VideoFolder) and their frame caches; images for
classification transfer (embedded SyntheticObjects, PASCAL VOC 2007, a class-per-folder tree)."""

from __future__ import annotations

from permgym.data.cache import FrameCache, build_frame_cache, load_or_build_cache
from permgym.data.errors import VideoDecodeError
from permgym.data.folder import VideoFolder
from permgym.data.hmdb51 import HMDB51
from permgym.data.images import ImageFolderClassification, ImageSet
from permgym.data.synthetic import SyntheticActions
from permgym.data.synthetic_images import SyntheticObjects
from permgym.data.ucf101 import UCF101
from permgym.data.video import VideoReader, read_frames, sample_indices
from permgym.data.voc import VOC2007

__all__ = [
    "HMDB51",
    "UCF101",
    "VOC2007",
    "FrameCache",
    "ImageFolderClassification",
    "ImageSet",
    "SyntheticActions",
    "SyntheticObjects",
    "VideoDecodeError",
    "VideoFolder",
    "VideoReader",
    "build_frame_cache",
    "load_or_build_cache",
    "read_frames",
    "sample_indices",
]
