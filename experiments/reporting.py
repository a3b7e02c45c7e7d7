"""Report writers of the experiments: metrics.json, results.md, plots and TensorBoard scalars.

Shared by ``ssl_ucf101.py`` (:func:`write_ssl_results`), ``dc_transfer.py`` (:func:`write_dc_results`,
:func:`log_dc_epoch`) and ``image_transfer.py`` (:func:`write_image_results`), so each script reads as parse, build,
train, evaluate, report. Only rank 0 calls them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from permgym.config import PermSamplingConfig
from permgym.data.images import ImageSet
from permgym.distributed import World
from permgym.finetune import FinetuneConfig
from permgym.probe import RETRIEVAL_KS, ProbeData


# ---------------------------------------------------------------------------------------------------- ssl_ucf101
def ssl_flat_metrics(results: dict[str, dict[str, Any]], main_variant: str, data: ProbeData, world: World) -> dict:
    """metrics.json: the ``--sampler`` run's metrics as they are, every ``--compare`` run's prefixed by its name."""
    metrics: dict[str, float] = dict(results[main_variant]["metrics"])
    for variant, result in results.items():
        if variant != main_variant:
            metrics.update({f"{variant}/{key}": value for key, value in result["metrics"].items()})
    metrics.update({"data/train_videos": len(data.train_labels), "data/test_videos": len(data.test_labels),
                    "data/classes": len(data.classes), "ddp/world_size": world.world_size})  # fmt: skip
    metrics.update({f"data/skipped_{subset}": count for subset, count in data.skipped.items()})
    return metrics


def write_ssl_results(
    args: argparse.Namespace,
    config: PermSamplingConfig,
    ft: FinetuneConfig,
    results: dict[str, dict[str, Any]],
    data: ProbeData,
    world: World,
    out: Path,
    total_seconds: float,
) -> dict[str, float]:
    """Write metrics.json (with ``time/total_s`` = ``total_seconds``), results.md and the plots (rank 0); return the
    metrics."""
    metrics = ssl_flat_metrics(results, args.sampler, data, world)
    metrics["time/total_s"] = total_seconds
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    ks = [k for k in RETRIEVAL_KS if f"retrieval/top{k}" in metrics]
    lines = [
        f"# Ordering self-supervision on {args.dataset}",
        "",
        f"Task {config.task} ({config.num_frames} frames{f', {config.grid}x{config.grid} jigsaw' if config.uses_spatial else ''}), "
        f"trunk {config.trunk}, {config.steps_per_episode * config.updates_per_step} pretraining updates of "
        f"{config.batch_size} clips "
        f"({config.updates_per_step} per sampler step, {config.optimizer} lr {config.lr}), action mode "
        f"{config.action_mode}, reward {config.reward}. Fine-tuning {ft.epochs} epochs, batch {ft.batch_size}, "
        f"{ft.optimizer} lr {ft.lr} (trunk x{ft.trunk_lr_scale}), dropout {ft.dropout}. Test: video-level accuracy, "
        f"softmax averaged over {ft.test_clips} windows per video; retrieval: test videos query training videos "
        f"(pretrained trunk, cosine, clip features averaged over "
        f"{int(results[args.sampler]['metrics'].get('retrieval/windows', 1))} windows per video). "
        f"{len(data.train_labels)} training / {len(data.test_labels)} test videos, "
        f"{len(data.classes)} classes (chance {100 / len(data.classes):.1f} %), seed {args.seed}, "
        f"{world.world_size} process(es).",
        "",
        "| run | ordering val acc | fine-tuned top-1 | top-5 | "
        + " | ".join(f"retrieval top-{k}" for k in ks)
        + " | pretrain s | fine-tune s | eval s |",
        "|---|" + "---:|" * (len(ks) + 6),
    ]
    for variant, result in results.items():
        m = result["metrics"]
        ssl = f"{100 * m['ssl/val_accuracy']:.1f}" if "ssl/val_accuracy" in m else "-"
        lines.append(
            f"| {variant}{' (main)' if variant == args.sampler else ''} | {ssl} | {100 * m['finetune/top1']:.1f} | "
            f"{100 * m['finetune/top5']:.1f} | " + " | ".join(f"{100 * m[f'retrieval/top{k}']:.1f}" for k in ks)
            + f" | {m.get('time/ssl_s', 0):.0f} | {m.get('time/finetune_s', 0):.0f} | {m.get('time/eval_s', 0):.0f} |"
        )  # fmt: skip
    lines += ["", "Accuracies in %. Plots: loss_curves.png, permutation_usage.png, confusion_matrix.png; "
              "TensorBoard: tb/. Pretrained trunk: trunk.pth."]  # fmt: skip
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot_ssl_results(results, args.sampler, data.classes, out)
    return metrics


def plot_ssl_results(results: dict[str, dict[str, Any]], main_variant: str, classes: list[str], out: Path) -> None:
    """loss_curves.png, permutation_usage.png (share of samples per permutation over pretraining) and
    confusion_matrix.png (of the ``--sampler`` run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {variant: f"C{i}" for i, variant in enumerate(results)}
    pretrained = {v: r for v, r in results.items() if r.get("ssl_history")}
    fig, axes = plt.subplots(1, 4, figsize=(20, 3.8), layout="constrained")
    for variant, result in pretrained.items():
        history = result["ssl_history"]
        updates = [r["update"] for r in history]
        window = max(1, len(history) // 20)
        smooth = np.convolve([r["train_loss"] for r in history], np.ones(window) / window, mode="valid")
        axes[0].plot(updates[window - 1 :], smooth, color=colours[variant], label=f"{variant} (train, smoothed)")
        tasks = [k.split("/")[0] for k in history[0] if k.endswith("/val_loss")]
        for style, task in zip(("--", ":"), tasks, strict=False):
            axes[0].plot(updates, [r[f"{task}/val_loss"] for r in history], style, color=colours[variant],
                         label=f"{variant} ({task}, held-out)")  # fmt: skip
            axes[1].plot(updates, [100 * r[f"{task}/val_accuracy"] for r in history], style, color=colours[variant],
                         label=f"{variant} ({task})")  # fmt: skip
    axes[0].set(xlabel="pretraining update", ylabel="ordering loss", title="pretraining loss")
    axes[1].set(xlabel="pretraining update", ylabel="held-out ordering accuracy (%)", title="pretraining accuracy")
    for variant, result in results.items():
        history = result["finetune_history"]
        axes[2].plot([r["epoch"] for r in history], [r["loss"] for r in history], color=colours[variant], label=variant)
        tested = [r for r in history if "test_top1" in r]
        axes[3].plot([r["epoch"] for r in tested], [100 * r["test_top1"] for r in tested], marker="o",
                     color=colours[variant], label=variant)  # fmt: skip
    axes[2].set(xlabel="epoch", ylabel="training loss", title="fine-tuning loss")
    axes[3].set(xlabel="epoch", ylabel="video-level top-1 (%)", title="test accuracy")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.savefig(out / "loss_curves.png", dpi=100)
    plt.close(fig)

    rows = [(v, task) for v, r in pretrained.items() for task in r["ssl_history"][0]["counts"]]
    fig, axes = plt.subplots(max(1, len(rows)), 1, figsize=(10, 3 * max(1, len(rows))), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, (variant, task) in zip(axes[:, 0], rows, strict=False):
        history = pretrained[variant]["ssl_history"]
        counts = np.array([r["counts"][task] for r in history], dtype=np.float64)
        bins = np.array_split(np.arange(len(counts)), min(len(counts), 30))
        share = np.stack([counts[b].sum(0) / max(counts[b].sum(), 1) for b in bins]).T  # [K, bins]
        k = share.shape[0]
        image = ax.imshow(share * k, aspect="auto", cmap="viridis", origin="lower", vmin=0,
                          extent=(0, history[-1]["update"], -0.5, k - 0.5))  # fmt: skip
        ax.set(xlabel="pretraining update", ylabel=f"{task} bank row",
               title=f"{variant}: share of samples per permutation x K (1 = uniform)")  # fmt: skip
        fig.colorbar(image, ax=ax)
    fig.savefig(out / "permutation_usage.png", dpi=100)
    plt.close(fig)

    confusion = np.array(results[main_variant]["confusion"], dtype=np.float64)
    normalised = confusion / np.clip(confusion.sum(1, keepdims=True), 1, None)
    side = min(12.0, 3 + 0.12 * len(classes))
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    if len(classes) <= 60:
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=5)
        ax.set_yticks(range(len(classes)), classes, fontsize=5)
    ax.set(xlabel="predicted class", ylabel="true class", title=f"{main_variant}: test confusion (row-normalised)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.savefig(out / "confusion_matrix.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- dc_transfer
def log_config(writer: SummaryWriter, config: dict[str, Any]) -> None:
    """The run's options as one Markdown table in TensorBoard's text tab."""
    rows = "\n".join(f"| {k} | {v} |" for k, v in config.items())
    writer.add_text("config", "| key | value |\n|---|---|\n" + rows)


def log_dc_epoch(writer: SummaryWriter | None, record: dict[str, Any], clustering: dict[str, Any] | None) -> None:
    """One epoch's training, re-clustering and evaluation scalars (no-op without a writer)."""
    if writer is None:
        return
    epoch = record["epoch"]
    writer.add_scalar("losses/train", record["loss"], epoch)
    writer.add_scalar("charts/triplets", record["triplets"], epoch)
    writer.add_scalar("time/train_seconds", record["seconds"], epoch)
    writer.add_scalar("time/recluster_seconds", record["recluster_seconds"], epoch)
    for name, value in record["metrics"].items():
        writer.add_scalar(f"eval/{name}", value, epoch)
    if clustering is not None:
        writer.add_scalars("clusters/sizes", {str(k): s for k, s in enumerate(clustering["sizes"])}, epoch)
        writer.add_scalar("clusters/unassigned", clustering["unassigned"], epoch)
        writer.add_scalar("clusters/class_nmi", clustering["class_nmi"], epoch)


def write_dc_results(args: argparse.Namespace, runs: list[dict[str, Any]], init: str, out: Path,
                     skipped: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    """Write metrics.json (with ``data/skipped_<part>``, the images of each part that did not decode), results.md
    and the plots; return the metrics.json content."""
    summary = {}
    for run in runs:
        train = sum(r["seconds"] for r in run["log"])
        recluster = sum(r["recluster_seconds"] for r in run["log"])
        summary[f"K={run['num_learners']}"] = {
            **run["metrics"],
            "train_seconds": train,
            "recluster_seconds": recluster,
            "recluster_share": recluster / max(train + recluster, 1e-9),
        }
    primary = summary[f"K={args.num_learners}"]
    metrics = {**primary, "num_learners": args.num_learners, "runs": summary}
    metrics.update({f"data/skipped_{part}": count for part, count in skipped.items()})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    names = [k for k in primary if k.startswith(("R@", "NMI", "MAP"))]
    lines = [
        f"# Divide and conquer on {args.dataset}",
        "",
        f"Backbone {args.backbone}, init `{init}`, d = {args.embedding_dim}, {args.epochs} epochs x "
        f"{args.iters_per_epoch or 'one pass of'} batches of {args.batch_size} ({args.samples_per_class} per class), "
        f"loss {args.loss}, {args.warmup_epochs} K = 1 warm-up epochs, clusters on {args.cluster_on} features, "
        f"re-clustered every {args.recluster_every} epochs, full embedding "
        f"from epoch {args.full_embedding_epoch}, K = 1 fine-tuning from epoch {args.finetune_epoch}. Metrics of the "
        "final epoch on the test classes (no test-set model selection).",
        "",
        "| K | " + " | ".join(names) + " | train s | re-clustering share |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for name, row in summary.items():
        lines.append(
            f"| {name[2:]} | "
            + " | ".join(f"{100 * row[n]:.2f}" for n in names)
            + f" | {row['train_seconds']:.0f} | {100 * row['recluster_share']:.1f} % |"
        )
    lines += ["", "Metrics in %. Plots: recall.png, embedding.png, clusters.png, curves.png; TensorBoard: tb/.", ""]
    lines += ["Cluster-class NMI at each re-clustering (epoch: NMI %, mean classes per cluster):", ""]
    for run in runs:
        entries = [h for h in run["history"] if h["num_clusters"] > 1]
        cells = ", ".join(
            f"{h['epoch']}: {100 * h['class_nmi']:.1f} ({np.mean(h['classes_per_cluster']):.0f})" for h in entries
        )
        lines.append(f"- K={run['num_learners']}: {cells or 'no clustering (K = 1)'}")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot_dc_results(
        runs, data_ks=[int(n[2:]) for n in names if n.startswith("R@")], out=out, projection=args.projection
    )
    return metrics


def plot_dc_results(runs: list[dict[str, Any]], data_ks: list[int], out: Path, projection: str) -> None:
    """recall.png, embedding.png (t-SNE/PCA of test embeddings by class), clusters.png, curves.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    fig, ax = plt.subplots(figsize=(5, 4))
    for run in runs:
        ax.plot(
            data_ks, [100 * run["metrics"][f"R@{k}"] for k in data_ks], marker="o", label=f"K={run['num_learners']}"
        )
    ax.set(xscale="log", xlabel="K (neighbours)", ylabel="Recall@K (%)", title="Recall@K on the test classes")
    ax.set_xticks(data_ks, [str(k) for k in data_ks])
    ax.legend()
    fig.savefig(out / "recall.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4.5), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        x, y = run["embeddings"].numpy(), run["labels"].numpy()
        keep = np.random.default_rng(0).permutation(len(x))[:2000]
        x, y = x[keep], y[keep]
        if projection == "tsne":
            xy = TSNE(2, init="pca", perplexity=min(30.0, (len(x) - 1) / 3), random_state=0).fit_transform(x)
        else:
            xy = PCA(2, random_state=0).fit_transform(x)
        ax.scatter(xy[:, 0], xy[:, 1], c=y, cmap="gist_ncar", s=4)
        ax.set(title=f"K={run['num_learners']}: test embeddings ({projection}), colour = class", xticks=[], yticks=[])
    fig.savefig(out / "embedding.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    divided = [run for run in runs if run["num_learners"] > 1]
    fig, axes = plt.subplots(1, max(len(divided), 1), figsize=(5 * max(len(divided), 1), 3.5), squeeze=False)
    for ax, run in zip(axes[0], divided, strict=False):
        entries = [h for h in run["history"] if h["num_clusters"] > 1]
        bottom = np.zeros(len(entries))
        for k in range(run["num_learners"]):
            sizes = np.array([h["sizes"][k] for h in entries])
            ax.bar([str(h["epoch"]) for h in entries], sizes, bottom=bottom, label=f"cluster {k}")
            bottom += sizes
        ax.bar(
            [str(h["epoch"]) for h in entries],
            [h["unassigned"] for h in entries],
            bottom=bottom,
            color="lightgrey",
            label="unassigned",
        )
        ax.set(
            xlabel="re-clustering at epoch", ylabel="training images", title=f"K={run['num_learners']} cluster sizes"
        )
        ax.legend(fontsize=7)
    fig.savefig(out / "clusters.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    fig, (loss_ax, r1_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    for run in runs:
        log = run["log"]
        loss_ax.plot([r["epoch"] for r in log], [r["loss"] for r in log], label=f"K={run['num_learners']}")
        evals = [r for r in log if r["metrics"]]
        r1_ax.plot(
            [r["epoch"] for r in evals],
            [100 * r["metrics"]["R@1"] for r in evals],
            marker=".",
            label=f"K={run['num_learners']}",
        )
    loss_ax.set(xlabel="epoch", ylabel="training loss")
    r1_ax.set(xlabel="epoch", ylabel="test R@1 (%)")
    loss_ax.legend()
    fig.savefig(out / "curves.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- image_transfer
def write_image_results(state: dict[str, Any], args: argparse.Namespace, train: ImageSet, test: ImageSet,
                  out: Path) -> dict[str, float]:  # fmt: skip
    """metrics.json, results.md, curves.png and ap_per_class.png; returns the metrics."""
    times = {f"time/{k}": v for k, v in state["times"].items()}
    metrics = {**state["metrics"], **state["probe"], **times, "data/train_images": len(train),
               "data/test_images": len(test), "data/skipped_train": len(train.skipped),
               "data/skipped_test": len(test.skipped)}  # fmt: skip
    if state["history"]:
        metrics["finetune/train_loss"] = state["history"][-1]["loss"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    tuned = bool(state["metrics"])
    top1 = "" if test.multilabel else " top-1 |"
    lines = [f"# Image-classification transfer on {args.dataset}", "",
             f"Trunk {args.backbone}, init `{args.init_resolved}`; {len(train)} training / {len(test)} test images, "
             f"{len(test.classes)} classes; views {args.image_size} px (test: shorter side {args.resize}, "
             f"{args.test_crops} crop(s)). Fine-tuning {args.epochs} epochs, batch {args.batch_size}, {args.optimizer} "
             f"lr {args.lr} (trunk x{args.trunk_lr_scale}); probe {args.probe_epochs} epochs on frozen features. "
             f"mAP = VOC 2007 11-point interpolated AP averaged over classes; AUC = area under the PR curve.", "",
             f"| evaluation | mAP | mAP (AUC) |{top1}", "|---|---:|---:|" + ("" if test.multilabel else "---:|")]  # fmt: skip
    for name, prefix in ((("fine-tuned", ""),) if tuned else ()) + (("linear probe", "probe/"),):
        extra = "" if test.multilabel else f" {100 * metrics[prefix + 'top1']:.1f} |"
        lines.append(
            f"| {name} | {100 * metrics[prefix + 'mAP']:.2f} | {100 * metrics[prefix + 'mAP_auc']:.2f} |{extra}"
        )
    lines += ["", "| class | AP fine-tuned | AP probe |", "|---|---:|---:|"]
    lines += [f"| {c} | {100 * metrics.get(f'AP/{c}', float('nan')):.1f} | {100 * metrics[f'probe/AP/{c}']:.1f} |"
              for c in test.classes]  # fmt: skip
    lines += ["", "AP in %. Plots: curves.png, ap_per_class.png; TensorBoard: tb/."]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot_image_results(state, metrics, test.classes, out)
    return metrics


def plot_image_results(state: dict[str, Any], metrics: dict[str, float], classes: list[str], out: Path) -> None:
    """curves.png (fine-tuning loss, test mAP) and ap_per_class.png (11-point AP, fine-tuned vs probe)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = state["history"]
    fig, (loss_ax, map_ax) = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
    loss_ax.plot([r["epoch"] for r in history], [r["loss"] for r in history], marker=".")
    tested = [r for r in history if "test_mAP" in r]
    map_ax.plot([r["epoch"] for r in tested], [100 * r["test_mAP"] for r in tested], marker="o", label="fine-tuned")
    map_ax.axhline(100 * metrics["probe/mAP"], color="C1", linestyle="--", label="linear probe")
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="fine-tuning loss")
    map_ax.set(xlabel="epoch", ylabel="test mAP (%)", title="test mAP (11-point)")
    map_ax.legend()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(classes)), 3.5), layout="constrained")
    x = np.arange(len(classes))
    for shift, (name, prefix) in zip((-0.2, 0.2), (("fine-tuned", "AP/"), ("linear probe", "probe/AP/")), strict=True):
        ax.bar(x + shift, [100 * metrics.get(prefix + c, float("nan")) for c in classes], width=0.4, label=name)
    ax.set_xticks(x, classes, rotation=90, fontsize=7)
    ax.set(ylabel="AP (%)", title="test AP per class (11-point)")
    ax.legend()
    fig.savefig(out / "ap_per_class.png", dpi=100)
    plt.close(fig)
