"""Train a network on a datacube: splits, training loop, checkpoints, outputs.

Everything lands in ``<model_path>/CNN_training/<model_name>/`` (the original O'TRAIN layout)::

    <model_name>.safetensors                   the model file (otrain.models.modelfile)
    checkpoint.pt                              last epoch: weights, optimizer, best weights, history
    history.csv                                epoch, train_loss, train_acc, val_loss, val_acc,
                                               val_auc, seconds
    <model_name>_loss_vs_epochs.png, <model_name>_accuracy_vs_epochs.png
    metrics.json                               validation and test metrics at the threshold, sizes,
                                               calibration (ECE / Brier before and after),
                                               test FNR / FPR with Wilson 95% intervals
    validation_set/datacube/cube_validation.h5 the validation rows (for otrain-diagnostics, ...)
    test_set/datacube/cube_test.h5             the held-out test rows (when test_frac > 0)

Ensembles (``checkpoint_member<i>.pt``), calibration, threshold: :mod:`otrain.training.ensemble`.

Data: images are read through :meth:`otrain.datacube.Datacube.read` in sorted batches. When the
labelled rows take at most ``memory_limit_gb`` (2 GB by default) they are read and normalised once
into memory (fast); larger HDF5 cubes are read and normalised batch by batch, never whole.

Reproducibility: the weights start from ``torch.manual_seed(seed)``; every epoch reseeds torch (for
dropout) and draws its shuffle and augmentation (random flips and 90-degree rotations) from
``numpy.random.default_rng([seed, epoch])``, so the same seed gives the same weights on CPU (same
machine and torch thread count: float sums depend on it) and ``resume`` continues from the
checkpoint exactly as if the run had not stopped (``torch.use_deterministic_algorithms`` is on,
warn-only, while training). Changing the split or network settings on resume is refused.

Speed: ``torch.set_flush_denormal(True)`` for the process (denormal gradients took an epoch
from 10 s to 33 s); network and batches channels-last (oneDNN's NCHW convolution backward was a
third of a step); ``precision`` (:mod:`otrain.models.precision`): bf16/fp16 autocast of the
forward and validation passes, fp32 weights and optimizer, the first batch checked against fp32;
fused Adam (one kernel for all weights); dropout masks from a fast bit generator
(:mod:`otrain.models.dropout`); CPU batches above 128 cutouts run in chunks with one step
(:mod:`otrain.training.steps`).

The loss is cross-entropy, class-weighted ("balanced", from the training set) unless disabled;
the optimizer is Adam, at a constant learning rate or on a cosine schedule over ``epochs``
(:func:`otrain.training.config.epoch_lr`); early stopping watches the validation loss and the
weights of the best epoch are the ones saved.

Several processes (DDP, :mod:`otrain.training.ddp`): ``TrainConfig(nproc=N)`` (``otrain-train
--nproc N``) spawns N local processes; under torchrun (``WORLD_SIZE`` > 1) the run is distributed
by itself. Backend gloo on the CPU, NCCL on GPUs (``cuda:LOCAL_RANK``). Every rank computes the
same split and draws the same batch plan each epoch; each global batch is cut into one contiguous
sub-batch per rank, which reads only its own rows, and the loss of a sub-batch is its weighted sum
divided by the weight of the whole global batch, so after DDP's gradient averaging a step is the
single-process step (same effective batch size, learning rate and loss) up to float summation
order. Dropout masks are drawn per rank, so with dropout the weights differ from one process's
(the quality does not); without dropout they agree to float precision. Validation and the final
metrics are sharded: each rank scores a contiguous part, the logits are gathered on every rank,
and rank 0's numbers, broadcast, decide early stopping. Rank 0 alone writes (the checkpoint after
every epoch, the outputs at the end); every rank loads the checkpoint on resume (also one written
by another number of processes: the run goes on, with other dropout draws). Images are held in
memory when each local process's share of ``memory_limit_gb`` is enough, else read per sub-batch.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from otrain.datacube.cube import Datacube
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError
from otrain.models.networks import build_model, count_parameters
from otrain.models.precision import TrainPrecision, resolve_precision
from otrain.progress import Progress, info
from otrain.training import ddp as distributed
from otrain.training import ensemble as ens
from otrain.training.checks import check_finite, check_fresh, loader_workers, start_from
from otrain.training.config import TrainConfig, epoch_lr, resolve_for_cube, resolve_schedule
from otrain.training.ddp import DistContext
from otrain.training.evaluate import evaluate, predict_all
from otrain.training.outputs import (
    HISTORY_COLUMNS,
    RESUME_KEYS,
    TrainResult,
    load_checkpoint,
    resumable_settings,
    save_checkpoint,
    write_outputs,
)
from otrain.training.sanity import training_data_notes
from otrain.training.splits import (
    EpochBatches,
    Split,
    SplitImages,
    epoch_loader,
    epoch_plan,
    epoch_torch_seed,
)
from otrain.training.steps import train_epoch

__all__ = ["HISTORY_COLUMNS", "RESUME_KEYS", "TrainConfig", "TrainResult", "resumable_settings",
           "train"]


@dataclass
class _State:
    """One training in progress: data, network, optimizer and the bookkeeping of the epochs."""

    split: Split
    y_all: np.ndarray
    source: SplitImages
    net: nn.Module
    opt: torch.optim.Optimizer
    class_w: np.ndarray
    n_codes: int
    history: list[dict[str, float]] = field(default_factory=list)
    start: int = 0
    best_epoch: int = 0
    best_loss: float = float("inf")
    bad: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    prec: TrainPrecision | None = None


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------
def train(cube_path: str | Path, model_path: str | Path, model_name: str,
          config: TrainConfig | None = None, overwrite: bool = False,
          quiet: bool = False) -> TrainResult:
    """Train a network on a datacube and write the model folder.

    Parameters
    ----------
    cube_path : str or Path
        Labelled datacube (``.h5`` or original ``.npz``); unlabelled rows are ignored.
    model_path : str or Path
        Output root; the model goes to ``<model_path>/CNN_training/<model_name>/``.
    model_name : str
        Name of the model (folder and file names).
    config : TrainConfig, optional
        Settings (defaults of :class:`TrainConfig`). ``nproc > 1`` spawns that many local
        processes (DDP); under torchrun every launched process calls this function.
    overwrite : bool, default False
        Replace an existing model of that name. Without it, an existing model file or checkpoint
        stops the run (``config.resume`` continues from the checkpoint instead).
    quiet : bool, default False
        Print nothing (ranks other than 0 never print).

    Returns
    -------
    TrainResult
        Paths written, metrics (as in ``metrics.json``) and the per-epoch history (the same on
        every rank; only rank 0 writes the files).
    """
    config = config or TrainConfig()
    if config.nproc > 1 and not distributed.launched():
        config.validate()
        check_fresh(model_path, model_name, config, overwrite)
        return distributed.spawn(config.nproc, train,
                                 (cube_path, model_path, model_name, config, overwrite, quiet))
    ctx = distributed.setup(config.device)
    try:
        return _train(ctx, cube_path, model_path, model_name, config, overwrite,
                      quiet or not ctx.is_main)
    finally:
        distributed.cleanup(ctx)


def _train(ctx: DistContext, cube_path: str | Path, model_path: str | Path, model_name: str,
           config: TrainConfig, overwrite: bool, quiet: bool) -> TrainResult:
    with contextlib.ExitStack() as stack:
        try:  # set-up: every rank must get through it, or all stop (ctx.agree)
            config.validate()
            root = check_fresh(model_path, model_name, config, overwrite)
            if config.nproc > 1 and config.nproc != ctx.world_size:
                raise OtrainError(f"nproc {config.nproc} asked for inside a launched group of "
                                  f"{ctx.world_size} processes (torchrun); leave --nproc out")
            dev = ctx.device(config.device)
            cube = stack.enter_context(open_datacube(cube_path))
            config = resolve_for_cube(config, cube.channels, cube.attrs.get("source"))
            groups, y_all, split = ens.shared_split(cube, config, quiet)
            for note in training_data_notes(cube, y_all, split, config.batch_size):
                info(note, quiet)
            source = SplitImages(cube, np.concatenate([split.train, split.val, split.test]),
                                 config.normalise,
                                 config.memory_limit_gb * 1e9 / ctx.local_world_size)
        except Exception as exc:
            ctx.agree(exc)
            raise
        ctx.agree(None)
        states, members = [], []
        for i in range(config.ensemble):
            ckpt = ens.checkpoint_path(root, config, i)
            try:
                msplit = ens.member_split(y_all, split, config, i, groups)
                mconf = resolve_schedule(replace(config, seed=ens.member_seed(config.seed, i)),
                                         msplit.train.size)
                info(f"ensemble member {i + 1}/{config.ensemble} (seed {mconf.seed})",
                     quiet or config.ensemble == 1)
                st = _prepare(cube, ckpt, mconf, ctx, dev, quiet, msplit, y_all, source)
            except Exception as exc:
                ctx.agree(exc)
                raise
            ctx.agree(None)
            _run_epochs(st, ckpt, mconf, ctx, dev, quiet)
            st.net.load_state_dict(st.best_state)
            st.net.to(memory_format=torch.contiguous_format)  # as saved (safetensors: contiguous)
            states.append(st)
            members.append({"seed": mconf.seed, "split_sizes": msplit.sizes(),
                            "split": "own" if msplit is not split and config.member_splits
                            else "shared", "best_epoch": st.best_epoch,
                            "epochs_run": len(st.history), "epochs_cap": mconf.epochs,
                            "patience": mconf.patience})
            if i == 0:  # the recorded settings: member 0's epoch cap and patience
                resolved = (mconf.epochs, mconf.patience)
        config = replace(config, epochs=resolved[0], patience=resolved[1])
        nets = [st.net for st in states]
        extra, metrics = ens.calibrate_and_measure(nets, source, split, y_all, config, ctx, dev,
                                                   quiet)
        for m, row in zip(members, metrics.pop("members"), strict=True):
            m.update(row)
        if config.ensemble > 1:
            extra["ensemble"] = {"members": members, "combination": "mean of the members' "
                                 "softmax(logits / temperature + [0, logit_bias])"}
            metrics["members"] = members
        history = [{**row, "member": i} if config.ensemble > 1 else row
                   for i, st in enumerate(states) for row in st.history]
        metrics = {"threshold": metrics.pop("threshold"), "best_epoch": states[0].best_epoch,
                   "epochs_run": len(states[0].history), **metrics}
        result = write_outputs(cube, cube_path, root, model_name, nets, split,
                               {**asdict(config),
                                "precision_used": states[0].prec.precision.record()},
                               history, states[0].best_epoch, metrics,
                               ctx.world_size, write=ctx.is_main, extra_meta=extra)
        info(f"model written to {result.model_file}", quiet)
    return result


def _prepare(cube: Datacube, ckpt_path: Path, config: TrainConfig, ctx: DistContext,
             dev: torch.device, quiet: bool, split: Split, y_all: np.ndarray,
             source: SplitImages) -> _State:
    """Network, optimizer, and the state of the checkpoint when resuming, for one split."""
    c, h, w = cube.image_shape
    torch.manual_seed(config.seed)
    net = build_model(config.arch, c, (h, w), config.dropout).to(dev)
    if config.init_from and not config.resume:
        start_from(net, config, cube)
    net = net.to(memory_format=torch.channels_last)  # before the optimizer sees the weights
    # fused: one kernel for all weights (6x faster steps on the CPU than the foreach default)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr,
                           fused=True if dev.type in ("cpu", "cuda") else None)
    y_train = y_all[split.train]
    class_w = (y_train.size / (2.0 * np.bincount(y_train, minlength=2))
               if config.class_weights else np.ones(2))
    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    history: list[dict[str, float]] = []
    start, best_epoch, best_loss, bad = 0, 0, float("inf"), 0
    if config.resume:
        ckpt = load_checkpoint(ckpt_path, asdict(config), split, dev)
        try:
            net.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise OtrainError(f"damaged checkpoint ({detail}); start again with --overwrite",
                              ckpt_path) from None
        best_state = ckpt["best_model"]
        start, best_epoch = int(ckpt["epoch"]), int(ckpt["best_epoch"])
        best_loss, bad = float(ckpt["best_val_loss"]), int(ckpt["bad_epochs"])
        history = [dict(zip(HISTORY_COLUMNS, row, strict=True)) for row in ckpt["history"]]
        for row in history:
            row["epoch"] = int(row["epoch"])
        info(f"resuming after epoch {start} (best epoch {best_epoch})", quiet)
    procs = (f"; {ctx.world_size} processes ({ctx.backend}), global batch {config.batch_size}"
             if ctx.distributed else "")
    info(f"{cube.summary()}\nsplit: {split.sizes()}; {config.arch} network, "
         f"{count_parameters(net):,} parameters, on {dev}{procs}; images "
         f"{'in memory' if source.data is not None else 'read lazily'}; at most "
         f"{config.epochs} epochs, patience {config.patience or 'none'}", quiet)
    prec = TrainPrecision(resolve_precision(config.precision, dev), dev)
    prec.guard(net, torch.from_numpy(source.get(split.train[:config.batch_size])),
               (lambda d: float(ctx.broadcast([d])[0])) if ctx.distributed else None)
    info(prec.precision.describe(), quiet)
    return _State(split, y_all, source, net, opt, class_w, 8 if h == w else 4, history, start,
                  best_epoch, best_loss, bad, best_state, prec)


def _run_epochs(st: _State, ckpt_path: Path, config: TrainConfig, ctx: DistContext,
                dev: torch.device, quiet: bool) -> None:
    """Train epoch after epoch, validating, checkpointing and stopping early; updates ``st``."""
    weight = torch.tensor(st.class_w, dtype=torch.float32)
    model = ctx.wrap(st.net, dev)
    loader_gen = torch.Generator().manual_seed(config.seed)
    n_workers = loader_workers(config.workers, quiet)
    prev_det = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.utils.deterministic.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # a debugging aid of deterministic mode (NaN-filling every torch.empty): 7% of a step at
    # batch 32, and no kernel used here reads memory it has not written
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.set_flush_denormal(True)  # denormal gradients made CPU backward passes ~3x slower
    try:
        for epoch in range(st.start + 1, config.epochs + 1):
            if config.patience is not None and st.bad >= config.patience:
                break
            t0 = time.monotonic()
            for group in st.opt.param_groups:
                group["lr"] = epoch_lr(config, epoch)
            torch.manual_seed(epoch_torch_seed(config.seed, epoch, ctx.rank))
            batches, codes = epoch_plan(st.split.train, config.seed, epoch, config.batch_size,
                                        st.n_codes, config.augment)
            shares = None
            if ctx.distributed:  # same plan on every rank; each keeps its part of each batch
                shares = [(ctx.world_size / float(st.class_w[st.y_all[b]].sum()),
                           b.size / ctx.world_size) for b in batches]
                batches, codes = distributed.shard_plan(batches, codes, ctx.rank,
                                                        ctx.world_size)
            loader = epoch_loader(EpochBatches(st.source, st.y_all, batches, codes), n_workers,
                                  loader_gen, dev.type == "cuda")
            with Progress(len(batches), f"epoch {epoch}/{config.epochs}", quiet,
                          unit="batch") as bar:
                sums = train_epoch(model, loader, st.opt, weight, dev, config.epoch_threshold,
                                   bar, shares, st.prec)
            loss_sum, correct, total = ctx.all_sum(sums)
            check_finite(loss_sum, "training loss", epoch, config)
            val_logits = predict_all(st.net, st.source, st.split.val, ctx, dev,
                                      config.batch_size, st.prec.precision)
            check_finite(float(val_logits.sum()), "validation output", epoch, config)
            v_loss, v_acc, v_auc = evaluate(val_logits, st.y_all[st.split.val], weight,
                                             config.epoch_threshold)
            # rank 0's numbers decide (early stopping, best epoch) on every rank
            v_loss, v_acc, v_auc, seconds = ctx.broadcast([v_loss, v_acc, v_auc,
                                                           time.monotonic() - t0])
            row = {"epoch": epoch, "train_loss": loss_sum / max(total, 1),
                   "train_acc": correct / max(total, 1), "val_loss": v_loss, "val_acc": v_acc,
                   "val_auc": v_auc, "seconds": seconds}
            st.history.append(row)
            if v_loss < st.best_loss:
                st.best_loss, st.best_epoch, st.bad = v_loss, epoch, 0
                st.best_state = {k: v.detach().clone() for k, v in st.net.state_dict().items()}
            else:
                st.bad += 1
            if ctx.is_main:
                _checkpoint(ckpt_path, st, epoch, config, ctx.world_size)
            info(f"epoch {epoch}/{config.epochs}: loss {row['train_loss']:.4f} acc "
                 f"{row['train_acc']:.4f} | val_loss {v_loss:.4f} val_acc {v_acc:.4f} "
                 f"val_auc {v_auc:.4f} ({seconds:.1f} s)", quiet)
            if config.patience is not None and st.bad >= config.patience:
                info(f"early stopping: no better validation loss for {st.bad} epochs; keeping "
                     f"epoch {st.best_epoch}", quiet)
    finally:
        torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
        torch.utils.deterministic.fill_uninitialized_memory = prev_det[2]


def _checkpoint(path: Path, st: _State, epoch: int, config: TrainConfig, world: int) -> None:
    save_checkpoint(path, {
        "format": "otrain-checkpoint", "epoch": epoch, "model": st.net.state_dict(),
        "optimizer": st.opt.state_dict(), "best_model": st.best_state,
        "best_epoch": st.best_epoch, "best_val_loss": st.best_loss, "bad_epochs": st.bad,
        "history": [[float(r[k]) for k in HISTORY_COLUMNS] for r in st.history],
        "torch_rng_state": torch.get_rng_state(), "world_size": world,
        "config": json.dumps(asdict(config)),
        "split": {n: torch.from_numpy(getattr(st.split, n)) for n in ("train", "val", "test")}})
