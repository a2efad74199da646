"""Audit: match generations to training images, calibrated verdicts, statistics."""
from ..matching.calibration import Calibration, calibrate, empirical_p_values, threshold_at_fpr
from .run import AuditResult, audit
from .stats import score_stats

__all__ = ["AuditResult", "audit", "Calibration", "calibrate", "empirical_p_values", "threshold_at_fpr",
           "score_stats"]
