"""Divide-and-conquer deep metric learning (Sanakoyeu et al., CVPR 2019) and retrieval evaluation."""

from __future__ import annotations

from metric.clustering import assign_clusters, drop_singleton_classes, kmeans, match_clusters
from metric.data import RetrievalTask, build_dataset, build_eval_task
from metric.evaluation import evaluate_retrieval, evaluate_vehicleid
from metric.losses import build_loss
from metric.miners import DistanceWeightedMiner
from metric.model import BACKBONES, EmbeddingNet, build_backbone
from metric.samplers import BatchedDataset, ClassBalancedBatchSampler, ClusterBatchSampler
from metric.trainer import DivideAndConquerTrainer, Schedule

__all__ = [
    "BACKBONES",
    "BatchedDataset",
    "ClassBalancedBatchSampler",
    "ClusterBatchSampler",
    "DistanceWeightedMiner",
    "DivideAndConquerTrainer",
    "EmbeddingNet",
    "RetrievalTask",
    "Schedule",
    "assign_clusters",
    "build_backbone",
    "build_dataset",
    "build_eval_task",
    "build_loss",
    "drop_singleton_classes",
    "evaluate_retrieval",
    "evaluate_vehicleid",
    "kmeans",
    "match_clusters",
]
