"""Check inference on injected sources: recovery against magnitude, score and FWHM plots.

Inputs are two ``astropy`` ASCII tables (commented header, ECSV or plain header):

``crossmatch.dat`` (written by :mod:`otrain.simulate` or gmadet)
    one row per injected source; needs ``closest_candID`` (the candidate found nearest to it)
    and ``mag`` (its simulated magnitude). An empty / ``None`` / ``--`` id, or ``Nmatches == 0``
    when that column exists, means that no candidate was found.
``infer_results.dat`` (written by ``otrain-infer``)
    one row per scored candidate; needs ``cand_ID``, ``label1`` (P(real)), ``FWHM`` and
    ``FWHMPSF``. ``cand_ID`` must be unique.

Matching is a dictionary join of ``closest_candID`` onto ``cand_ID`` (no nested loop). An injected
source is *recovered* at a cut ``p`` when its candidate is in the inference table and
``label1 > p`` (strict, as everywhere in otrain); sources that were never detected, or whose
candidate was not scored (e.g. flagged EDGE), count as not recovered, so the recovery fraction is
out of all injected sources. Scored candidates not matched to an injected source are "other".

Error bars of fractions are Wilson score intervals at one sigma (z = 1), which stay inside [0, 1]
for 0 or all recovered. Magnitude bins are half-open and cover everything:
``mag < m0``, ``m0 <= mag < m1``, ..., ``mag >= mk``. FWHM / FWHMPSF is only computed where
FWHMPSF is finite and positive; the other rows are left out of the FWHM plots and counted.

Outputs in ``<plots>/CheckInfer/`` (file names follow O'TRAIN where the content matches):
``recovery_vs_mag.png``, ``distrib_CNN_prob_sim.png`` (P(real) of injected sources per magnitude
bin), ``distrib_CNNprob_all_and_sim.png`` (all / injected / other: counts and normalised
fractions, which replaces O'TRAIN's ``distrib_CNN_prob_all.png`` and ``fraction_per_bin.png``),
``distrib_FWHM_simulation.png`` (injected sources per P(real) bin), ``distrib_FWHM_real_vs_sim.png``
(other vs injected; the FWHM bounds of the command line are drawn in both FWHM plots) and
``checkinfer.json`` (all the numbers).
"""


from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from otrain.evaluation.checkinfer_plots import (
    plot_all_scores,
    plot_fwhm,
    plot_recovery,
    plot_sim_scores,
)
from otrain.evaluation.recovery import (
    CROSSMATCH_COLUMNS,
    CROSSMATCH_NAME,
    INFER_COLUMNS,
    INFER_NAME,
    PLOT_NAMES,
    SUMMARY_NAME,
    CheckInferConfig,
    CheckInferResult,
    Matched,
    fwhm_ratio,
    fwhm_summary,
    mag_bins,
    match,
    prob_bins,
    read_table,
    recovery_row,
    recovery_table,
    resolve_input,
    wilson_interval,
)
from otrain.outputs import check_writable, write_text_atomic
from otrain.progress import info

__all__ = [
    "CROSSMATCH_NAME", "INFER_NAME", "PLOT_NAMES", "SUMMARY_NAME", "CheckInferConfig",
    "CheckInferResult", "Matched", "check_inference", "fwhm_ratio", "fwhm_summary", "mag_bins",
    "match", "prob_bins", "read_table", "recovery_row", "recovery_table", "resolve_input",
    "wilson_interval",
]

# ------------------------------------------------------------------------------------------
def check_inference(crossmatch: str | Path, infer: str | Path, plots: str | Path,
                    config: CheckInferConfig | None = None, overwrite: bool = False,
                    quiet: bool = False) -> CheckInferResult:
    """Compare inference results with the injected sources and write plots and a summary.

    Parameters
    ----------
    crossmatch : str or Path
        ``crossmatch.dat`` or a folder holding it.
    infer : str or Path
        ``infer_results.dat`` or a folder holding it.
    plots : str or Path
        Output root; files go to ``<plots>/CheckInfer/``.
    config : CheckInferConfig, optional
        Magnitude limits, P(real) cuts, FWHM bounds.
    overwrite : bool, default False
        Replace existing outputs.
    quiet : bool, default False
        Print nothing.

    Returns
    -------
    CheckInferResult
        The summary (as in ``checkinfer.json``) and the files written.
    """
    config = config or CheckInferConfig()
    config.validate()
    cross_path = resolve_input(crossmatch, CROSSMATCH_NAME)
    infer_path = resolve_input(infer, INFER_NAME)
    folder = Path(plots) / "CheckInfer"
    for name in (*PLOT_NAMES, SUMMARY_NAME):
        check_writable(folder / name, overwrite)
    cross_table = read_table(cross_path, CROSSMATCH_COLUMNS, "closest_candID")
    infer_table = read_table(infer_path, INFER_COLUMNS, "cand_ID")
    m = match(cross_table, infer_table, infer_path)
    rec = recovery_table(m, config)
    summary = {"crossmatch": str(cross_path.resolve()), "infer": str(infer_path.resolve()),
               "config": {k: list(v) if isinstance(v, tuple | list) else v
                          for k, v in asdict(config).items()},
               "counts": m.counts, "recovery": rec["by_maglim"], "recovery_curve": rec["curve"],
               "fwhm_ratio": fwhm_summary(m, config),
               "error_bars": "Wilson score interval, z = 1 (68.3%)"}
    files = [plot_recovery(rec["curve"], config, folder / PLOT_NAMES[0], overwrite),
             plot_sim_scores(m, config, folder / PLOT_NAMES[1], overwrite),
             plot_all_scores(m, folder / PLOT_NAMES[2], overwrite),
             *plot_fwhm(m, config, folder, overwrite)]
    files.append(write_text_atomic(folder / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n",
                                   overwrite))
    info(f"CheckInfer outputs written to {folder}", quiet)
    return CheckInferResult(summary, files)

