"""``otrain report``: one self-contained HTML page describing a trained model.

For a training folder ``<model-path>/CNN_training/<name>/`` (or a model file and a cube) the page
holds the metrics (validation and test from ``metrics.json``, and those measured now on the
evaluated cube), the confusion matrix, the optimal thresholds, every plot of
:mod:`otrain.evaluation.plots`, the training history, contact sheets of the misclassified cutouts
and a model card from the model file metadata. Images are inline (base64 PNG), styles are inline,
there is no script and no external link: the file can be mailed or archived as it is.

By default the model is evaluated on the held-out TEST cube (``test_set/datacube/cube_test.h5``):
the validation set chose the epoch, so its numbers are optimistic. One model pass.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from otrain._version import __version__
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError
from otrain.evaluation.calibration import calibration_summary, describe_choice
from otrain.evaluation.diagnostics import select_examples
from otrain.evaluation.gallery import outcome_sheet
from otrain.evaluation.plots import PLOT_FILES, build_figures
from otrain.evaluation.prevalence import check_prevalence, prevalence_section, prevalence_summary
from otrain.evaluation.scores import Scores, score_datacube
from otrain.evaluation.thresholds import optimal_thresholds
from otrain.metrics import METRIC_NAMES, binary_metrics
from otrain.models.modelfile import load_model
from otrain.outputs import check_writable, write_text_atomic
from otrain.progress import info

TEST_CUBE = Path("test_set/datacube/cube_test.h5")
VALIDATION_CUBE = Path("validation_set/datacube/cube_validation.h5")
_LABELS = {"auc": "ROC AUC", "accuracy": "accuracy", "precision": "precision", "recall": "recall",
           "f1": "F1", "mcc": "MCC", "fpr": "FPR (bogus called real)",
           "fnr": "FNR (real called bogus)", "average_precision": "average precision (PR AUC)"}
_CAPTIONS = {
    "roc": "ROC curve: recall against false-positive rate over all thresholds.",
    "precision_recall": "Precision-recall curve and average precision.",
    "f1_mcc": "F1 and MCC, then FNR and FPR, against the threshold; dotted lines mark the best "
              "thresholds and the FNR targets.",
    "score_distribution": "Scores of the true real and the true bogus cutouts.",
    "mag": "Recall and precision per magnitude bin, with the class counts of each bin.",
    "magerr": "Recall and precision per magnitude-error bin.",
    "reliability": "Calibration: fraction of real cutouts against the mean score of each bin "
                   "(with the curve before calibration when the model is calibrated).",
    "reliability_prevalence": "Calibration on the cube and reweighted to the prevalence stated "
                              "above (the share of real candidates in the stream).",
}
_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em}
th{background:#f2f2f2;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff6e0;border-left:4px solid #e0a000;padding:.4em .8em}.muted{color:#666}
figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}figcaption{color:#444}"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"
    return _esc(value)


def _png(fig: Figure, dpi: int = 90) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(fig: Figure, caption: str, alt: str) -> str:
    return (f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{_png(fig)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _table(header: list[str], rows: list[list[str]], numeric: bool = True) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    td = '<td class="n">' if numeric else "<td>"
    body = "".join("<tr>" + "".join(
        f"<th>{c}</th>" if i == 0 else f"{td}{c}</td>" for i, c in enumerate(row))
        + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def read_history(path: Path) -> list[dict[str, float]]:
    """Rows of a ``history.csv`` written by training (empty if the file is missing)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in (None, "")}
                for row in csv.DictReader(f)]


def history_figure(history: list[dict[str, float]], best_epoch: int = 0) -> Figure:
    """Loss, accuracy and validation AUC against the epoch."""
    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 3)
    members = sorted({int(row.get("member", 0)) for row in history})
    for m in members:  # an ensemble's history.csv has a member column: one curve each
        rows = [row for row in history if int(row.get("member", 0)) == m]
        epochs = [row["epoch"] for row in rows]
        tag, alpha = (f" {m}", 0.5 + 0.5 / len(members)) if len(members) > 1 else ("", 1.0)
        for ax, key, ylabel in ((axes[0], "loss", "loss (cross-entropy)"),
                                (axes[1], "acc", "accuracy")):
            ax.plot(epochs, [row.get(f"train_{key}", np.nan) for row in rows], "o-",
                    color="0.25", alpha=alpha, label=f"train{tag}")
            ax.plot(epochs, [row.get(f"val_{key}", np.nan) for row in rows], "s-",
                    color="tab:purple", alpha=alpha, label=f"validation{tag}")
            ax.set(ylabel=ylabel, title=ylabel)
        axes[2].plot(epochs, [row.get("val_auc", np.nan) for row in rows], "s-",
                     color="tab:purple", alpha=alpha, label=f"validation{tag}")
    axes[2].set(ylabel="ROC AUC", title="validation ROC AUC")
    for ax in axes:
        if best_epoch:
            ax.axvline(best_epoch, color="gray", ls=":", label=f"best epoch ({best_epoch})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def resolve_inputs(model_dir: str | Path | None, model: str | Path | None,
                   cube: str | Path | None) -> tuple[Path | None, Path, Path, list[str]]:
    """Find the model folder, model file and evaluation cube; notes on the choices made."""
    notes: list[str] = []
    folder = Path(model_dir) if model_dir is not None else None
    if folder is not None and not folder.is_dir():
        raise OtrainError("no such training folder (expected <model-path>/CNN_training/<name>)",
                          folder)
    if model is None:
        if folder is None:
            raise OtrainError("give --model-dir, or --model and --cube")
        candidates = [folder / f"{folder.name}.safetensors"]
        if not candidates[0].is_file():
            candidates = sorted(folder.glob("*.safetensors"))
        if len(candidates) != 1:
            raise OtrainError(f"expected one .safetensors model file, found {len(candidates)}",
                              folder)
        model_file = candidates[0]
    else:
        model_file = Path(model)
        if folder is None and (model_file.parent / "metrics.json").is_file():
            folder = model_file.parent
    if cube is not None:
        cube_path = Path(cube)
    elif folder is None:
        raise OtrainError("give --cube (the labelled cube to evaluate on) with --model")
    elif (folder / TEST_CUBE).is_file():
        cube_path = folder / TEST_CUBE
    elif (folder / VALIDATION_CUBE).is_file():
        cube_path = folder / VALIDATION_CUBE
        notes.append("This training kept no test set: the numbers below come from the "
                     "validation set, which chose the best epoch, so they are optimistic.")
    else:
        raise OtrainError("holds no test or validation cube; give --cube", folder)
    return folder, model_file, cube_path, notes


def _metrics_section(train_metrics: dict[str, Any], now: dict[str, Any], label: str) -> str:
    cols = [("validation (training run)", train_metrics.get("validation")),
            ("test (training run)", train_metrics.get("test")), (label, now)]
    cols = [(name, m) for name, m in cols if m]
    rows = [[k, *[_num(m.get(k)) for _, m in cols]] for k in ("n", "n_real", "n_bogus")]
    rows += [[_LABELS[k], *[_num(m.get(k)) for _, m in cols]] for k in METRIC_NAMES]
    out = _table(["metric", *[_esc(n) for n, _ in cols]], rows)
    old = train_metrics.get("test")
    if old and label.startswith("test") and old.get("auc") is not None and now.get("auc") \
            is not None and abs(old["auc"] - now["auc"]) > 1e-3:
        out += ('<p class="note">The AUC measured now differs from the one recorded at '
                "training: the model file or the cube changed since.</p>")
    return out


def _calibration_section(cal: dict[str, Any], train_metrics: dict[str, Any],
                         thr: float) -> str:
    r = cal["error_rates"]
    rows = [[name, _num(r[k]), _num(r[f"{k}_low"]), _num(r[f"{k}_high"]), str(r[f"n_{n}"])]
            for name, k, n in (("FNR (real called bogus)", "fnr", "real"),
                               ("FPR (bogus called real)", "fpr", "bogus"))]
    out = (f"<p>Threshold {thr:g}: {_esc(describe_choice(cal['threshold_choice']))}.</p>"
           + _table(["at the threshold (this cube)", "rate", "95% low", "95% high", "of"], rows))
    crow = [["this cube", _num(cal["after"]["ece"]), _num(cal["after"]["brier"]),
             _num((cal["before"] or {}).get("ece")), _num((cal["before"] or {}).get("brier"))]]
    for part, c in ((train_metrics.get("calibration") or {}).items()):
        if part in ("validation", "test") and c:
            crow.append([f"{part} (training run)", _num(c["after"]["ece"]),
                         _num(c["after"]["brier"]), _num(c["before"]["ece"]),
                         _num(c["before"]["brier"])])
    out += _table(["rows", "ECE", "Brier", "ECE before", "Brier before"], crow)
    out += (f'<p class="muted">Temperature {cal["temperature"]:.4g} (logits divided by it), '
            f'logit bias {cal.get("logit_bias", 0.0):.4g} (then added to the real logit: the '
            "prior correction of the class weights); 1 and 0 = uncalibrated. ECE: 10 "
            "equal-width bins of P(real). Intervals: Wilson score.")
    if cal["mean_p_real_std"] is not None:
        out += (f" Ensemble of {cal['n_members']} networks: the score is their mean P(real); "
                f"mean spread (p_real_std) {cal['mean_p_real_std']:.4f}.")
    return out + "</p>"


def _confusion_section(m: dict[str, Any]) -> str:
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    def pct(a: int, b: int) -> str:
        return f"{a} ({100 * a / b:.1f}%)" if b else str(a)
    rows = [["true real", pct(tp, tp + fn), pct(fn, tp + fn), str(tp + fn)],
            ["true bogus", pct(fp, fp + tn), pct(tn, fp + tn), str(fp + tn)]]
    return _table(["", "called real", "called bogus", "total"], rows)


def _thresholds_section(opt: dict[str, Any]) -> str:
    if opt["max_mcc"] is None:
        return "<p>n/a: needs both real and bogus cutouts.</p>"
    items = [("max MCC", opt["max_mcc"]), ("max F1", opt["max_f1"])]
    items += [(f"FNR &le; {100 * t['target']:g}%", t["point"]) for t in opt["fnr_targets"]]
    rows = [[name, _num(p["threshold"]), _num(p["recall"]), _num(p["precision"]),
             _num(p["fpr"]), _num(p["fnr"]), _num(p["f1"]), _num(p["mcc"])] for name, p in items]
    return (_table(["choice", "threshold", "recall", "precision", "FPR", "FNR", "F1", "MCC"],
                   rows) + '<p class="muted">A candidate is called real when P(real) &gt; '
            "threshold. The FNR rows give the largest threshold that loses at most that fraction "
            "of the real candidates.</p>")


def _model_card(meta: dict[str, Any], model_file: Path, cube_path: Path,
                scores: Scores, train_metrics: dict[str, Any]) -> str:
    tr = meta.get("training", {}) or {}
    cfg = tr.get("config", {}) or {}
    ens = meta.get("ensemble") or {}
    sizes = train_metrics.get("sizes") or {}
    split = "; ".join(f"{k}: {v.get('n')} ({v.get('real')} real, {v.get('bogus')} bogus)"
                      for k, v in sizes.items() if v) or _esc(tr.get("split_sizes", "n/a"))
    rows = [
        ("model file", model_file), ("architecture", meta.get("architecture")),
        ("input", f"{meta.get('in_channels')} channel(s) {meta.get('channels')}, "
                  f"{'x'.join(str(s) for s in meta.get('input_size', []))} pixels"),
        ("normalisation", meta.get("normalisation")), ("dropout", meta.get("dropout")),
        ("threshold recorded", meta.get("threshold")),
        ("temperature", meta.get("temperature", 1.0)),
        ("logit bias", meta.get("logit_bias", 0.0)),
        ("ensemble", f"{ens.get('n_members')} members, seeds "
                     f"{[m.get('seed') for m in ens.get('members', [])]}" if ens else "no"),
        ("training cube", f"{tr.get('cube', 'n/a')} ({tr.get('cube_rows', 'n/a')} rows)"),
        ("split", split), ("seed", tr.get("seed")),
        ("epochs", f"{tr.get('epochs_run', 'n/a')} run of {tr.get('epochs_requested', 'n/a')}, "
                   f"best {tr.get('best_epoch', 'n/a')}"),
        ("optimiser", f"Adam, lr {cfg.get('lr', 'n/a')}, batch {cfg.get('batch_size', 'n/a')}, "
                      f"augment {cfg.get('augment', 'n/a')}, class weights "
                      f"{cfg.get('class_weights', 'n/a')}"),
        ("group-by", tr.get("group_by")),
        ("evaluated cube", f"{cube_path} ({len(scores)} labelled cutouts, "
                           f"{scores.n_unlabelled} unlabelled skipped)"),
        ("versions", f"trained with otrain {meta.get('otrain_version')}, torch "
                     f"{meta.get('torch_version')}; report by otrain {__version__}"),
    ]
    return _table(["", "value"], [[_esc(k), _esc("n/a" if v is None else v)] for k, v in rows],
                  numeric=False)


def build_report(model_dir: str | Path | None = None, model: str | Path | None = None,
                 cube: str | Path | None = None, output: str | Path | None = None,
                 threshold: float | None = None, overwrite: bool = False,
                 batch_size: int = 512, device: str = "cpu", quiet: bool = False,
                 prevalence: float | None = None) -> Path:
    """Evaluate a model once and write its HTML report.

    Parameters
    ----------
    model_dir : str or Path, optional
        Training folder ``<model-path>/CNN_training/<name>/`` (model file, ``metrics.json``,
        ``history.csv``, test and validation cubes).
    model : str or Path, optional
        Model file (default: the one in ``model_dir``).
    cube : str or Path, optional
        Labelled cube to evaluate on (default: the test cube of ``model_dir``, else its
        validation cube).
    output : str or Path, optional
        HTML file (default ``<model_dir>/report.html``, else ``<model stem>_report.html`` beside
        the model file).
    threshold : float, optional
        Real when ``P(real) > threshold`` (default: the threshold recorded in the model file).
    overwrite : bool, default False
        Replace an existing report.
    batch_size : int, default 512
        Cutouts scored at a time.
    device : str, default "cpu"
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    quiet : bool, default False
        Print nothing.
    prevalence : float, optional
        Share of real candidates for the metrics and calibration "at prevalence" (default: the
        cube's own), see :mod:`otrain.evaluation.prevalence`.

    Returns
    -------
    Path
        The report written.
    """
    check_prevalence(prevalence)
    folder, model_file, cube_path, notes = resolve_inputs(model_dir, model, cube)
    if output is None:
        output = (folder / "report.html" if folder is not None
                  else model_file.with_name(f"{model_file.stem}_report.html"))
    output = check_writable(output, overwrite)
    train_metrics: dict[str, Any] = {}
    if folder is not None and (folder / "metrics.json").is_file():
        try:
            train_metrics = json.loads((folder / "metrics.json").read_text())
        except json.JSONDecodeError:
            notes.append("metrics.json is unreadable; training metrics left out.")
    with open_datacube(cube_path) as cube_obj:
        loaded = load_model(model_file, device)
        thr = loaded.threshold if threshold is None else float(threshold)
        if not 0.0 <= thr <= 1.0:
            raise OtrainError(f"threshold must be in [0, 1], got {thr}")
        scores = score_datacube(loaded, cube_obj, batch_size, quiet)
        y, p = scores.y_true, scores.p_real
        picks = select_examples(y, p, thr, 0)
        m = binary_metrics(y, p, thr)
        counts = {"FP": m["confusion_matrix"][0][1], "FN": m["confusion_matrix"][1][0]}
        sheets = {k: outcome_sheet(cube_obj, scores, picks[k][:50], k, thr, counts[k])
                  for k in ("FP", "FN")}
    figs, plot_notes = build_figures(scores, thr, prevalence=prevalence)
    at = prevalence_summary(m, y, prevalence)
    opt = optimal_thresholds(y, p)
    is_test = cube_path.name == TEST_CUBE.name
    label = f"{'test' if is_test else 'evaluated'} cube (this report)"
    name = folder.name if folder is not None else model_file.stem
    history = read_history(folder / "history.csv") if folder is not None else []
    best_epoch = int(train_metrics.get("best_epoch") or 0)

    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>otrain report: {_esc(name)}</title><style>{_CSS}</style></head><body>",
             f"<h1>otrain report: {_esc(name)}</h1>",
             f'<p class="muted">Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by otrain '
             f"{_esc(__version__)}. Evaluated on <code>{_esc(cube_path)}</code> "
             f"({len(scores)} labelled cutouts: {m['n_real']} real, {m['n_bogus']} bogus) at "
             f"threshold {thr:g} (real when P(real) &gt; threshold).</p>"]
    parts += [f'<p class="note">{_esc(n)}</p>' for n in notes]
    parts += ["<h2>Metrics</h2>", _metrics_section(train_metrics, m, label),
              "<h2>At your share of real candidates</h2>", prevalence_section(at, m),
              "<h2>Confusion matrix</h2>", _confusion_section(m),
              "<h2>Calibration and operating point</h2>",
              _calibration_section(calibration_summary(scores, thr), train_metrics, thr),
              "<h2>Choosing the threshold</h2>", _thresholds_section(opt), "<h2>Plots</h2>"]
    parts += [_figure(fig, _CAPTIONS[k], PLOT_FILES[k]) for k, fig in figs.items()]
    parts += [f'<p class="muted">{_esc(n)}</p>' for n in plot_notes]
    parts.append("<h2>Training history</h2>")
    parts.append(_figure(history_figure(history, best_epoch),
                         "Loss, accuracy and validation AUC per epoch.", "training history")
                 if history else "<p>No history.csv found.</p>")
    parts.append("<h2>Misclassified cutouts</h2>")
    parts += [_figure(sheets[k], f"{k}: the most confident mistakes first (at most 50).",
                      f"contact sheet {k}") for k in ("FP", "FN")]
    parts += ["<h2>Model card</h2>", _model_card(loaded.meta, model_file, cube_path, scores,
                                                  train_metrics), "</body></html>"]
    write_text_atomic(output, "\n".join(parts) + "\n", overwrite)
    info(f"Saved to {output}", quiet)
    return output
