"""Divide-and-conquer deep metric learning (Sanakoyeu et al., CVPR 2019) and retrieval evaluation."""

from __future__ import annotations

from metric.data import RetrievalTask, build_dataset, build_eval_task
from metric.evaluation import evaluate_retrieval, evaluate_vehicleid

__all__ = ["RetrievalTask", "build_dataset", "build_eval_task", "evaluate_retrieval", "evaluate_vehicleid"]
