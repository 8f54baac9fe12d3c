"""Whole models: branches, a MobileNet-like net, a sequence head; save/reload in a fresh
process; and the errors a user can run into."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from onnx import helper
from onnx_helpers import make_onnx, ort_vs_keras

from classes_tool.convert import convert_onnx, convert_onnx_with_report, parse_input_shapes
from classes_tool.convert.converter import sanitize
from classes_tool.errors import UserError

_RNG = np.random.default_rng(7)


def W(*shape, scale=0.3):
    return (_RNG.standard_normal(shape) * scale).astype(np.float32)


class G:
    """Tiny graph builder with PyTorch-exporter-like node names."""

    def __init__(self):
        self.nodes, self.inits = [], {}

    def node(self, op, inputs, name, n_out=1, **attrs):
        outs = [f"{name}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, name, value):
        self.inits[name] = value
        return name

    def conv(self, x, c_in, c_out, name, k=3, stride=1, group=1, bias=True):
        ins = [x, self.const(f"{name}.weight", W(c_out, c_in // group, k, k))]
        if bias:
            ins.append(self.const(f"{name}.bias", W(c_out)))
        return self.node("Conv", ins, f"/{name}/Conv", kernel_shape=[k, k],
                         pads=[k // 2] * 4, strides=[stride, stride], group=group)

    def bn(self, x, c, name):
        ins = [x] + [self.const(f"{name}.{p}", v) for p, v in (
            ("weight", 1 + W(c)), ("bias", W(c)), ("running_mean", W(c)),
            ("running_var", np.abs(W(c)) + 0.5))]
        return self.node("BatchNormalization", ins, f"/{name}/BatchNormalization")


def branching_model(path):
    g = G()
    x = g.node("Relu", [g.conv("input", 3, 8, "stem")], "/stem/Relu")
    a = g.node("Relu", [g.bn(g.conv(x, 8, 8, "stage1.conv"), 8, "stage1.bn")], "/stage1/Relu")
    res = g.node("Add", [a, x], "/stage1/Add")
    pool = g.node("MaxPool", [x], "/pool/MaxPool", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    cat = g.node("Concat", [res, pool], "/cat/Concat", axis=1)
    y = g.node("GlobalAveragePool", [g.conv(cat, 16, 12, "head.conv", k=1)], "/head/GAP")
    y = g.node("Flatten", [y], "/head/Flatten")
    y = g.node("Gemm", [y, g.const("fc.weight", W(5, 12)), g.const("fc.bias", W(5))],
               "/fc/Gemm", transB=1)
    g.nodes.append(helper.make_node("Softmax", [y], ["probs"], name="/Softmax", axis=1))
    return make_onnx(path, g.nodes, [("input", [None, 3, 16, 16])], [("probs", [None, 5])],
                     g.inits)


def mobilenet_like(path):
    g = G()
    x = g.node("HardSwish", [g.bn(g.conv("image", 3, 16, "stem", stride=2, bias=False), 16,
                                  "stem.bn")], "/stem/HardSwish")

    def block(x, c_in, c_exp, c_out, stride, name):
        h = g.node("HardSwish", [g.bn(g.conv(x, c_in, c_exp, f"{name}.expand", k=1), c_exp,
                                      f"{name}.expand.bn")], f"/{name}/expand/HardSwish")
        h = g.node("Relu", [g.bn(g.conv(h, c_exp, c_exp, f"{name}.dw", stride=stride,
                                        group=c_exp), c_exp, f"{name}.dw.bn")],
                   f"/{name}/dw/Relu")
        s = g.node("GlobalAveragePool", [h], f"/{name}/se/GlobalAveragePool")
        s = g.node("Relu", [g.conv(s, c_exp, 8, f"{name}.se.fc1", k=1)], f"/{name}/se/Relu")
        s = g.node("HardSigmoid", [g.conv(s, 8, c_exp, f"{name}.se.fc2", k=1)],
                   f"/{name}/se/HardSigmoid", alpha=1 / 6, beta=0.5)
        h = g.node("Mul", [h, s], f"/{name}/se/Mul")
        h = g.bn(g.conv(h, c_exp, c_out, f"{name}.project", k=1, bias=False), c_out,
                 f"{name}.project.bn")
        return g.node("Add", [x, h], f"/{name}/Add") if stride == 1 and c_in == c_out else h

    x = block(x, 16, 32, 16, 1, "blocks.0")
    x = block(x, 16, 48, 24, 2, "blocks.1")
    x = g.node("GlobalAveragePool", [x], "/head/GlobalAveragePool")
    x = g.node("Flatten", [x], "/head/Flatten")
    x = g.node("HardSwish", [g.node("Gemm", [x, g.const("head.fc1.weight", W(32, 24)),
                                             g.const("head.fc1.bias", W(32))],
                                    "/head/fc1/Gemm", transB=1)], "/head/HardSwish")
    g.nodes.append(helper.make_node("Gemm", [x, g.const("head.fc2.weight", W(10, 32)),
                                             g.const("head.fc2.bias", W(10))], ["logits"],
                                    name="/head/fc2/Gemm", transB=1))
    return make_onnx(path, g.nodes, [("image", [None, 3, 32, 32])], [("logits", [None, 10])],
                     g.inits)


def sequence_head(path):
    """A text-recogniser head: (N, C, 1, W) map -> (N, W, C) sequence -> per-step classes."""
    g = G()
    x = g.node("Relu", [g.conv("image", 3, 8, "backbone")], "/backbone/Relu")
    x = g.node("MaxPool", [x], "/pool/MaxPool", kernel_shape=[8, 1], strides=[8, 1])
    x = g.node("Squeeze", [x, g.const("sq_axes", np.asarray([2], np.int64))], "/neck/Squeeze")
    x = g.node("Transpose", [x], "/neck/Transpose", perm=[0, 2, 1])
    x = g.node("MatMul", [x, g.const("head.weight", W(8, 6))], "/head/MatMul")
    x = g.node("Add", [x, g.const("head.bias", W(6))], "/head/Add")
    g.nodes.append(helper.make_node("Softmax", [x], ["seq"], name="/head/Softmax", axis=2))
    return make_onnx(path, g.nodes, [("image", [None, 3, 8, 20])], [("seq", [None, 20, 6])],
                     g.inits)


def layer_zoo(path):
    """Uses every small registered layer once, so their configs round-trip through files."""
    g = G()
    x = g.node("Clip", ["x", g.const("lo", np.float32(-1.0)), g.const("hi", np.float32(2.0))],
               "/zoo/Clip")
    h = g.node("HardSigmoid", [x], "/zoo/HardSigmoid")
    d = g.node("Div", [x, g.node("Add", [h, g.const("one", W(4, 1, 1) ** 2 + 1)], "/zoo/Add")],
               "/zoo/Div")
    s = g.node("Slice", [d] + [g.const(k, np.asarray(v, np.int64)) for k, v in (
        ("st", [1, 0]), ("en", [4, -1]), ("ax", [1, 3]))], "/zoo/Slice")
    p = g.node("Pad", [s, g.const("pads", np.asarray([0, 0, 1, 1, 0, 0, 1, 0], np.int64))],
               "/zoo/Pad", mode="reflect")
    m = g.node("MaxPool", [p], "/zoo/MaxPool", kernel_shape=[3, 3], strides=[2, 2],
               pads=[1, 1, 1, 1])
    r = g.node("Resize", [m, "", "", g.const("sz", np.asarray([7, 5], np.int64))], "/zoo/Resize",
               mode="linear", coordinate_transformation_mode="align_corners", axes=[2, 3])
    q = g.node("Sqrt", [g.node("Abs", [r], "/zoo/Abs")], "/zoo/Sqrt")
    t = g.node("Gather", [q, g.const("idx", np.asarray([2, 0], np.int64))], "/zoo/Gather",
               axis=1)
    red = g.node("ReduceSum", [t, g.const("rax", np.asarray([3], np.int64))], "/zoo/ReduceSum",
                 keepdims=1)
    seq = g.node("Reshape", [red, g.const("shape", np.asarray([0, 2, 7], np.int64))],
                 "/zoo/Reshape")
    mm = g.node("MatMul", [g.node("Transpose", [seq], "/zoo/Transpose", perm=[0, 2, 1]), seq],
                "/zoo/MatMul")
    g.nodes.append(helper.make_node("Mul", [mm, g.const("c", W(7, 7))], ["out"],
                                    name="/zoo/Mul"))
    return make_onnx(path, g.nodes, [("x", [None, 4, 6, 6])], [("out", [None, 7, 7])], g.inits,
                     opset=18)


def _types(model):
    return {type(layer).__name__ for layer in model.layers}


def test_branching_model(tmp_path):
    path = branching_model(tmp_path / "branch.onnx")
    model, report = convert_onnx_with_report(path)
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-5
    assert ort_vs_keras(path, model, [(3, 16, 16)]) < 1e-5
    assert {"Conv2D", "BatchNormalization", "Add", "Concatenate", "MaxPooling2D", "Dense",
            "Softmax"} <= _types(model)
    assert "Permute" not in _types(model)  # the whole net stays channels-last
    names = {layer.name for layer in model.layers}
    assert {"stem_Conv", "stage1_Add", "cat_Concat", "fc_Gemm"} <= names
    assert model.input_shape == (None, 16, 16, 3)


def test_mobilenet_like(tmp_path):
    path = mobilenet_like(tmp_path / "mnet.onnx")
    model = convert_onnx(path)
    assert ort_vs_keras(path, model, [(3, 32, 32)]) < 1e-4
    types = _types(model)
    assert {"DepthwiseConv2D", "HardSigmoid", "Multiply", "Add", "GlobalAveragePooling2D",
            "Dense", "Activation"} <= types
    assert "Lambda" not in types and "Permute" not in types
    assert "blocks_0_dw_Conv" in {layer.name for layer in model.layers}


def test_sequence_head_keeps_onnx_axis_order(tmp_path):
    path = sequence_head(tmp_path / "seq.onnx")
    model = convert_onnx(path)
    assert model.output_shape == (None, 20, 6)
    assert ort_vs_keras(path, model, [(3, 8, 20)]) < 1e-5


_RELOAD = textwrap.dedent("""
    import os, sys, numpy as np, keras
    import classes_tool.convert  # registers the custom layers
    x = np.load(sys.argv[1])
    for i, path in enumerate(sys.argv[2:]):
        model = keras.models.load_model(path)
        name = os.path.basename(path).split(".")[0]
        np.save(f"{sys.argv[1]}.{i}.npy", np.asarray(model(x[name])))
""")


@pytest.mark.slow
def test_saved_files_reload_in_fresh_process(tmp_path):
    cases = {"mnet": (mobilenet_like, (3, 32, 32)), "zoo": (layer_zoo, (4, 6, 6))}
    rng = np.random.default_rng(3)
    files, inputs, expected = [], {}, {}
    for name, (build, shape) in cases.items():
        onnx_path = build(tmp_path / f"{name}.onnx")
        for suffix in (".h5", ".keras"):
            out = tmp_path / f"{name}{suffix}"
            model = convert_onnx(onnx_path, out)
            assert out.is_file()
            files.append(str(out))
        x = rng.standard_normal((2, *shape)).astype(np.float32)
        inputs[name] = x.transpose(0, 2, 3, 1)
        expected[name] = np.asarray(model(inputs[name]))
        import onnxruntime as ort

        ref = ort.InferenceSession(str(onnx_path)).run(None, {"image" if name == "mnet" else
                                                              "x": x})[0]
        assert np.abs(ref - expected[name]).max() < 1e-4
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]  # atomic writes left nothing
    npz = tmp_path / "inputs.npz"
    np.savez(npz, **inputs)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, "-c", _RELOAD, str(npz), *files], check=True, env=env,
                   timeout=240)
    for i, path in enumerate(files):
        name = os.path.basename(path).split(".")[0]
        got = np.load(f"{npz}.{i}.npy")
        np.testing.assert_allclose(got, expected[name], rtol=0, atol=1e-6, err_msg=path)


def test_unsupported_op_names_op_and_node(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="/a/Relu"),
             helper.make_node("LpNormalization", ["r"], ["y"], name="/a/LpNorm")]
    path = make_onnx(tmp_path / "u.onnx", nodes, [("x", [None, 4, 6, 6])], [("y", None)])
    out = tmp_path / "u.h5"
    with pytest.raises(UserError, match=r"unsupported ONNX op LpNormalization at node /a/LpNorm"):
        convert_onnx(path, out)
    assert not out.exists()


def test_bad_files(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xffnot a model" * 10)
    with pytest.raises(UserError, match="ONNX"):
        convert_onnx(junk)
    with pytest.raises(UserError, match="not found"):
        convert_onnx(tmp_path / "missing.onnx")
    path = branching_model(tmp_path / "b.onnx")
    with pytest.raises(UserError, match=r"\.h5 or \.keras"):
        convert_onnx(path, tmp_path / "out.pb")


def test_verification_failure_writes_nothing(tmp_path, monkeypatch):
    from classes_tool.convert import ops

    def wrong_relu(conversion, node, attrs):  # a deliberately broken converter: sigmoid instead of relu
        x = conversion.model_tensor(0)
        conversion.out(keras.layers.Activation("sigmoid", name=conversion.name())(x.tensor),
               channels_last=x.channels_last)

    monkeypatch.setitem(ops.CONVERTERS, "Relu", wrong_relu)
    path = branching_model(tmp_path / "b.onnx")
    out = tmp_path / "b.keras"
    with pytest.raises(UserError, match="max abs difference"):
        convert_onnx(path, out)
    assert not out.exists()
    model = convert_onnx(path, verify=False)  # the user can still skip the check
    assert model is not None


@pytest.mark.parametrize("tolerance", ["-1", "0", "nan", "inf", "-inf"])
def test_bad_tolerance_is_refused_before_converting(tmp_path, capsys, monkeypatch, tolerance):
    """--tolerance must be positive and finite: -1, 0 and NaN would fail every model only after
    the whole conversion ran (printing "... > tolerance nan"), inf would switch the check off."""
    from classes_tool.cli import main
    from classes_tool.convert import api

    path = branching_model(tmp_path / "b.onnx")

    def no_conversion(*args, **kwargs):
        raise AssertionError("the tolerance must be checked before converting")

    monkeypatch.setattr(api, "load_onnx_model", no_conversion)
    out = tmp_path / "b.h5"
    assert main(["convert", str(path), "-o", str(out), f"--tolerance={tolerance}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("classes-tool: error: bad tolerance") and "positive finite" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["b.onnx"]
    with pytest.raises(UserError, match="bad tolerance"):
        convert_onnx(path, tolerance=float(tolerance))


def test_dynamic_input_needs_shape(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    path = make_onnx(tmp_path / "d.onnx", nodes, [("x", ["N", 3, "H", "W"])], [("y", None)],
                     {"w": W(4, 3, 3, 3)})
    with pytest.raises(UserError, match="input-shape"):
        convert_onnx(path)
    with pytest.raises(UserError, match="3 dimensions"):
        convert_onnx(path, input_shapes=[(3, 8)])
    model = convert_onnx(path, input_shapes=parse_input_shapes(["3,8,12"]))
    assert model.input_shape == (None, 8, 12, 3)
    assert model.output_shape == (None, 8, 12, 4)  # 4-D outputs are NHWC too


def test_reshape_across_batch_is_rejected(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="r")]
    path = make_onnx(tmp_path / "r.onnx", nodes, [("x", [None, 4, 6])], [("y", None)],
                     {"s": np.asarray([-1, 6], np.int64)})
    with pytest.raises(UserError, match="batch"):
        convert_onnx(path)


def test_parse_input_shapes_and_names():
    assert parse_input_shapes(None) is None
    assert parse_input_shapes(["3,48,192", "1x8"]) == [(3, 48, 192), (1, 8)]
    with pytest.raises(UserError):
        parse_input_shapes(["3,a"])
    assert sanitize("/backbone/conv1/Conv") == "backbone_conv1_Conv"
    assert sanitize("blocks.0.dw:0") == "blocks_0_dw_0"
    assert sanitize("123") == "n_123"
