from __future__ import annotations

from pathlib import Path

import pytest

from tests.script_loading import load_script
from tests.test_dc_transfer import dc_transfer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ablation(monkeypatch: pytest.MonkeyPatch):
    return load_script(REPO / "bench" / "dc_ablation.py", "bench_dc_ablation", monkeypatch)


def _metrics(r1: float, nmi: float) -> dict:
    return {"R@1": r1, "NMI": nmi, "MAP@R": r1 / 3}


def test_runs_change_one_thing_and_start_pretrained_variants_from_the_source_trunk(ablation, tmp_path: Path) -> None:
    calls = []

    def fake_run(name: str, argv: list[str], out: Path) -> dict:
        calls.append((name, dc_transfer.get_args_parser().parse_args(argv), out))
        return _metrics(0.1, 0.7)

    ablation.run = fake_run
    results: dict[str, dict] = {}
    ablation.variant_job(tmp_path, results, "validation", "pretrained-per-image", 4, 100)
    ablation.variant_job(tmp_path, results, "validation", "pretrained-per-image", 4, 100)  # cached: not run again
    (_, source, source_out), (_, target, _) = calls
    assert len(calls) == 2 and (tmp_path / "results.json").is_file()
    options = dict(source.data_option)
    assert source.init == "random" and source.num_learners == 1 and options["seed"] == ablation.SOURCE_SEED
    assert target.init == f"ssl:{source_out / 'K1' / 'trunk.pth'}"  # the variant's init wins over --init random
    assert dict(target.data_option)["seed"] == 1 and target.num_learners == 4 and target.cluster_images_per_class == 0
    assert (target.epochs, target.warmup_epochs, target.dataset) == (8, 1, "shapes")


def test_k_above_one_is_compared_with_the_k1_run_of_its_reference(ablation) -> None:
    seed, name = 100, ablation.job_name
    results = {
        name("validation", "baseline", 1, seed): _metrics(0.15, 0.71),
        name("validation", "baseline", 4, seed): _metrics(0.13, 0.70),
        name("validation", "per-image", 4, seed): _metrics(0.16, 0.72),  # above the baseline's K = 1 on both
        name("validation", "no-warmup", 4, seed): _metrics(0.16, 0.70),  # above on R@1 only
    }
    variants = ["baseline", "per-image", "no-warmup"]
    assert ablation.winners(results, variants, seed) == [("per-image", 4)]
    table = ablation.ablation_table(results, variants, seed)
    assert "| per-image | 4 | 16.00 | 72.00 | 5.33 | +1.00 | +1.00 | +0.33 |" in table
    assert "| baseline | 4 | 13.00 | 70.00 | 4.33 | -2.00 | -1.00 | -0.67 |" in table
