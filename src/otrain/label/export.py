"""What leaves the label database: the ``candid,label`` CSV, true/false folders, agreement."""

from __future__ import annotations

import csv
import io
import itertools
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from otrain.errors import OtrainError
from otrain.label.store import LabelStore
from otrain.outputs import check_writable, write_text_atomic

#: Label words -> the ``label`` column of the CSV (1 real, 0 bogus, as in the datacube).
CSV_VALUES = {"real": 1, "bogus": 0}


def final_labels(store: LabelStore, labeller: str | None = None) -> dict[str, Any]:
    """candid -> the event in force that says real or bogus (unsure and skip left out)."""
    return {c: ev for c, ev in store.current(labeller).items() if ev.label in CSV_VALUES}


def export_csv(store: LabelStore, path: str | Path, labeller: str | None = None,
               overwrite: bool = False) -> int:
    """Write ``candid,label,labeller,time`` (label 1 real / 0 bogus), readable by
    ``otrain-convert --labels``.

    Parameters
    ----------
    store : LabelStore
        The database.
    path : str or Path
        CSV to write (atomically).
    labeller : str, optional
        Only this labeller's labels; by default each candidate's latest label of anyone.
    overwrite : bool, default False
        Replace an existing file.

    Returns
    -------
    int
        Rows written.
    """
    rows = final_labels(store, labeller)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["candid", "label", "labeller", "time"])
    for candid, ev in sorted(rows.items(), key=lambda kv: kv[1].id):
        writer.writerow([candid, CSV_VALUES[ev.label], ev.labeller, ev.time])
    write_text_atomic(path, buf.getvalue(), overwrite=overwrite)
    return len(rows)


def export_folders(store: LabelStore, outdir: str | Path, labeller: str | None = None,
                   overwrite: bool = False) -> dict[str, int]:
    """Copy labelled cutout files into ``outdir/true`` and ``outdir/false`` (O'TRAIN layout).

    Only for databases made from a cutout folder (their candidates' sources are files).

    Returns
    -------
    dict
        Files copied per folder.
    """
    sources = store.sources()
    rows = final_labels(store, labeller)
    outdir = Path(outdir)
    counts = {"true": 0, "false": 0}
    plan = []
    for candid, ev in rows.items():
        src = Path(sources.get(candid, ""))
        if not sources.get(candid) or not src.is_file():
            raise OtrainError(f"candidate {candid}: its cutout file is not at hand "
                              "(true/false folders need a database made from --cutouts)",
                              src if sources.get(candid) else None)
        folder = "true" if ev.label == "real" else "false"
        plan.append((src, outdir / folder / src.name))
    for _, dest in plan:
        check_writable(dest, overwrite)
    for src, dest in plan:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copy2(src, tmp)
        tmp.replace(dest)
        counts[dest.parent.name] += 1
    return counts


def agreement(store: LabelStore) -> dict[str, Any]:
    """How often labellers agree on the candidates they both called real or bogus.

    Returns
    -------
    dict
        ``labellers``; ``pairs``: per pair ``n`` (candidates both labelled real/bogus),
        ``agree`` (fraction) and ``kappa`` (Cohen's, None when undefined).
    """
    names = store.labellers()
    finals = {name: {c: ev.label for c, ev in final_labels(store, name).items()}
              for name in names}
    pairs = []
    for a, b in itertools.combinations(names, 2):
        shared = sorted(set(finals[a]) & set(finals[b]))
        entry: dict[str, Any] = {"a": a, "b": b, "n": len(shared), "agree": None,
                                 "kappa": None}
        if shared:
            la = [finals[a][c] for c in shared]
            lb = [finals[b][c] for c in shared]
            entry["agree"] = round(sum(x == y for x, y in zip(la, lb, strict=True))
                                   / len(shared), 4)
            entry["kappa"] = _kappa(la, lb)
        pairs.append(entry)
    return {"labellers": names, "pairs": pairs}


def _kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa (scikit-learn); None when undefined (both gave one class only)."""
    import warnings

    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")
        value = float(cohen_kappa_score(a, b, labels=list(CSV_VALUES)))
    return round(value, 4) if np.isfinite(value) else None
