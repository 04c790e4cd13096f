"""Deep ensembles, temperature scaling and the operating point, after (or around) training.

``TrainConfig(ensemble=N)`` (``otrain-train --ensemble N``) trains N members one after another
(each with DDP when ``nproc > 1``) and keeps them in one model file.

Splits. The usual seeded, grouped (``--group-by``) split gives the test rows and ONE shared
validation split (``--frac``), which no member trains or early-stops on. Member ``i`` (seed
``seed + i``: initial weights, shuffling, augmentation, dropout) early-stops on its own grouped
split of the remaining training rows: ``val_frac`` of them, drawn with seed ``seed + i``, and
trains on the rest (``member_splits=False``: every member trains on all training rows and
early-stops on the shared validation rows). A single model (N = 1) is trained as before:
early stopping on the validation rows.

Calibration (``calibrate``, default on), in two steps. (1) Prior correction: class-weighted
training (the default) makes the network's P(real) that of a balanced set, which a temperature
cannot move back (benchmarks/ztf_recalibrate.py: ECE 0.13 with a temperature alone on ZTF
alerts, 0.03 with the correction), so the model's ``logit_bias`` is ``log(n_real / n_bogus)``
of the training rows (:func:`otrain.models.ensemble.prior_bias`; 0 without class weights).
(2) One temperature ``T`` for the model (or the whole ensemble) minimises the negative
log-likelihood of the mean of the members' ``softmax(logits / T + [0, bias])`` on the shared
validation rows (:func:`otrain.models.ensemble.fit_temperature`). Those rows were held out from
every member's training (for one model, and with ``member_splits=False``, they also chose the
early-stopping epoch, a mild optimism on a single scalar). Scores then carry the class mix of
the training rows: a night with another bogus share is off by the same prior ratio.

The threshold: ``target_fnr`` / ``target_fpr`` on the calibrated validation scores, a given
``threshold``, or by default (``"auto"``) the best validation MCC within the FPR
:data:`~otrain.training.config.AUTO_TARGET_FPR` (:func:`choose_threshold`). The reported
validation metrics use the same rows; the test rows, untouched until now, give the reported test
numbers, with Wilson 95% intervals on the FNR and FPR. Why not out-of-fold: the members would
each be calibrated on different rows, and the ensemble mean, which is what is scored, would have
no common held-out rows at all. Members train in turn; history.csv gains a ``member`` column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from otrain.datacube.cube import Datacube
from otrain.metrics import (
    best_mcc_threshold,
    binary_metrics,
    calibration_metrics,
    error_rates_with_intervals,
    threshold_for_target,
)
from otrain.models.ensemble import combine, fit_temperature, logits_probabilities, prior_bias
from otrain.models.normalise import AUTO
from otrain.progress import info
from otrain.training.config import AUTO_TARGET_FPR, EPOCH_THRESHOLD, TrainConfig
from otrain.training.ddp import DistContext
from otrain.training.evaluate import predict_all
from otrain.training.outputs import class_sizes
from otrain.training.splits import Split, SplitImages, group_values, split_indices

__all__ = ["FEW_BOGUS", "calibrate_and_measure", "checkpoint_path", "choose_threshold",
           "member_seed", "member_split", "shared_split"]

#: Where the temperature and the validation metrics come from (recorded).
CALIBRATION_ROWS = "validation rows (the --frac split, held out from every member's training)"
#: Fewer validation rows of the class a target needs than this: the choice gets a loud note.
FEW_BOGUS = 30


def checkpoint_path(root: Path, config: TrainConfig, index: int) -> Path:
    """``checkpoint.pt``, or ``checkpoint_member<i>.pt`` for an ensemble member."""
    return root / ("checkpoint.pt" if config.ensemble == 1 else f"checkpoint_member{index}.pt")


def shared_split(cube: Datacube, config: TrainConfig,
                  quiet: bool) -> tuple[np.ndarray | None, np.ndarray, Split]:
    """Group values, labels and the run's train / validation / test split."""
    groups = group_values(cube, config.group_by)
    if groups is None and "objectId" in cube.table.colnames:
        repeated = len(cube) - np.unique(np.asarray(cube.table["objectId"])).size
        if repeated:
            info(f"note: {repeated} cutouts share their objectId with another; --group-by "
                 "objectId keeps each object on one side of the split", quiet)
    y_all = cube.labels
    return groups, y_all, split_indices(y_all, config.val_frac, config.test_frac, config.seed,
                                        groups)


def member_seed(seed: int, index: int) -> int:
    """Seed of ensemble member ``index`` (member 0 keeps the run's seed)."""
    return int(seed) + int(index)


def member_split(y_all: np.ndarray, shared: Split, config: TrainConfig, index: int,
                 groups: np.ndarray | None) -> Split:
    """The rows member ``index`` trains and early-stops on (its ``test`` part is empty).

    One network (``config.ensemble == 1``) gets the shared split itself, as before ensembles.
    """
    if config.ensemble == 1:
        return shared
    empty = np.empty(0, dtype=np.int64)
    if not config.member_splits:
        return Split(shared.train, shared.val, empty)
    y = np.full(y_all.shape, -1, dtype=np.int64)
    y[shared.train] = y_all[shared.train]
    own = split_indices(y, config.val_frac, 0.0, member_seed(config.seed, index), groups)
    return Split(own.train, own.val, empty)


def _logits(nets: list[nn.Module], source: SplitImages, rows: np.ndarray, ctx: DistContext,
            dev: torch.device, batch_size: int) -> np.ndarray:
    """Member logits ``(M, len(rows), 2)``."""
    return np.stack([predict_all(net, source, rows, ctx, dev, batch_size).numpy()
                     for net in nets])


def calibrate_and_measure(nets: list[nn.Module], source: SplitImages, split: Split,
                          y_all: np.ndarray, config: TrainConfig, ctx: DistContext,
                          dev: torch.device, quiet: bool = False
                          ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Calibrate, choose the threshold and measure the model on the shared split.

    Parameters
    ----------
    nets : list of nn.Module
        The trained members (best-epoch weights).
    source, split, y_all
        Images, the shared split and all labels.
    config : TrainConfig
        The run's settings (``calibrate``, ``target_fnr``, ``target_fpr``, ``threshold``).
    ctx, dev
        Process group and device (every rank computes the same numbers).
    quiet : bool, default False
        No notes on stderr (they are recorded in ``threshold_choice`` all the same).

    Returns
    -------
    (dict, dict)
        The model-file metadata to add (``temperature``, ``logit_bias``, ``threshold``,
        ``threshold_choice``, ``calibration``) and the metrics (``threshold``, ``sizes``,
        ``validation``, ``test`` at the threshold on calibrated scores, ``calibration``
        before / after on both, ``test_error_rates`` with 95% Wilson intervals,
        ``threshold_choice``, ``members``).
    """
    parts = {"validation": split.val, "test": split.test}
    logits = {n: _logits(nets, source, rows, ctx, dev, config.batch_size)
              for n, rows in parts.items() if rows.size}
    y = {n: y_all[rows] for n, rows in parts.items()}
    y_train = y_all[split.train]
    bias = (prior_bias(int(np.sum(y_train == 1)), int(np.sum(y_train == 0)))
            if config.calibrate and config.class_weights else 0.0)
    temperature = (fit_temperature(logits["validation"], y["validation"], bias=bias)
                   if config.calibrate else 1.0)
    raw = {n: combine(logits_probabilities(z))[0] for n, z in logits.items()}
    cal = {n: combine(logits_probabilities(z, temperature, bias)) for n, z in logits.items()}
    threshold, choice = choose_threshold(config, y["validation"], cal["validation"][0], quiet)
    calib: dict[str, Any] = {"temperature": temperature, "logit_bias": bias,
                             "logit_bias_from": ("log(n_real / n_bogus) of the training rows "
                                                 "(prior correction of the class weights)"
                                                 if bias else "none"),
                             "fitted": bool(config.calibrate),
                             "rows": CALIBRATION_ROWS, "n_bins": 10}
    metrics: dict[str, Any] = {"threshold": threshold, "threshold_choice": choice}
    for name in parts:
        if name not in logits:
            metrics[name] = None
            calib[name] = None
            continue
        metrics[name] = binary_metrics(y[name], cal[name][0], threshold)
        metrics[name]["mean_p_real_std"] = float(np.mean(cal[name][1]))
        calib[name] = {"before": calibration_metrics(y[name], raw[name]),
                       "after": calibration_metrics(y[name], cal[name][0])}
    metrics["calibration"] = calib
    metrics["test_error_rates"] = (error_rates_with_intervals(y["test"], cal["test"][0],
                                                              threshold)
                                   if "test" in logits else None)
    metrics["members"] = [
        {"validation_auc": binary_metrics(y["validation"],
                                          logits_probabilities(z, temperature, bias))["auc"]}
        for z in logits["validation"]]
    metrics["sizes"] = {n: class_sizes(y_all[rows]) for n, rows in (
        ("train", split.train), ("validation", split.val), ("test", split.test))}
    meta = {"temperature": temperature, "logit_bias": bias, "threshold": threshold,
            "threshold_choice": choice,
            "calibration": {k: v for k, v in calib.items()}}
    return meta, metrics


def choose_threshold(config: TrainConfig, y_val: np.ndarray, p_val: np.ndarray,
                     quiet: bool = False) -> tuple[float, dict[str, Any]]:
    """The stored threshold and how it was chosen (recorded as ``threshold_choice``).

    A given ``threshold`` is kept. A target (``target_fnr``, ``target_fpr``) is met on the
    calibrated validation scores. The default (``threshold="auto"``) is the threshold of best
    MCC among those whose validation FPR is at most
    :data:`~otrain.training.config.AUTO_TARGET_FPR`: a weak model gets the lowest threshold
    meeting that FPR (as ``--target-fpr``), a strong one a balanced point well inside it rather
    than spending the whole FPR budget on recall. With no validation row of the class it
    needs, ``"auto"`` falls back to :data:`~otrain.training.config.EPOCH_THRESHOLD` (an
    explicit target is an error), and with fewer than :data:`FEW_BOGUS` such rows the choice
    is noted as noisy.
    """
    if config.threshold != AUTO:
        return float(config.threshold), {"method": "given", "value": float(config.threshold)}
    auto = config.target_fnr is None and config.target_fpr is None
    fnr, fpr = config.target_fnr, (AUTO_TARGET_FPR if auto else config.target_fpr)
    method = "target_fnr" if fnr is not None else "target_fpr"
    cls = 1 if fnr is not None else 0
    n_cls = int(np.sum(np.asarray(y_val) == cls))
    name = "real" if cls else "bogus"
    if n_cls == 0 and auto:
        info(f"note: the validation rows hold no {name} cutout, so the threshold cannot be "
             f"chosen for an FPR of {AUTO_TARGET_FPR:g}; it is {EPOCH_THRESHOLD}", quiet)
        return EPOCH_THRESHOLD, {"method": "default", "value": EPOCH_THRESHOLD,
                                 "reason": f"no {name} validation row"}
    threshold = threshold_for_target(y_val, p_val, fnr, fpr)
    if auto:
        method = "max_mcc_within_fpr"
        threshold = best_mcc_threshold(y_val, p_val, minimum=threshold)
    val = binary_metrics(y_val, p_val, threshold)
    choice: dict[str, Any] = {"method": method, "target": fnr if fnr is not None else fpr,
                              "default": auto, "rows": CALIBRATION_ROWS, "scores": "calibrated",
                              "n_rows_of_class": n_cls, "validation_fnr": val["fnr"],
                              "validation_fpr": val["fpr"]}
    if n_cls < FEW_BOGUS:
        note = (f"the threshold {threshold:.4g} was chosen on {n_cls} {name} validation "
                f"row(s) only: expect the {'FNR' if cls else 'FPR'} of new data to differ from "
                f"the target by several points (more {name} rows, or a larger --frac, help)")
        choice["note"] = note
        info(f"note: {note}", quiet)
    return threshold, choice
