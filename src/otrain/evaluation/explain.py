"""Checking explanation maps, and a model-agnostic one: the deletion test and occlusion.

**Deletion test.** A map that shows what the network uses must point at pixels the network
needs: replacing the top 10 % of the map's pixels with the cutout's background (the per-channel
median) should lower the probability of the explained class more than replacing a random 10 %
(the mean of :data:`RANDOM_MASKS` seeded random masks). :func:`deletion_test` measures both drops
per cutout; the test passes when the mean drop of the top pixels exceeds the mean drop of random
ones over the cutouts shown. Cutouts whose map is empty (zero everywhere: no positive evidence)
are left out and counted.

**Occlusion** (Zeiler & Fergus 2014; the check ALeRCE shows beside its stamps): slide a square
patch of background over the cutout and record how much the explained class's probability drops;
the map is that drop (negative drops set to 0), normalised to ``[0, 1]``. It needs no gradient
and no layer, so it works for any network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from otrain.models.modelfile import LoadedModel, predict_proba

#: Fraction of the pixels masked by the deletion test.
DELETE_FRACTION = 0.10
#: Random masks averaged per cutout.
RANDOM_MASKS = 5


def _background(images: np.ndarray) -> np.ndarray:
    """Per-cutout, per-channel median ``(N, C, 1, 1)``."""
    return np.median(images, axis=(2, 3), keepdims=True)


def _p_class(loaded: LoadedModel, images: np.ndarray, target: np.ndarray) -> np.ndarray:
    p = predict_proba(loaded, images.astype(np.float32))
    return np.where(np.asarray(target) == 1, p, 1.0 - p)


@dataclass
class DeletionResult:
    """Per-cutout drops of P(explained class) and the verdict."""

    drop_top: np.ndarray
    drop_random: np.ndarray
    n_empty: int

    @property
    def passed(self) -> bool | None:
        """True when masking the top pixels hurts more on average; None with no usable map."""
        if self.drop_top.size == 0:
            return None
        return bool(np.mean(self.drop_top) > np.mean(self.drop_random))

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures."""
        n = int(self.drop_top.size)
        return {"n": n, "n_empty_maps": int(self.n_empty), "fraction": DELETE_FRACTION,
                "mean_drop_top": float(np.mean(self.drop_top)) if n else None,
                "mean_drop_random": float(np.mean(self.drop_random)) if n else None,
                "passed": self.passed}


def deletion_test(loaded: LoadedModel, images: np.ndarray, heatmaps: np.ndarray,
                  target: np.ndarray, seed: int = 0,
                  fraction: float = DELETE_FRACTION) -> DeletionResult:
    """Drop of P(target) when the top ``fraction`` of each map, or a random one, is masked.

    Parameters
    ----------
    loaded : LoadedModel
        The model explained.
    images : numpy.ndarray
        Raw cutouts ``(N, C, H, W)``.
    heatmaps : numpy.ndarray
        Maps ``(N, H, W)`` (larger = more important).
    target : numpy.ndarray
        Explained class per cutout (1 real, 0 bogus).
    seed : int, default 0
        Seed of the random masks.
    fraction : float, default 0.1
        Share of the pixels masked.

    Returns
    -------
    DeletionResult
        Drops for the cutouts with a non-empty map.
    """
    images = np.asarray(images, dtype=np.float32)
    n, _, h, w = images.shape
    flat = np.asarray(heatmaps, dtype=np.float64).reshape(n, -1)
    keep = flat.max(axis=1) > 0
    images, flat, target = images[keep], flat[keep], np.asarray(target)[keep]
    if images.shape[0] == 0:
        return DeletionResult(np.empty(0), np.empty(0), int(n))
    k = max(1, round(fraction * h * w))
    bg = _background(images)
    base = _p_class(loaded, images, target)

    def masked(pixels: np.ndarray) -> np.ndarray:  # pixels: (M, k) flat indices
        mask = np.zeros((pixels.shape[0], h * w), bool)
        np.put_along_axis(mask, pixels, True, axis=1)
        mask = mask.reshape(-1, 1, h, w)
        return np.where(mask, bg, images)

    top = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    drop_top = base - _p_class(loaded, masked(top), target)
    rng = np.random.default_rng(seed)
    drops = [base - _p_class(loaded, masked(np.argsort(rng.random(flat.shape), axis=1)[:, :k]),
                             target) for _ in range(RANDOM_MASKS)]
    return DeletionResult(drop_top, np.mean(drops, axis=0), int(n - images.shape[0]))


def merge_deletions(parts: list[DeletionResult]) -> DeletionResult:
    """One result from the results of several batches."""
    return DeletionResult(np.concatenate([r.drop_top for r in parts] or [np.empty(0)]),
                          np.concatenate([r.drop_random for r in parts] or [np.empty(0)]),
                          sum(r.n_empty for r in parts))


def occlusion_maps(loaded: LoadedModel, images: np.ndarray, target: np.ndarray,
                   patch: int | None = None, stride: int | None = None) -> np.ndarray:
    """Occlusion maps ``(N, H, W)`` in ``[0, 1]``: the drop of P(target) under a sliding patch.

    The patch (default: an eighth of the side, at least 3 pixels) is filled with the cutout's
    per-channel median; each pixel gets the mean drop of the patches covering it.
    """
    images = np.asarray(images, dtype=np.float32)
    n, _, h, w = images.shape
    patch = patch or max(3, min(h, w) // 8)
    stride = stride or max(1, patch // 2)
    bg = _background(images)
    base = _p_class(loaded, images, target)
    total = np.zeros((n, h, w))
    count = np.zeros((h, w))
    ys = sorted({*range(0, max(1, h - patch + 1), stride), max(0, h - patch)})
    xs = sorted({*range(0, max(1, w - patch + 1), stride), max(0, w - patch)})
    for y0 in ys:
        for x0 in xs:
            occluded = images.copy()
            occluded[:, :, y0:y0 + patch, x0:x0 + patch] = bg
            drop = base - _p_class(loaded, occluded, target)
            total[:, y0:y0 + patch, x0:x0 + patch] += drop[:, None, None]
            count[y0:y0 + patch, x0:x0 + patch] += 1
    maps = np.clip(total / np.maximum(count, 1), 0.0, None)
    peak = maps.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, maps / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)


def deletion_figure(results: dict[str, DeletionResult], method: str) -> Figure:
    """Mean drop of P(explained class), top 10 % of the map against random 10 %, per outcome."""
    names = [k for k, r in results.items() if r.drop_top.size]
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(names))
    for off, key, label, colour in ((-0.2, "drop_top", "top 10% of the map masked", "C3"),
                                    (0.2, "drop_random", "random 10% masked", "C7")):
        vals = [getattr(results[k], key) for k in names]
        means = [float(np.mean(v)) for v in vals]
        sems = [float(np.std(v) / np.sqrt(max(len(v), 1))) for v in vals]
        ax.bar(x + off, means, 0.4, yerr=sems, capsize=3, color=colour, label=label)
    ax.set_xticks(x, [f"{k.replace('_', ' ')}\n(n={results[k].drop_top.size})" for k in names],
                  fontsize=8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("drop of P(explained class)")
    allr = merge_deletions(list(results.values()))
    verdict = {True: "PASSED", False: "FAILED", None: "not run (no non-empty map)"}[allr.passed]
    empty = f"; {allr.n_empty} empty map(s) left out" if allr.n_empty else ""
    ax.set_title(f"{method} deletion test {verdict}: mean drop {_f(allr, 'drop_top')} (top) vs "
                 f"{_f(allr, 'drop_random')} (random){empty}", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def _f(r: DeletionResult, key: str) -> str:
    v = getattr(r, key)
    return f"{np.mean(v):.3f}" if v.size else "n/a"
