"""Segmentation metrics (overlap, surface distance, ROC AUC, confusion matrix), their summaries
over cases, and their tables. See docs/metrics.md for each definition, source and empty-mask rule.
"""

from seglab.metrics.binary import (COUNT_METRICS, DEFAULT_NSD_TOLERANCE, METRICS, SURFACE_METRICS,
                                   binary_metrics, dice_from_counts)
from seglab.metrics.case import confusion_matrix, evaluate_case, foreground_dice
from seglab.metrics.roc import add_roc_auc, roc_auc, roc_auc_cases, roc_auc_classes
from seglab.metrics.summary import AGGREGATES, summarize
from seglab.metrics.tables import format_summary_table, write_tables

__all__ = [
    "add_roc_auc",
    "AGGREGATES",
    "COUNT_METRICS",
    "DEFAULT_NSD_TOLERANCE",
    "METRICS",
    "SURFACE_METRICS",
    "binary_metrics",
    "confusion_matrix",
    "dice_from_counts",
    "evaluate_case",
    "foreground_dice",
    "format_summary_table",
    "roc_auc",
    "roc_auc_cases",
    "roc_auc_classes",
    "summarize",
    "write_tables",
]
