"""Options that take a negative number accept the natural spelling `--range -3,3`.

Stock argparse reads only plain numbers (-3, -0.5) as values, so `--range -3,3` or
`--tolerance -1e-3` were refused with "expected one argument"."""

import os
import subprocess
import sys

import pytest
from helpers import MODELS

from classes_tool.cli import build_parser, main
from classes_tool.simulator.sites import load_sites

MODEL = str(MODELS / "digits_cnn.h5")


def _parser():
    return build_parser()


@pytest.mark.parametrize("text, expected", [("-3,3", (-3.0, 3.0)), ("-.5,-0.25", (-0.5, -0.25)),
                                            ("-1e-3,2", (-0.001, 2.0)), ("-2.5,1e3", (-2.5, 1e3)),
                                            ("0,6", (0.0, 6.0))])
@pytest.mark.parametrize("command", ["sites", "patch"])
def test_range_takes_a_negative_low_as_the_next_argument(command, text, expected):
    args = _parser().parse_args([command, MODEL, "--range", text, "-o", "out.h5"])
    assert args.range == expected
    args = _parser().parse_args([command, MODEL, f"--range={text}", "-o", "out.h5"])
    assert args.range == expected  # the = spelling keeps working


def test_a_negative_value_reaches_the_options_own_check(capsys):
    """A negative seed or tolerance is read as the option's value and refused by its own
    check (not as a missing argument)."""
    with pytest.raises(SystemExit):
        _parser().parse_args(["patch", MODEL, "--seed", "-1", "-o", "out.h5"])
    err = capsys.readouterr().err
    assert "bad seed -1" in err and "expected one argument" not in err
    with pytest.raises(SystemExit):
        _parser().parse_args(["campaign", "c.yaml", "--seed", "-7"])
    assert "bad seed -7" in capsys.readouterr().err
    args = _parser().parse_args(["convert", "m.onnx", "-o", "m.h5", "--tolerance", "-1e-3"])
    assert args.tolerance == -0.001  # refused later by the conversion, with its own message


def test_options_are_still_options(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["patch", MODEL, "--range", "-o", "out.h5"])
    assert "argument --range: expected one argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["patch", MODEL, "-x", "-o", "out.h5"])
    assert "unrecognized arguments: -x" in capsys.readouterr().err


def test_patch_with_a_negative_range_through_main(tmp_path, capsys):
    sites = tmp_path / "s.npz"
    assert main(["sites", MODEL, "--after", "conv2", "--range", "-3,3", "--sites", "20",
                 "--seed", "1", "-o", str(sites)]) == 0
    assert "range [-3, 3]" in capsys.readouterr().out
    (site_set,) = load_sites(sites)
    assert tuple(site_set.value_range) == (-3.0, 3.0)
    out = tmp_path / "p.h5"
    assert main(["patch", MODEL, "--after", "conv2", "--range", "-3,3", "--sites", "20",
                 "-o", str(out)]) == 0
    assert out.is_file()


@pytest.mark.slow
def test_real_command_line_accepts_a_negative_range(tmp_path):
    out = tmp_path / "p.h5"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", "classes_tool.cli", "patch", MODEL, "--after", "conv2",
         "--range", "-3,3", "--sites", "20", "-o", str(out)],
        capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    assert "expected one argument" not in result.stderr
    assert out.is_file() and "conv2: ErrorSimulator with 20 sites" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "classes_tool.cli", "convert", str(out), "-o",
         str(tmp_path / "c.h5"), "--tolerance", "-1e-3"],
        capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 2 and "bad tolerance -0.001" in result.stderr
