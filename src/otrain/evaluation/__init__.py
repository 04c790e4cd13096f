"""Evaluation of a trained model: metrics, plots, diagnostics (see the submodules)."""
