"""The label database, the query strategies and the exports of ``otrain label`` (API)."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest
import torch

from otrain.alerts.labels import read_label_csv
from otrain.errors import OtrainError
from otrain.label.export import agreement, export_csv, export_folders
from otrain.label.ranking import bald, disagreement, draws_from_model, rank, uncertainty
from otrain.label.store import LabelStore
from otrain.models.modelfile import LoadedModel
from otrain.models.networks import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_events_current_label_and_undo(tmp_path):
    db = tmp_path / "l.sqlite"
    with LabelStore(db) as store:
        store.add_label("a", "r", "ann")
        store.add_label("b", "bogus", "ann")
        store.add_label("a", "b", "ann")          # relabel: the latest event counts
        assert {c: e.label for c, e in store.current("ann").items()} == {"a": "bogus",
                                                                         "b": "bogus"}
        undone = store.undo("ann")                # cancels a->bogus, a is real again
        assert (undone.candid, undone.label) == ("a", "bogus")
        assert store.current("ann")["a"].label == "real"
        assert store.undo("ann").candid == "b"
        assert set(store.current("ann")) == {"a"}
        store.add_label("c", "u", "ann")
        store.add_label("d", "s", "ann")
        assert store.counts("ann") == {"real": 1, "bogus": 0, "unsure": 1, "skip": 1}
        assert store.undo("bob") is None          # nothing of bob's to undo
        with pytest.raises(OtrainError, match="label must be one of"):
            store.add_label("a", "maybe", "ann")
    # Every event is a row; nothing was updated or deleted; WAL journal.
    con = sqlite3.connect(db)
    labels = [r[0] for r in con.execute("SELECT label FROM events ORDER BY id")]
    assert labels == ["real", "bogus", "bogus", "undo", "undo", "unsure", "skip"]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    with LabelStore(db) as again:                 # reopened: the same state
        assert {c: e.label for c, e in again.current("ann").items()} == {
            "a": "real", "c": "unsure", "d": "skip"}


def test_nonce_records_once_and_threads_lose_nothing(tmp_path):
    store = LabelStore(tmp_path / "l.sqlite")
    first = store.add_label("a", "r", "ann", nonce="n1")
    assert store.add_label("a", "r", "ann", nonce="n1").id == first.id
    assert len(store.events()) == 1

    def worker(k: int) -> None:
        for i in range(25):
            store.add_label(f"c{k}_{i}", "real" if i % 2 else "bogus", f"w{k}", nonce=f"{i}")
            store.add_label(f"c{k}_{i}", "real" if i % 2 else "bogus", f"w{k}", nonce=f"{i}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.events()) == 1 + 8 * 25
    assert len(store.current()) == 1 + 8 * 25
    store.close()


def test_export_csv_is_read_by_convert_labels(tmp_path):
    store = LabelStore(tmp_path / "l.sqlite")
    for candid, label, who in (("1", "r", "ann"), ("2", "b", "ann"), ("3", "u", "ann"),
                               ("4", "s", "ann"), ("2", "r", "bob"), ("5", "b", "bob")):
        store.add_label(candid, label, who)
    out = tmp_path / "labels.csv"
    assert export_csv(store, out) == 3           # 1, 2 (bob's later real), 5; 3, 4 left out
    assert out.read_text().splitlines()[0] == "candid,label,labeller,time"
    assert read_label_csv(out) == {"1": 1, "2": 1, "5": 0}
    assert export_csv(store, tmp_path / "ann.csv", labeller="ann") == 2
    assert read_label_csv(tmp_path / "ann.csv") == {"1": 1, "2": 0}
    with pytest.raises(OtrainError, match="exists"):
        export_csv(store, out)
    agree = agreement(store)
    assert agree["labellers"] == ["ann", "bob"]
    assert agree["pairs"][0] | {} == {"a": "ann", "b": "bob", "n": 1, "agree": 0.0,
                                      "kappa": agree["pairs"][0]["kappa"]}


def test_export_folders_copies_labelled_cutouts(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("x", "y", "z"):
        (src / f"{name}.fits").write_bytes(name.encode())
    store = LabelStore(tmp_path / "l.sqlite")
    store.add_candidates(["x", "y", "z"], [str(src / f"{n}.fits") for n in "xyz"])
    store.add_label("x", "r", "ann")
    store.add_label("y", "b", "ann")
    store.add_label("z", "u", "ann")
    counts = export_folders(store, tmp_path / "out")
    assert counts == {"true": 1, "false": 1}
    assert (tmp_path / "out" / "true" / "x.fits").read_bytes() == b"x"
    assert (tmp_path / "out" / "false" / "y.fits").read_bytes() == b"y"
    assert not (tmp_path / "out" / "true" / "z.fits").exists()


def test_strategies_on_known_draws():
    draws = np.array([[0.5, 0.5], [0.0, 1.0], [0.9, 0.9], [0.45, 0.55], [0.02, 0.02]])
    assert np.allclose(uncertainty(draws), [1.0, 1.0, 0.2, 1.0, 0.04])
    mi = bald(draws)
    assert mi[1] == pytest.approx(np.log(2), rel=1e-6)   # members disagree completely
    assert mi[0] == pytest.approx(0.0, abs=1e-9)          # agree on 0.5: no information
    assert np.allclose(disagreement(draws), [0, 0.5, 0, 0.05, 0])
    assert rank("bald", 5, draws)[0] == 1
    assert list(rank("uncertainty", 5, draws)[:3]) == [0, 1, 3]
    assert list(rank("score", 5, draws)) == [2, 0, 1, 3, 4]
    assert list(rank("file", 5)) == [0, 1, 2, 3, 4]
    assert list(rank("random", 50, seed=3)) == list(rank("random", 50, seed=3))
    assert list(rank("random", 50, seed=3)) != list(rank("random", 50, seed=4))
    with pytest.raises(OtrainError, match="needs model scores"):
        rank("bald", 5)
    with pytest.raises(OtrainError, match="within"):
        rank("score", 2, np.array([[1.5], [0.2]]))


def test_mc_dropout_draws_from_a_model():
    torch.manual_seed(0)
    net = build_model("vgg6", 3, (16, 16), 0.5).eval()
    loaded = LoadedModel(model=net, meta={"channels": ["diff", "sci", "ref"],
                                          "input_size": [16, 16], "normalisation": "l2"})
    images = np.random.default_rng(0).normal(size=(7, 3, 16, 16)).astype(np.float32)
    draws = draws_from_model(loaded, images, n_samples=6, seed=1)
    assert draws.shape == (7, 6)
    assert np.all(draws.std(axis=1) > 0)                          # dropout active
    assert np.array_equal(draws, draws_from_model(loaded, images, 6, seed=1))  # seeded
    assert not any(m.training for m in net.modules())              # left in eval mode
    still = LoadedModel(model=build_model("vgg6", 3, (16, 16), 0.0), meta=loaded.meta)
    assert draws_from_model(still, images, 6).shape == (7, 1)     # no dropout: one column


def test_kappa_of_two_labellers(tmp_path):
    store = LabelStore(tmp_path / "l.sqlite")
    for i, (x, y) in enumerate(zip("rrbbrb", "rrbbbb", strict=True)):
        store.add_label(str(i), x, "ann")
        store.add_label(str(i), y, "bob")
    pair = agreement(store)["pairs"][0]
    assert pair["n"] == 6 and pair["agree"] == pytest.approx(5 / 6, abs=1e-4)
    assert pair["kappa"] == pytest.approx(2 / 3, abs=1e-4)  # po 5/6, pe 1/2
    one = LabelStore(tmp_path / "m.sqlite")
    for who in ("ann", "bob"):
        one.add_label("1", "r", who)
    assert agreement(one)["pairs"][0]["kappa"] is None


def test_pool_from_cutouts_and_model_images(tmp_path):
    from conftest import write_cutout
    from otrain.label.pool import from_cutouts, model_images

    rng = np.random.default_rng(0)
    write_cutout(tmp_path / "true" / "a.fits", rng.normal(size=(20, 20)), CANDID="x")
    write_cutout(tmp_path / "false" / "b.fits", rng.normal(size=(20, 20)), CANDID="x")
    write_cutout(tmp_path / "c.fits", rng.normal(size=(20, 20)), CANDID=None, NAME=None)
    (tmp_path / "bad.fits").write_bytes(b"not a FITS file")
    pool = from_cutouts(tmp_path)
    assert pool.channels == ["diff"] and len(pool) == 3
    assert sorted(pool.candids) == ["c.fits", "x", "x#2"]   # unique; the file when missing
    assert len(pool.skipped) == 1 and "bad.fits" in pool.skipped[0]
    crop = model_images(pool, np.arange(3), ["diff"], (16, 16))
    assert crop.shape == (3, 1, 16, 16)
    full = pool.images([0])[0, 0]
    assert np.array_equal(crop[0, 0], full[2:18, 2:18])
    with pytest.raises(OtrainError, match="needs channels"):
        model_images(pool, np.arange(3), ["diff", "sci"], (16, 16))
    with pytest.raises(OtrainError, match="needs 32x32"):
        model_images(pool, np.arange(3), ["diff"], (32, 32))
