"""`out_of_range: bounded | bit_pattern` where users choose it: the layer campaign's config (kept
out of the campaign identity when it is the default, so older result stores still resume), the
`sites` and `patch` commands (`--out-of-range`), and the sites file's meta."""

import json

import keras
import numpy as np
import pytest
import yaml
from helpers import MODELS

from classes_tool import cli
from classes_tool.campaign.config import CampaignConfig, parse_config
from classes_tool.cli import main
from classes_tool.errors import UserError
from classes_tool.simulator import sites as sites_module
from classes_tool.simulator.error_model import load_error_model
from classes_tool.simulator.sites import OUT_OF_RANGE_MODES, generate_sites, load_sites, save_sites

MODEL = str(MODELS / "digits_cnn.h5")


def _raw(**extra):
    return {"model": MODEL, "data": str(MODELS / "digits_test.npz"), "inputs": 2,
            "targets": {"nodes": ["conv2"]}, "faults": 3, "seed": 5, **extra}


def test_config_key_defaults_to_bounded_and_stays_out_of_the_identity(tmp_path):
    source = tmp_path / "c.yaml"
    default = parse_config(_raw(), source)
    assert default.out_of_range == "bounded" == CampaignConfig.out_of_range
    assert "out_of_range" not in default.identity()  # stores made before the key still resume
    assert parse_config(_raw(out_of_range="bounded"), source).identity() == default.identity()
    bits = parse_config(_raw(out_of_range="bit_pattern"), source)
    assert bits.out_of_range == "bit_pattern"
    assert bits.identity() == {**default.identity(), "out_of_range": "bit_pattern"}
    for bad in ("bit-pattern", "", 3, None):
        with pytest.raises(UserError, match="config key 'out_of_range' must be one of"):
            parse_config(_raw(out_of_range=bad), source)


def test_campaign_draws_its_sites_with_the_configured_mode(tmp_path, monkeypatch):
    from classes_tool.campaign.runner import Campaign

    modes = []
    real = sites_module.generate_sites

    def spy(*args, **kwargs):
        modes.append(kwargs.get("out_of_range", "bounded"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sites_module, "generate_sites", spy)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_raw(out_of_range="bit_pattern", value_range=[0.0, 3.0])))
    Campaign(path, out=tmp_path / "bits", quiet=True).run()
    assert modes and set(modes) == {"bit_pattern"}
    # a default campaign stores no key (it resumes as before the key existed); resuming it
    # with bit_pattern is another campaign
    modes.clear()
    path.write_text(yaml.safe_dump(_raw(value_range=[0.0, 3.0])))
    Campaign(path, out=tmp_path / "default", quiet=True).run()
    assert modes and set(modes) == {"bounded"}
    path.write_text(yaml.safe_dump(_raw(out_of_range="bit_pattern", value_range=[0.0, 3.0])))
    with pytest.raises(UserError, match="different config: key 'out_of_range'"):
        Campaign(path, out=tmp_path / "default", quiet=True).run(resume=True)


def test_cli_modes_are_the_generators_modes():
    assert cli.OUT_OF_RANGE_MODES == OUT_OF_RANGE_MODES


def test_sites_and_patch_commands_take_out_of_range(tmp_path, capsys):
    common = ["--after", "conv2", "--sites", "40", "--seed", "3", "--range", "0,1"]
    bits, bounded = tmp_path / "bits.npz", tmp_path / "bounded.npz"
    assert main(["sites", MODEL, *common, "--out-of-range", "bit_pattern", "-o", str(bits)]) == 0
    assert main(["sites", MODEL, *common, "-o", str(bounded)]) == 0
    (b,), (d,) = load_sites(bits), load_sites(bounded)
    assert (b.out_of_range, d.out_of_range) == ("bit_pattern", "bounded")
    want = generate_sites(load_error_model("conv_gemm"), "conv2", b.shape, (0.0, 1.0), 40, 3,
                          out_of_range="bit_pattern")
    assert np.array_equal(b.values.view(np.uint32), want.values.view(np.uint32))
    assert not np.array_equal(b.values.view(np.uint32), d.values.view(np.uint32))
    # patch draws the same sites as `sites` with the same options
    patched = tmp_path / "p.h5"
    assert main(["patch", MODEL, *common, "--out-of-range", "bit_pattern",
                 "-o", str(patched)]) == 0
    weights = keras.models.load_model(patched).get_layer("conv2_error_sim").get_weights()
    assert any(w.dtype == np.float32 and w.shape == b.values.shape
               and np.array_equal(w.view(np.uint32), b.values.view(np.uint32)) for w in weights)
    capsys.readouterr()
    # a sites file brings its own values: the option would be ignored, so it is refused
    assert main(["patch", MODEL, "--sites-file", str(bits), "--out-of-range", "bounded",
                 "-o", str(tmp_path / "q.h5")]) == 2
    assert "--out-of-range" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["sites", MODEL, *common, "--out-of-range", "bits", "-o", str(bits)])
    assert exc.value.code == 2


def test_sites_file_meta_records_the_mode(tmp_path):
    model = load_error_model("relu")
    drawn = generate_sites(model, "t", (4, 4, 2), (0.0, 1.0), 5, 1, out_of_range="bit_pattern")
    assert drawn.meta()["out_of_range"] == "bit_pattern"
    path = tmp_path / "s.npz"
    save_sites(path, [drawn])
    assert load_sites(path)[0].out_of_range == "bit_pattern"
    # a file written before the mode was recorded reads as bounded; an unknown mode is refused
    with np.load(path) as data:
        arrays = dict(data)
    for mode, expect in ((None, "bounded"), ("sideways", None)):
        meta = json.loads(str(arrays["meta"]))
        meta[0].pop("out_of_range")
        if mode is not None:
            meta[0]["out_of_range"] = mode
        np.savez(path, **{**arrays, "meta": np.array(json.dumps(meta))})
        if expect is None:
            with pytest.raises(UserError, match="meta 'out_of_range' must be one of"):
                load_sites(path)
        else:
            assert load_sites(path)[0].out_of_range == expect
