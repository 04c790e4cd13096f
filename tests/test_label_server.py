"""``otrain label`` over HTTP: a real server process on 127.0.0.1 and what it refuses."""

from __future__ import annotations

import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_clean_error, run_cli
from label_support import Server, call, triplet_folder
from otrain.cli.label import resolve_token
from otrain.datacube.hdf5 import write_datacube
from otrain.errors import OtrainError
from otrain.label.pool import from_cutouts, model_images
from otrain.label.ranking import draws_from_model, rank
from otrain.label.store import LabelStore
from otrain.models.modelfile import load_model, save_model
from otrain.models.networks import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = triplet_folder(tmp_path_factory.mktemp("label") / "cut", n=30)
    with Server("--cutouts", str(root), "--labeller", "ann", "--quiet") as server:
        yield server, root


def test_state_candidate_stamp_and_label(served):
    server, _ = served
    status, st = call(server.base + "/api/state")
    assert status == 200 and st["total"] == 30 and st["channels"] == ["diff", "sci", "ref"]
    status, cand = call(server.base + "/api/candidate/0")
    assert status == 200 and cand["candid"] == "c_000" and cand["meta"]["mag"] == 18.0
    assert "score" not in cand
    for stretch in ("zscale", "asinh", "minmax"):
        status, png = call(server.base + f"/api/stamp/0/sci?stretch={stretch}&invert=1")
        assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    status, res = call(server.base + "/api/label", {"candid": "c_000", "label": "r"})
    assert status == 200 and res["event"]["label"] == "real" and res["next"] == 1


@pytest.mark.parametrize(("method", "path", "body", "headers", "expected"), [
    ("POST", "/api/label", {"candid": "c_001", "label": "maybe"}, {}, 422),
    ("POST", "/api/label", {"candid": "c_001", "label": 1}, {}, 422),
    ("POST", "/api/label", {"candid": "nope", "label": "r"}, {}, 404),
    ("POST", "/api/label", {"candid": ["c_001"], "label": "r"}, {}, 404),
    ("POST", "/api/label", {"candid": "c_001", "label": "r", "nonce": "x" * 65}, {}, 422),
    ("POST", "/api/label", b"{not json", {"Content-Type": "application/json"}, 400),
    ("POST", "/api/label", b"[1, 2]", {"Content-Type": "application/json"}, 400),
    ("POST", "/api/label", b"\xff\xfe", {"Content-Type": "application/json"}, 400),
    ("POST", "/api/label", b"x" * 5000, {"Content-Type": "application/json"}, 413),
    ("POST", "/api/label", b'{"candid": "c_001", "label": "r"}',
     {"Content-Type": "text/plain"}, 415),
    ("GET", "/api/label", None, {}, 405),
    ("POST", "/api/state", {}, {}, 405),
    ("DELETE", "/api/candidate/0", None, {}, 405),
    ("GET", "/api/candidate/30", None, {}, 404),
    ("GET", "/api/candidate/-1", None, {}, 404),
    ("GET", "/api/stamp/0/..%2F..%2F..%2Fetc%2Fpasswd", None, {}, 404),
    ("GET", "/api/stamp/0/diff?stretch=log", None, {}, 400),
    ("GET", "/static/..%2F..%2Fstore.py", None, {}, 404),
    ("GET", "/static/../server.py", None, {}, 404),
    ("GET", "/api/grid?start=0&n=500", None, {}, 400),
    ("GET", "/api/state", None, {"Host": "attacker.example"}, 400),
])
def test_refused_with_4xx(served, method, path, body, headers, expected):
    server, _ = served
    raw = body if isinstance(body, bytes) else None
    status, _ = call(server.base + path, None if raw is not None else body, method, headers,
                     raw=raw)
    assert status == expected


def test_concurrent_clients_lose_and_double_nothing(served):
    server, root = served
    candids = [f"c_{i:03d}" for i in range(30)]
    results: dict[int, list[str]] = {}

    def client(k: int) -> None:
        rng = np.random.default_rng(k)
        done = []
        end = time.monotonic() + 2.0
        i = 0
        while time.monotonic() < end:
            nonce = f"k{k}-{i}"
            body = {"candid": candids[rng.integers(30)], "label": "rbus"[i % 4], "nonce": nonce}
            status, res = call(server.base + "/api/label", body)
            assert status == 200
            if i % 5 == 0:  # a retried request (same nonce) is the same event
                again = call(server.base + "/api/label", body)[1]
                assert again["event"]["id"] == res["event"]["id"]
            done.append(nonce)
            i += 1
        results[k] = done

    threads = [threading.Thread(target=client, args=(k,)) for k in range(20)]
    with LabelStore(root / "labels.sqlite") as store:
        before = len(store.events("ann"))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent = sum(len(v) for v in results.values())
        assert len(results) == 20 and sent > 20
        assert len(store.events("ann")) - before == sent


def test_token_is_required_on_every_request(tmp_path):
    root = triplet_folder(tmp_path / "cut", n=3)
    token = "s3cret-token-0123456789"
    with Server("--cutouts", str(root), "--token", token, "--quiet") as server:
        assert call(server.base + "/api/state")[0] == 401
        assert call(server.base + "/")[0] == 401
        assert call(server.base + "/static/app.js")[0] == 401
        assert call(server.base + "/api/stamp/0/diff")[0] == 401
        assert call(server.base + "/no/such/path")[0] == 401
        assert call(server.base + "/api/label")[0] == 401            # before the 405
        assert call(server.base + "/api/label", {"candid": "c_000", "label": "r"})[0] == 401
        assert call(server.base + "/api/state", headers={"X-Otrain-Token": "wrong" * 4})[0] == 403
        assert call(server.base + "/api/state?token=" + "x" * 20)[0] == 403
        assert call(server.base + "/api/state", headers={"X-Otrain-Token": token})[0] == 200
        assert call(server.base + "/api/label", {"candid": "c_000", "label": "r"},
                    headers={"X-Otrain-Token": token})[0] == 200
        status, page = call(server.base + "/?" + urllib.parse.urlencode({"token": token}))
        assert status == 200 and b"otrain label" in page


def test_two_labellers_on_one_db_and_their_agreement(tmp_path):
    root = triplet_folder(tmp_path / "cut", n=4)
    for who, words in (("ann", "rbrs"), ("bob", "rrru")):
        with Server("--cutouts", str(root), "--labeller", who, "--quiet") as server:
            for i, word in enumerate(words):
                body = {"candid": f"c_{i:03d}", "label": word}
                assert call(server.base + "/api/label", body)[0] == 200
            st = call(server.base + "/api/state")[1]
    assert st["labellers"] == ["ann", "bob"] and st["counts"]["real"] == 3
    pair = st["agreement"][0]
    assert (pair["a"], pair["b"], pair["n"]) == ("ann", "bob", 3)  # c_003: skip, unsure
    assert pair["agree"] == pytest.approx(2 / 3, abs=1e-4)


def test_non_local_bind_needs_a_token():
    assert resolve_token("127.0.0.1", None) is None
    made = resolve_token("0.0.0.0", None)
    assert made and len(made) >= 24 and made != resolve_token("0.0.0.0", None)
    assert resolve_token("10.0.0.5", "a-good-token-123456") == "a-good-token-123456"
    with pytest.raises(Exception, match="--token must be"):
        resolve_token("10.0.0.5", "short")


def test_model_orders_the_queue_and_scores_stay_hidden(tmp_path):
    root = triplet_folder(tmp_path / "cut", n=12)
    torch.manual_seed(0)
    net = build_model("vgg6", 3, (17, 17), 0.3)
    model = save_model(tmp_path / "m.safetensors", net,
                       {"normalisation": "l2", "channels": ["diff", "sci", "ref"]})
    pool = from_cutouts(root)
    loaded = load_model(model)
    draws = draws_from_model(loaded, model_images(pool, np.arange(12), loaded.channels,
                                                  loaded.input_size), 10, 0)
    expected = [pool.candids[i] for i in rank("bald", 12, draws)]
    with Server("--cutouts", str(root), "--model", str(model), "--order", "bald",
                "--db", str(tmp_path / "a.sqlite"), "--quiet") as server:
        assert call(server.base + "/api/state")[1]["order"] == "bald"
        got = [c["candid"] for c in call(server.base + "/api/grid?start=0&n=12")[1]]
        assert got == expected
        assert "score" not in call(server.base + "/api/candidate/0")[1]
    with Server("--cutouts", str(root), "--model", str(model), "--show-scores",
                "--db", str(tmp_path / "b.sqlite"), "--quiet") as server:
        cand = call(server.base + "/api/candidate/0")[1]
        assert 0.0 <= cand["score"]["p_real"] <= 1.0 and cand["score"]["n_samples"] == 10
        assert call(server.base + "/api/label", {"candid": cand["candid"], "label": "b"})[0] == 200
    ev = LabelStore(tmp_path / "b.sqlite").events()[0]
    assert ev.score_shown and ev.score == pytest.approx(cand["score"]["p_real"], abs=1e-4)


def test_cube_and_alert_inputs(tmp_path, ztf_dir):
    images = np.random.default_rng(0).normal(size=(4, 1, 16, 16)).astype(np.float32)
    cube = write_datacube(tmp_path / "c.h5", images, {
        "candid": ["a", "b", "c", "d"], "label": [1, 0, -1, 1], "mag": [18.0, 19, 20, 21]},
        ["diff"])
    with Server("--cube", str(cube), "--quiet") as server:
        st = call(server.base + "/api/state")[1]
        assert st["total"] == 4 and st["channels"] == ["diff"]
        assert call(server.base + "/api/candidate/3")[1]["candid"] == "d"
    assert (tmp_path / "c.labels.sqlite").is_file()          # default db beside the cube
    alerts = ztf_dir / "ztf_alerts_v3.3.avro"
    with Server("--alerts", str(alerts), "--db", str(tmp_path / "z.sqlite"),
                "--quiet") as server:
        st = call(server.base + "/api/state")[1]
        assert st["total"] > 100 and st["channels"] == ["diff", "sci", "ref"]
        meta = call(server.base + "/api/candidate/0")[1]["meta"]
        assert meta["objectId"].startswith("ZTF") and "drb" in meta
        status, png = call(server.base + "/api/stamp/0/ref")
        assert status == 200 and png[:4] == b"\x89PNG"
        picked = [call(server.base + f"/api/candidate/{i}")[1]["candid"] for i in range(5)]
        for candid, word in zip(picked, "rbrus", strict=True):
            assert call(server.base + "/api/label", {"candid": candid, "label": word})[0] == 200
    # The loop: export, then otrain-convert --labels makes a training cube of those alerts.
    run_cli("otrain-label", "--export", str(tmp_path / "l.csv"), "--db",
            str(tmp_path / "z.sqlite"), check=True)
    run_cli("otrain-convert", "--alerts", str(alerts), "--path", str(tmp_path / "run"),
            "--cube", "vetted", "--labels", str(tmp_path / "l.csv"), "--frac-true", "all",
            "--channels", "diff,sci,ref", "--cutout-size", "41", "--quiet", check=True)
    from otrain.datacube.hdf5 import open_datacube

    with open_datacube(tmp_path / "run" / "datacube" / "vetted.h5") as vetted:
        assert dict(zip(np.asarray(vetted.table["candid"]).tolist(), vetted.labels.tolist(),
                        strict=True)) == {picked[0]: 1, picked[1]: 0, picked[2]: 1}


def test_cli_errors_are_one_line(tmp_path):
    root = triplet_folder(tmp_path / "cut", n=2)
    assert_clean_error(run_cli("otrain-label"), "--cutouts FOLDER")
    assert_clean_error(run_cli("otrain-label", "--cutouts", str(root), "--order", "bald"),
                       "needs --model")
    assert_clean_error(run_cli("otrain-label", "--cutouts", str(tmp_path / "none")),
                       "no such folder")
    assert_clean_error(run_cli("otrain-label", "--export", str(tmp_path / "x.csv"), "--db",
                               str(tmp_path / "none.sqlite")), "no such label database")
    assert_clean_error(run_cli("otrain-label", "--cutouts", str(root), "--cube", "x.h5"),
                       "one of")
    assert not Path(tmp_path / "x.csv").exists()


def test_a_second_server_on_the_same_database_is_refused(tmp_path):
    """The label db takes the output lock of every otrain writer: while one server holds it a
    second one fails at once with one line (and reading it for export still works)."""
    root = triplet_folder(tmp_path / "cut", n=3)
    with Server("--cutouts", str(root), "--labeller", "ann", "--quiet") as server:
        assert call(server.base + "/api/label", {"candid": "c_000", "label": "r"})[0] == 200
        db = root / "labels.sqlite"
        assert db.is_file(), sorted(p.name for p in root.iterdir())
        second = run_cli("otrain-label", "--cutouts", str(root), "--labeller", "bob",
                         "--port", "1")
        assert_clean_error(second, "being written by another otrain run")
        with pytest.raises(OtrainError, match="being written by another otrain run"):
            LabelStore(db, writer=True)
        with LabelStore(db) as reader:  # readers need no lock
            assert reader.path == db
        out = tmp_path / "labels.csv"
        assert run_cli("otrain-label", "--export", str(out), "--db", str(db)).returncode == 0
        assert "c_000" in out.read_text()
    # the lock died with the server: the next one starts
    with LabelStore(db, writer=True):
        pass
