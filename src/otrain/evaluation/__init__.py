"""Evaluation of a trained model on labelled data: diagnostics (metrics, thresholds,
misclassified cutouts), plots, recovery of injected sources (checkinfer), Grad-CAM, the learning
curve and the HTML report. The metrics themselves live below the stages that use them, in
:mod:`otrain.metrics`.
"""

from otrain.evaluation.calibration import calibration_summary
from otrain.evaluation.checkinfer import check_inference
from otrain.evaluation.diagnostics import DiagnosticsResult, diagnose, run_diagnostics
from otrain.evaluation.gradcam import compute_grad_cam, run_grad_cam
from otrain.evaluation.learning_curve import (
    LearningCurveConfig,
    LearningCurveResult,
    learning_curve,
)
from otrain.evaluation.plots import plot_results
from otrain.evaluation.report import build_report
from otrain.evaluation.scores import Scores, score
from otrain.evaluation.thresholds import operating_points, optimal_thresholds

__all__ = [
    "DiagnosticsResult",
    "LearningCurveConfig",
    "LearningCurveResult",
    "Scores",
    "build_report",
    "calibration_summary",
    "check_inference",
    "compute_grad_cam",
    "diagnose",
    "learning_curve",
    "operating_points",
    "optimal_thresholds",
    "plot_results",
    "run_diagnostics",
    "run_grad_cam",
    "score",
]
