"""The datacube: HDF5 round trip, lazy reads, original .npz cubes, safe writing."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from otrain.datacube.hdf5 import DatacubeWriter, open_datacube, write_datacube, write_subset
from otrain.errors import OtrainError


def _cube(n=20, c=2, size=6, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, c, size, size)).astype(np.float32)
    table = Table({"candid": [f"c{i}" for i in range(n)], "label": np.arange(n) % 2,
                   "mag": rng.uniform(15, 21, n), "filter": ["g", "r"] * (n // 2),
                   "edge": np.zeros(n, bool)})
    return images, table


def test_round_trip_is_lazy_and_exact(tmp_path):
    images, table = _cube()
    path = write_datacube(tmp_path / "c.h5", images, table, ["diff", "sci"],
                          provenance={"seed": 3})
    with open_datacube(path) as cube:
        assert not cube.in_memory and len(cube) == 20 and cube.image_shape == (2, 6, 6)
        assert cube.channels == ["diff", "sci"] and cube.attrs == {"seed": 3}
        assert list(cube.table["candid"]) == list(table["candid"])
        assert list(cube.table["filter"]) == list(table["filter"])
        np.testing.assert_array_equal(cube.labels, np.arange(20) % 2)
        np.testing.assert_array_equal(cube.read([7, 2, 2, 19]), images[[7, 2, 2, 19]])
        np.testing.assert_array_equal(cube.read(slice(3, 9)), images[3:9])
        batches = list(cube.iter_batches(8))
        assert [len(i) for i, _ in batches] == [8, 8, 4]
        np.testing.assert_array_equal(np.concatenate([b for _, b in batches]), images)
        assert "20 cutouts of 6x6 pixels, 2 channel(s)" in cube.summary()


def test_writer_appends_in_batches(tmp_path):
    images, table = _cube(n=30)
    with DatacubeWriter(tmp_path / "w.h5", (2, 6, 6), ["diff", "sci"]) as writer:
        for start in range(0, 30, 7):
            sl = slice(start, start + 7)
            writer.append(images[sl], {"candid": np.asarray(table["candid"][sl]),
                                       "label": np.asarray(table["label"][sl])})
    with open_datacube(tmp_path / "w.h5") as cube:
        np.testing.assert_array_equal(cube.read(np.arange(30)), images)


def test_subset_copy(tmp_path):
    images, table = _cube()
    write_datacube(tmp_path / "c.h5", images, table, ["diff", "sci"])
    with open_datacube(tmp_path / "c.h5") as cube:
        write_subset(cube, [1, 5, 6], tmp_path / "s.h5", batch_size=2, provenance={"split": "val"})
    with open_datacube(tmp_path / "s.h5") as sub:
        assert list(sub.table["candid"]) == ["c1", "c5", "c6"]
        np.testing.assert_array_equal(sub.read(slice(None)), images[[1, 5, 6]])
        assert sub.attrs["split"] == "val"


def test_existing_cube_is_not_overwritten(tmp_path):
    images, table = _cube()
    path = write_datacube(tmp_path / "c.h5", images, table, ["diff", "sci"])
    with pytest.raises(OtrainError, match="already exists"):
        write_datacube(path, images[:2], table[:2], ["diff", "sci"])
    write_datacube(path, images[:2], table[:2], ["diff", "sci"], overwrite=True)
    assert len(open_datacube(path)) == 2


def test_failure_while_writing_keeps_the_old_cube(tmp_path):
    images, table = _cube()
    path = write_datacube(tmp_path / "c.h5", images, table, ["diff", "sci"])
    with pytest.raises(RuntimeError), DatacubeWriter(path, (2, 6, 6), ["diff", "sci"],
                                                     overwrite=True) as writer:
        writer.append(images[:3], {"candid": ["a", "b", "c"], "label": [1, 0, 1]})
        raise RuntimeError("interrupted")
    assert len(open_datacube(path)) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]


def test_original_npz_training_cube(tmp_path):
    rng = np.random.default_rng(1)
    cube = rng.normal(size=(5, 8, 8, 1)).astype(np.float32)
    np.savez(tmp_path / "old.npz", cube=cube, labels=np.array([1, 1, 0, 0, 0]),
             mags=np.array(["18.1", "-99.0", "19", "20", "21"]),
             errmags=np.array([0.1, 0.2, 0.3, 99.0, 0.1]), filters=np.array(["r"] * 5),
             fwhms=np.array([2.0] * 5), candids=np.array(["a", "b", "c", "d", "e"]))
    dc = open_datacube(tmp_path / "old.npz")
    assert dc.in_memory and dc.image_shape == (1, 8, 8)
    np.testing.assert_array_equal(dc.read([0, 4])[:, 0], cube[[0, 4], :, :, 0])
    assert list(dc.labels) == [1, 1, 0, 0, 0]
    assert dc.table["mag"][0] == pytest.approx(18.1) and np.isnan(dc.table["mag"][1])
    assert np.isnan(dc.table["magerr"][3]) and dc.table["filter"][0] == "r"


def test_original_npz_validation_cube_one_hot(tmp_path):
    cube = np.zeros((4, 8, 8, 1), np.float32)
    onehot = np.array([[0, 1], [1, 0], [1, 0], [0, 1]], np.float32)
    # the original MEF bug could make candids longer than the cube: rows get generated ids
    np.savez(tmp_path / "cube_validation.npz", cube=cube, labels=onehot,
             mags=np.ones(4), errmags=np.ones(4), candids=np.array(list("abcdefg")))
    dc = open_datacube(tmp_path / "cube_validation.npz")
    assert list(dc.labels) == [1, 0, 0, 1]
    assert list(dc.table["candid"]) == [f"cube_validation_{i}" for i in range(4)]


@pytest.mark.parametrize("content, message", [
    (None, "no such datacube"), (b"garbage", "not a readable HDF5"),
])
def test_bad_cube_files(tmp_path, content, message):
    path = tmp_path / "x.h5"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(OtrainError, match=message):
        open_datacube(path)


def test_npz_without_cube_key(tmp_path):
    np.savez(tmp_path / "x.npz", foo=np.zeros(3))
    with pytest.raises(OtrainError, match="'cube' and 'labels'"):
        open_datacube(tmp_path / "x.npz")


def test_outputs_get_ordinary_permissions(tmp_path):
    import os

    from otrain.outputs import write_text_atomic

    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
