"""Hostile files given to describe, sites, patch and the npz readers: each is refused with one
line and exit 2, nothing is written, and no input changes (issue 19)."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from helpers import MODELS

from classes_tool.simulator.sites import load_sites


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.h5"
    shutil.copyfile(MODELS / "digits_cnn.h5", path)
    return path


@pytest.fixture
def cal(tmp_path):
    path = tmp_path / "cal.npz"
    x = np.load(MODELS / "digits_test.npz")["x"][:8]
    np.savez(path, x=x)
    return path


# -- outputs that are inputs -------------------------------------------------------------------

def test_describe_refuses_to_overwrite_its_model(hostile, model):
    hostile.run(["describe", model, "-o", model], inputs=[model], watch=[model.parent],
                expect="would destroy the input")


@pytest.mark.parametrize("spelling", ["relative", "symlink", "hardlink"])
def test_describe_refuses_its_model_under_another_name(hostile, model, cwd, spelling):
    if spelling == "relative":
        out = "./sub/../m.h5"
        (cwd / "sub").mkdir()
    else:
        out = cwd / f"{spelling}.h5"
        (os.symlink if spelling == "symlink" else os.link)(model, out)
    hostile.run(["describe", "m.h5", "-o", out], inputs=[model], watch=[model.parent])


def test_sites_refuses_to_overwrite_its_model(hostile, model):
    hostile.run(["sites", model, "--after", "conv2", "--range", "-1,1", "--sites", "5",
                 "-o", model], inputs=[model], watch=[model.parent])


def test_sites_refuses_to_overwrite_its_calibration(hostile, model, cal):
    hostile.run(["sites", model, "--after", "conv2", "--calibration", cal, "--sites", "5",
                 "-o", cal], inputs=[model, cal], watch=[model.parent], expect="calibration")


def test_patch_refuses_a_hard_link_to_its_model(hostile, model):
    link = model.parent / "link.h5"
    os.link(model, link)
    hostile.run(["patch", model, "--after", "conv2", "--range", "-1,1", "--sites", "5",
                 "-o", link], inputs=[model], watch=[model.parent])


# -- npz files that are not what they claim ----------------------------------------------------

def _npy_renamed(path):
    np.save(str(path) + ".npy", np.zeros((4, 8, 8, 1), np.float32))
    os.replace(str(path) + ".npy", path)
    return path


def _zip_with_text_member(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", _npy_bytes(np.zeros((4, 8, 8, 1), np.float32)))
        z.writestr("notes.txt", "hello")
    return path


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _strings(path):
    np.savez(path, x=np.array([["a", "b"]] * 4))
    return path


def _complex(path):
    np.savez(path, x=np.zeros((4, 8, 8, 1), np.complex64))
    return path


def _huge_header(path):
    """An .npz whose x declares 10**12 float32 values in a file of a few hundred bytes."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**12,)}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", buffer.getvalue() + b"\0" * 64)
    return path


BAD_NPZ = {"npy_renamed": _npy_renamed, "text_member": _zip_with_text_member,
           "strings": _strings, "complex": _complex, "huge_header": _huge_header}
EXPECTED = {"npy_renamed": "single .npy", "text_member": "not a .npy", "strings": "text",
            "complex": "complex", "huge_header": "memory"}


@pytest.mark.parametrize("kind", sorted(BAD_NPZ))
def test_calibration_npz(hostile, model, tmp_path, kind):
    bad = BAD_NPZ[kind](tmp_path / "bad.npz")
    out = tmp_path / "s.npz"
    hostile.run(["sites", model, "--after", "conv2", "--calibration", bad, "--sites", "5",
                 "-o", out], inputs=[model, bad], outputs=[out], expect=EXPECTED[kind])


@pytest.mark.parametrize("kind", ["npy_renamed", "text_member", "huge_header"])
def test_sites_file_npz(hostile, model, tmp_path, kind):
    bad = BAD_NPZ[kind](tmp_path / "bad.npz")
    out = tmp_path / "p.h5"
    hostile.run(["patch", model, "--sites-file", bad, "-o", out], inputs=[model, bad],
                outputs=[out], expect=EXPECTED[kind])


# -- sites files with impossible contents ------------------------------------------------------

@pytest.fixture
def sites_file(hostile, model, tmp_path):
    path = tmp_path / "good_sites.npz"
    hostile.ok(["sites", model, "--after", "conv2", "--range", "-1,1", "--sites", "4",
                "--seed", "1", "-o", path])
    return path


def _rewrite(path, out, **changes):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    for key, value in changes.items():
        if key.startswith("meta_"):
            meta[0][key[5:]] = value
        else:
            arrays[key] = value
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(out, **arrays)
    return out


def _positions_beyond(path, out):
    with np.load(path) as data:
        positions = data["t0_positions"].copy()
    positions[0] = 10**9
    return _rewrite(path, out, t0_positions=positions)


def _decreasing_splits(path, out):
    with np.load(path) as data:
        splits = data["t0_splits"].copy()
    splits[1] = splits[2] + 1  # site 1 would end before it starts
    return _rewrite(path, out, t0_splits=splits)


BAD_SITES = {
    "position_beyond_layer": (_positions_beyond, "outside"),
    "decreasing_splits": (_decreasing_splits, "splits"),
    "string_values": (lambda p, o: _rewrite(p, o, t0_values=np.array(["a"])), "text"),
    "bad_meta_shape": (lambda p, o: _rewrite(p, o, meta_shape=[-3, 4]), "shape"),
    "nan_value_range": (lambda p, o: _rewrite(p, o, meta_value_range=[float("nan"), 1]),
                        "value_range"),
    "meta_not_json": (lambda p, o: (np.savez(o, meta=np.array("{not json"))) or o, "JSON"),
}


@pytest.mark.parametrize("kind", sorted(BAD_SITES))
def test_sites_file_contents_are_checked(hostile, model, sites_file, tmp_path, kind):
    make, expect = BAD_SITES[kind]
    bad = make(sites_file, tmp_path / "bad.npz")
    out = tmp_path / "p.h5"
    hostile.run(["patch", model, "--sites-file", bad, "-o", out], inputs=[model, bad],
                outputs=[out], expect=expect)


def test_a_good_sites_file_still_loads(sites_file):
    (site_set,) = load_sites(sites_file)
    assert len(site_set) == 4 and site_set.positions.max() < np.prod(site_set.shape)


def test_sweep_output_that_is_one_of_its_inputs(hostile, tmp_path):
    """`sweep --out DIR` writes sweep.csv, sweep_summary.csv, sweep.png and
    sweep_statistics.json there; a data file of that name in DIR is refused before any work."""
    import shutil

    from helpers import MODELS

    out = tmp_path / "out"
    out.mkdir()
    data = out / "sweep.csv"  # the test data, named like the sweep's own table
    shutil.copy(MODELS / "digits_test.npz", data)
    config = tmp_path / "q.yaml"
    config.write_text(f"model: {MODELS / 'digits_cnn.h5'}\ndata:\n  test: {data}\n"
                      "fault_injection:\n  enabled: true\n  probability: 5.0\n")
    hostile.run(["sweep", config, "--sweep-prob", "1", "--seeds", "1", "--out", out],
                inputs=[data, config], watch=[out], expect="is the input test data")
