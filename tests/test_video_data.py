"""Video decoding backends, frame sampling, and the UCF101 / HMDB51 / VideoFolder datasets on generated files."""

from __future__ import annotations

import re
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch

from permgym.data import HMDB51, UCF101, VideoDecodeError, VideoFolder, VideoReader, read_frames, sample_indices
from permgym.data import video as video_module
from permgym.data.folder import FolderSplit
from permgym.data.ucf101 import parse_class_index, parse_split_list
from tests.video_fixtures import (
    HMDB_CLASSES,
    UCF_CLASSES,
    decoded_index,
    make_folder_tree,
    make_hmdb51_tree,
    make_ucf101_tree,
    pattern_frames,
    write_bad_video,
    write_clip,
)

FRAMES = 30  # frames per generated clip


@pytest.fixture(scope="module")
def ucf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_ucf101_tree(tmp_path_factory.mktemp("ucf"), frames=FRAMES)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder_tree(tmp_path_factory.mktemp("folder"), frames=FRAMES)


# ---- frame sampling ------------------------------------------------------------------------------------------


def test_uniform_sampling_takes_segment_centres() -> None:
    assert sample_indices(30, 8) == [1, 5, 9, 13, 16, 20, 24, 28]
    assert sample_indices(8, 8) == list(range(8))
    assert sample_indices(3, 6) == [0, 0, 1, 1, 2, 2]  # short video: frames repeat


def test_uniform_random_sampling_draws_one_frame_per_segment() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        indices = sample_indices(100, 8, generator=generator)
        assert all(int(k * 12.5) <= i < (k + 1) * 12.5 for k, i in enumerate(indices))  # frame k in segment k
    assert sample_indices(100, 8, generator=torch.Generator().manual_seed(3)) == sample_indices(
        100, 8, generator=torch.Generator().manual_seed(3)
    )


def test_fps_sampling_spaces_frames_by_the_rate_ratio() -> None:
    # 25 fps video sampled at 5 fps: every 5th frame, window (35 frames) centred in the 100-frame video
    assert sample_indices(100, 8, video_fps=25, target_fps=5) == [32, 37, 42, 47, 52, 57, 62, 67]
    # 30 fps at 8 fps: step 3.75, offsets rounded half up
    assert sample_indices(16, 4, video_fps=30, target_fps=8) == [2, 6, 10, 13]
    generator = torch.Generator().manual_seed(1)
    starts = {sample_indices(100, 8, video_fps=25, target_fps=5, generator=generator)[0] for _ in range(200)}
    assert min(starts) >= 0 and max(starts) <= 100 - 1 - 35 and len(starts) > 30


def test_fps_sampling_falls_back_to_uniform_when_the_window_does_not_fit() -> None:
    assert sample_indices(30, 8, video_fps=25, target_fps=2) == sample_indices(30, 8)
    assert sample_indices(30, 4, video_fps=0.0, target_fps=5) == [13, 14, 15, 16]  # unknown rate: consecutive


def test_sampling_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="frames >= 1"):
        sample_indices(10, 0)
    with pytest.raises(ValueError, match="target_fps must be > 0"):
        sample_indices(10, 2, video_fps=25, target_fps=0)


def test_resolve_size() -> None:
    assert video_module.resolve_size(None, 240, 320) is None
    assert video_module.resolve_size(128, 240, 320) == (128, 171)
    assert video_module.resolve_size(128, 320, 240) == (171, 128)
    assert video_module.resolve_size((112, 112), 240, 320) == (112, 112)
    assert video_module.resolve_size(240, 240, 320) is None
    with pytest.raises(ValueError, match=re.escape("got (0, 5)")):
        video_module.check_size((0, 5))


# ---- decoding backends ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".avi", ".mp4", ".mkv", ".webm", ".mov"])
def test_backends_return_the_same_frames(folder: Path, suffix: str) -> None:
    path = next(folder.glob(f"a/*{suffix}"))
    indices = [17, 0, 29, 5, 5, 12]
    by_backend = {b: read_frames(path, indices, backend=b) for b in ("decord", "pyav")}
    for clip in by_backend.values():
        assert clip.shape == (6, 3, 48, 64) and clip.dtype == torch.uint8
        assert [decoded_index(f, FRAMES) for f in clip] == indices
    diff = (by_backend["decord"].int() - by_backend["pyav"].int()).abs()
    assert diff.float().mean() < 1.0 and diff.max() <= 8  # same decoder inside; colour conversion may differ


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_pyav_seeks_to_the_right_frames_with_b_frames(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # decord 0.6 returns wrong frames for random access into such .avi files; PyAV maps indices by timestamp
    path = write_clip(tmp_path / f"clip{suffix}", pattern_frames(FRAMES), gop=6, b_frames=2)

    def no_sequential(*args: object) -> None:
        raise AssertionError("the timestamp index should be used")

    monkeypatch.setattr(video_module._PyAVSource, "_read_sequential", no_sequential)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        indices = sample_indices(FRAMES, 8, generator=generator)
        frames = read_frames(path, indices, backend="pyav")
        assert [decoded_index(f, FRAMES) for f in frames] == indices


def test_decoded_frames_match_the_encoded_ones(tmp_path: Path) -> None:
    frames = pattern_frames(FRAMES)
    path = write_clip(tmp_path / "clip.avi", frames)
    clip = read_frames(path, [3, 20])
    expected = frames[[3, 20]]
    assert (clip.float() - expected.float()).abs().mean() < 4  # lossy mpeg4 at high bit rate


@pytest.mark.parametrize("size, shape", [(24, (24, 32)), ((20, 20), (20, 20))])
def test_backends_resize_alike(folder: Path, size: int | tuple[int, int], shape: tuple[int, int]) -> None:
    path = next(folder.glob("b/*.mp4"))
    clips = [read_frames(path, [2, 9], backend=b, size=size) for b in ("decord", "pyav")]
    assert clips[0].shape == clips[1].shape == (2, 3, *shape)
    assert (clips[0].float() - clips[1].float()).abs().mean() < 3


def test_reader_reports_length_and_rate(folder: Path) -> None:
    for backend in ("decord", "pyav"):
        for path in sorted(folder.glob("a/*")):
            reader = VideoReader(path, backend=backend)
            assert (reader.num_frames, reader.fps, reader.backend) == (FRAMES, 25.0, backend)


def test_reader_rejects_bad_arguments(folder: Path) -> None:
    path = next(folder.glob("a/*.avi"))
    with pytest.raises(ValueError, match=re.escape("backend must be one of ('auto', 'decord', 'pyav'), got 'cv2'")):
        VideoReader(path, backend="cv2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("frame indices [30] out of range")):
        read_frames(path, [1, 30])


def test_auto_falls_back_to_pyav_without_decord(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "decord", None)  # makes `import decord` raise ImportError
    path = next(folder.glob("a/*.avi"))
    reader = VideoReader(path)
    assert reader.backend == "pyav"
    assert [decoded_index(f, FRAMES) for f in reader.get_frames([4, 2])] == [4, 2]
    with pytest.raises(ImportError, match=re.escape("pip install decord")):
        VideoReader(path, backend="decord")


def test_auto_falls_back_per_file_when_a_backend_fails_to_read(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = video_module.AUTO_ORDER

    class FailingRead(video_module._SOURCES[first]):  # type: ignore[misc,valid-type]
        def read(self, indices: list[int]) -> None:  # type: ignore[override]
            raise RuntimeError("simulated decoder failure")

    monkeypatch.setitem(video_module._SOURCES, first, FailingRead)
    reader = VideoReader(next(folder.glob("a/*.mp4")))
    assert reader.backend == first
    assert [decoded_index(f, FRAMES) for f in reader.get_frames([7])] == [7]
    assert reader.backend == second


def test_auto_decodes_tiny_videos(tmp_path: Path) -> None:
    # decord 0.6 raises "DECORDArrayCopyFromTo: The size must exactly match" on 16-pixel-wide frames
    path = write_clip(tmp_path / "tiny.avi", pattern_frames(3, 16, 16))
    assert read_frames(path, [0, 2, 1]).shape == (3, 3, 16, 16)


@pytest.mark.parametrize(
    "name, kind, reason",
    [
        ("missing.avi", None, "does not exist"),
        ("empty.avi", "empty", "empty"),
        ("random.avi", "random", "could not open"),
        ("truncated.mp4", "truncated", "could not open"),
        ("truncated.avi", "truncated", "pyav"),
    ],
)
def test_bad_files_raise_decode_errors_naming_the_path(
    tmp_path: Path, name: str, kind: str | None, reason: str
) -> None:
    path = tmp_path / name
    if kind is not None:
        write_bad_video(path, kind)
    with pytest.raises(VideoDecodeError, match=re.escape(str(path))) as info:
        VideoReader(path).get_frames([0, 5, 15])
    assert reason in str(info.value)


# ---- datasets ------------------------------------------------------------------------------------------------


def test_ucf101_labels_follow_the_split_files(ucf: tuple[Path, Path]) -> None:
    root, annotations = ucf
    train = UCF101(root, annotations, split=1, train=True, frames=4)
    test = UCF101(root, annotations, split=1, train=False, frames=4)
    assert train.classes == list(UCF_CLASSES) and train.class_names == train.classes
    assert len(train) == 6 and len(test) == 3  # groups 8 and 15 train, group 1 tests
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2] and train.labels.dtype == torch.int64
    assert test.labels.tolist() == [0, 1, 2]
    assert all("_g01_" in v for v in test.videos)
    for dataset in (train, test):
        for video, label in zip(dataset.videos, dataset.labels.tolist(), strict=True):
            assert Path(video).parent.name == UCF_CLASSES[label]
    assert UCF101(root, annotations, split=2, train=False, frames=4).videos[0].endswith("g08_c01.avi")


def test_ucf101_parser_handles_official_line_formats(tmp_path: Path) -> None:
    (tmp_path / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 YoYo \r\n\r\n")
    (tmp_path / "trainlist01.txt").write_bytes(
        b"YoYo/v_YoYo_g08_c01.avi 2\r\nApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1  \r\n\r\n"
    )
    (tmp_path / "testlist01.txt").write_bytes(b"YoYo/v_YoYo_g01_c01.avi\r\n")
    classes = parse_class_index(tmp_path / "classInd.txt")
    assert classes == ["ApplyEyeMakeup", "YoYo"]
    assert parse_split_list(tmp_path / "trainlist01.txt", classes) == [
        ("YoYo/v_YoYo_g08_c01.avi", 1),
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0),
    ]
    assert parse_split_list(tmp_path / "testlist01.txt", classes) == [("YoYo/v_YoYo_g01_c01.avi", 1)]


def test_ucf101_parser_rejects_inconsistent_lines(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("ok/x.avi 1\nYoYo/v_YoYo_g08_c01.avi 1\n")
    with pytest.raises(ValueError, match=re.escape("list.txt:1: expected '<Class>/<video>.avi [label]'")):
        parse_split_list(tmp_path / "list.txt", ["ApplyEyeMakeup", "YoYo"])
    (tmp_path / "list.txt").write_text("YoYo/v_YoYo_g08_c01.avi 1\n")
    with pytest.raises(ValueError, match=re.escape("list.txt:1: label 1 disagrees with folder 'YoYo' (class 2)")):
        parse_split_list(tmp_path / "list.txt", ["ApplyEyeMakeup", "YoYo"])
    (tmp_path / "classInd.txt").write_text("2 YoYo\n")
    with pytest.raises(ValueError, match=re.escape("classInd.txt:1: expected '<index> <ClassName>' with index 1")):
        parse_class_index(tmp_path / "classInd.txt")


def test_ucf101_split_files_list_each_video_once_and_keep_train_and_test_apart(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text(
        "YoYo/v_YoYo_g08_c01.avi 2\nYoYo/v_YoYo_g09_c01.avi 2\nYoYo/v_YoYo_g08_c01.avi 2\n"
    )
    with pytest.raises(
        ValueError, match=re.escape("list.txt:3: YoYo/v_YoYo_g08_c01.avi is listed twice (also on line 1)")
    ):
        parse_split_list(tmp_path / "list.txt", ["ApplyEyeMakeup", "YoYo"])
    root, annotations = make_ucf101_tree(tmp_path / "tree", groups=(1, 8), frames=8)
    test_line = (annotations / "testlist01.txt").read_text().splitlines()[0]
    with open(annotations / "trainlist01.txt", "a") as f:
        label = parse_class_index(annotations / "classInd.txt").index(test_line.split("/")[0]) + 1
        f.write(f"{test_line.split()[0]} {label}\n")
    for train in (True, False):
        with pytest.raises(ValueError, match=re.escape("1 video(s) are in both trainlist01.txt and testlist01.txt")):
            UCF101(root, annotations, train=train, frames=2)


def test_ucf101_matches_class_folders_case_insensitively(tmp_path: Path) -> None:
    # the UCF101 archive stores HandstandPushups/ while the split files say HandStandPushups/
    root, annotations = make_ucf101_tree(tmp_path, classes=("HandStandPushups",), groups=(8,), frames=8)
    (root / "HandStandPushups").rename(root / "HandstandPushups")
    dataset = UCF101(root, annotations, frames=2)
    assert len(dataset) == 1 and Path(dataset.videos[0]).parent.name == "HandstandPushups"


def test_ucf101_clips_and_repr(ucf: tuple[Path, Path]) -> None:
    root, annotations = ucf
    dataset = UCF101(root, annotations, split=3, train=True, frames=8, size=24)
    clip, label = dataset[0]
    assert clip.shape == (8, 3, 24, 32) and clip.dtype == torch.uint8 and isinstance(label, int)
    assert [decoded_index(f, FRAMES) for f in clip] == sample_indices(FRAMES, 8)
    text = repr(dataset)
    assert text.startswith("UCF101(") and str(root) in text and "clips=6" in text and "size=24" in text


def test_dataset_fps_sampling_and_jitter(ucf: tuple[Path, Path]) -> None:
    root, annotations = ucf
    at_5fps = UCF101(root, annotations, frames=4, target_fps=5)
    assert [decoded_index(f, FRAMES) for f in at_5fps[0][0]] == [7, 12, 17, 22]  # 25 fps source: every 5th frame
    jittered = UCF101(root, annotations, frames=4, target_fps=5, temporal_jitter=True)
    torch.manual_seed(0)
    starts = {decoded_index(jittered[0][0][0], FRAMES) for _ in range(12)}
    assert len(starts) > 1 and all(0 <= s <= FRAMES - 16 for s in starts)


def test_ucf101_errors_name_the_path_and_the_layout(ucf: tuple[Path, Path], tmp_path: Path) -> None:
    root, annotations = ucf
    with pytest.raises(FileNotFoundError, match=re.escape(f"UCF101 video root not found: '{tmp_path / 'nope'}'")):
        UCF101(tmp_path / "nope", annotations)
    with pytest.raises(FileNotFoundError, match=re.escape("ucfTrainTestlist folder of https://www.crcv.ucf.edu")):
        UCF101(root, tmp_path)
    with pytest.raises(ValueError, match=re.escape("split must be 1, 2 or 3 (the official UCF101 splits), got 4")):
        UCF101(root, annotations, split=4)
    with pytest.raises(FileNotFoundError, match=re.escape("none of the 6 listed videos exist under")):
        UCF101(tmp_path, annotations)


def test_archives_unpacked_one_level_deeper_are_named(ucf: tuple[Path, Path], tmp_path: Path) -> None:
    """UCF101.rar and the split zips often unpack into an extra folder: the error names the folder that was meant."""
    root, annotations = ucf  # <tmp>/UCF-101 and <tmp>/ucfTrainTestlist
    top = root.parent
    with pytest.raises(FileNotFoundError, match=re.escape(f"The files are in '{root}': give that folder as --root.")):
        UCF101(top, annotations)
    meant = f"The files are in '{annotations}': give that folder as --annotations."
    with pytest.raises(FileNotFoundError, match=re.escape(meant)):
        UCF101(root, top)
    hmdb_root, splits = make_hmdb51_tree(tmp_path, frames=8)
    with pytest.raises(FileNotFoundError, match=re.escape(f"The files are in '{splits}': give that folder as")):
        HMDB51(hmdb_root, tmp_path)


def test_hmdb51_reads_the_official_split_files(tmp_path: Path) -> None:
    root, annotations = make_hmdb51_tree(tmp_path, frames=8)
    train = HMDB51(root, annotations, split=1, train=True, frames=2)
    test = HMDB51(root, annotations, split=1, train=False, frames=2)
    assert train.classes == sorted(HMDB_CLASSES)
    assert train.labels.tolist() == [0, 1, 2] and test.labels.tolist() == [0, 1, 2]  # tag 0 videos are in neither
    assert all(v.endswith("_0.avi") for v in train.videos) and all(v.endswith("_1.avi") for v in test.videos)
    assert HMDB51(root, annotations, split=2, train=True, frames=2).videos[0].endswith("_2.avi")
    assert train[1][0].shape == (2, 3, 48, 64) and train[1][1] == 1
    with pytest.raises(FileNotFoundError, match=re.escape(f"no HMDB51 split files '*_test_split1.txt' in '{root}'")):
        HMDB51(root, root)
    with pytest.raises(ValueError, match=re.escape("split must be 1, 2 or 3 (the official HMDB51 splits), got 0")):
        HMDB51(root, annotations, split=0)


def test_video_folder_reads_every_container(folder: Path) -> None:
    dataset = VideoFolder(folder, frames=3, size=(16, 16))
    assert dataset.classes == ["a", "b"] and dataset.labels.tolist() == [0] * 5 + [1] * 5
    assert {Path(v).suffix for v in dataset.videos} == {".avi", ".mp4", ".mkv", ".webm", ".mov"}
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    clips, labels = next(iter(loader))
    assert clips.shape == (4, 3, 3, 16, 16) and labels.dtype == torch.int64
    with pytest.raises(FileNotFoundError, match="VideoFolder found no videos"):
        VideoFolder(folder / "a")


def test_video_folder_skips_hidden_folders_and_files(folder: Path, tmp_path: Path) -> None:
    """.git/ is no class and macOS's ._clip.avi resource forks are no videos (they would fail to decode)."""
    video = sorted((folder / "a").glob("*.avi"))[0]
    for place in ("a/x.avi", "b/y.avi", ".git/z.avi", ".ipynb_checkpoints/w.avi", "b/.cache/v.avi"):
        (tmp_path / place).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(video, tmp_path / place)
    (tmp_path / "a" / "._x.avi").write_bytes(b"\0\5\26\7Mac OS X")
    dataset = VideoFolder(tmp_path, frames=3, size=(16, 16))
    assert dataset.classes == ["a", "b"] and [Path(v).name for v in dataset.videos] == ["x.avi", "y.avi"]


def test_folder_split_holds_out_every_fifth_video_of_each_class_with_the_folder_clips(folder: Path) -> None:
    whole = VideoFolder(folder, frames=3, size=(16, 16), target_fps=5.0)
    train, test = FolderSplit(whole, train=True), FolderSplit(whole, train=False)
    assert sorted(train.videos + test.videos) == sorted(whole.videos)
    assert test.videos == [whole.videos[4], whole.videos[9]] and test.labels.tolist() == [0, 1]
    assert train.clip_options() == test.clip_options() == whole.clip_options()
    assert test[0][0].shape == (3, 3, 16, 16)
    assert test.config() == {**whole.config(), "dataset": "FolderSplit", "part": "test", "test_every": 5,
                             "listing": test.config()["listing"]}  # fmt: skip
    assert test.config()["listing"] != whole.config()["listing"]  # the part's own videos


def test_bad_videos_are_skipped_counted_and_substituted(tmp_path: Path) -> None:
    root, annotations = make_ucf101_tree(tmp_path, groups=(8, 15), frames=8)
    bad = {
        root / "Archery/v_Archery_g08_c01.avi": "empty",
        root / "Archery/v_Archery_g15_c01.avi": "random",
        root / "HandStandPushups/v_HandStandPushups_g08_c01.avi": "truncated",
    }
    for path, kind in bad.items():
        write_bad_video(path, kind)
    (root / "ApplyEyeMakeup/v_ApplyEyeMakeup_g15_c01.avi").unlink()
    with pytest.warns(RuntimeWarning, match=r"1 of 6 listed videos do not exist and were left out"):
        dataset = UCF101(root, annotations, frames=4)
    assert len(dataset) == 5 and list(dataset.skipped.values()) == ["listed but missing"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [dataset[i] for i in range(len(dataset))]
    assert len(caught) == 3 and all("returning the next good clip" in str(w.message) for w in caught)
    assert set(dataset.skipped) == {str(p) for p in bad} | {str(root / "ApplyEyeMakeup/v_ApplyEyeMakeup_g15_c01.avi")}
    # items 1-3 are bad and all map to the next good one, the last HandStandPushups clip (label 2)
    assert [label for _, label in items] == [0, 2, 2, 2, 2]
    assert all(torch.equal(items[1][0], clip) for clip, _ in items[2:])
    with pytest.raises(VideoDecodeError, match="Archery"):
        dataset.load_clip(1)
    assert "skipped=4" in repr(dataset)
