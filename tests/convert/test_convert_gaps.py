"""Converter gaps closed after issues 17 and 18, each with a small graph at the opset where it
shows and one small end-to-end network: LRN (AlexNet-style, opset 9), constant folding with the
model's own opsets, AveragePool with pads excluded from the average, softmax over several
trailing axes at large logits, a Transpose that moves the batch axis (attention q/k/v), and the
absolute plus relative verification tolerance."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from onnx import helper
from onnx_helpers import make_onnx, ort_vs_keras

from classes_tool.convert import convert_onnx, convert_onnx_with_report, layers
from classes_tool.convert.verify import DEFAULT_ATOL, DEFAULT_RTOL, compare
from classes_tool.errors import UserError

_RNG = np.random.default_rng(17)


def W(*shape, scale=0.3):
    return (_RNG.standard_normal(shape) * scale).astype(np.float32)


def I64(*values):
    return np.asarray(values, dtype=np.int64)


def N(op, inputs, outputs=("y",), name=None, **attrs):
    return helper.make_node(op, list(inputs), list(outputs), name=name or f"/blk/{op}",
                            **attrs)


def _types(model):
    return {type(layer).__name__ for layer in model.layers}


def _convert(tmp_path, nodes, shapes, inits=None, opset=17, **kwargs):
    inputs = [("x" if i == 0 else f"x{i}", [None, *s]) for i, s in enumerate(shapes)]
    path = make_onnx(tmp_path / "m.onnx", nodes, inputs, [("y", None)], inits, opset=opset)
    model = convert_onnx(path, **kwargs)
    assert "Lambda" not in _types(model)
    return path, model


def _reload_matches(tmp_path, model, shape, suffix):
    """Saved and reloaded with plain keras.models.load_model, the model computes the same."""
    out = tmp_path / f"reloaded{suffix}"
    model.save(out)
    again = keras.models.load_model(out)
    x = np.random.default_rng(2).standard_normal((2, *shape)).astype(np.float32)
    x = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), rtol=0, atol=1e-6)


# ---- 1. LRN ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size,shape,opset", [(5, (8, 5, 5), 9), (3, (5, 4, 7), 17),
                                              (1, (3, 4, 4), 9)])
def test_lrn_matches_onnxruntime(tmp_path, size, shape, opset):
    node = N("LRN", "x", size=size, alpha=2e-2, beta=0.75, bias=1.5)
    path, model = _convert(tmp_path, [node], [shape], opset=opset)
    assert "LRN" in _types(model)
    assert ort_vs_keras(path, model, [shape]) < 1e-5


def _lrn_reference(x, size, alpha, beta, bias):
    """The ONNX LRN formula in NumPy over axis 1 (ONNX Runtime refuses even sizes and inputs
    that are not 4-D, and onnx's reference implementation loops over the batch, not the
    channels)."""
    c1, c2 = (size - 1) // 2, size // 2  # floor((size-1)/2) before, ceil((size-1)/2) after
    squares = np.zeros_like(x, dtype=np.float64)
    for c in range(x.shape[1]):
        squares[:, c] = (x[:, max(0, c - c1):c + c2 + 1].astype(np.float64) ** 2).sum(axis=1)
    return x / (bias + alpha / size * squares) ** beta


@pytest.mark.parametrize("size,shape", [(4, (6, 4, 4)), (2, (5, 3, 3)), (5, (6, 7)),
                                        (6, (3, 4))])
def test_lrn_even_sizes_and_other_ranks_follow_the_formula(tmp_path, size, shape):
    node = N("LRN", "x", size=size, alpha=2e-2, beta=0.75, bias=1.5)
    path, model = _convert(tmp_path, [node], [shape], opset=13, verify=False)
    x = np.random.default_rng(3).standard_normal((2, *shape)).astype(np.float32)
    ref = _lrn_reference(x, size, 2e-2, 0.75, 1.5)
    if x.ndim == 4:
        got = np.asarray(model(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    else:
        got = np.asarray(model(x))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_lrn_default_attributes_at_large_values(tmp_path):
    nodes = [N("Mul", ["x", "k"], ["big"]), N("LRN", ["big"], size=5)]
    path, model = _convert(tmp_path, nodes, [(8, 3, 3)], {"k": np.float32(50.0)}, opset=9)
    assert ort_vs_keras(path, model, [(8, 3, 3)]) < 1e-4


def alexnet_like(path):
    """Conv-ReLU-LRN-MaxPool twice, then a classifier behind a Shape->Gather->Unsqueeze->
    Concat->Reshape flatten, at opset 9 (Unsqueeze takes its axes as an attribute)."""
    nodes = [
        N("Conv", ["image", "c1.w", "c1.b"], ["c1"], "/features/0/Conv", kernel_shape=[5, 5],
          strides=[2, 2], pads=[2, 2, 2, 2]),
        N("Relu", ["c1"], ["r1"], "/features/1/Relu"),
        N("LRN", ["r1"], ["n1"], "/features/2/LRN", size=5, alpha=1e-4, beta=0.75, bias=2.0),
        N("MaxPool", ["n1"], ["p1"], "/features/3/MaxPool", kernel_shape=[3, 3], strides=[2, 2]),
        N("Conv", ["p1", "c2.w", "c2.b"], ["c2"], "/features/4/Conv", kernel_shape=[3, 3],
          pads=[1, 1, 1, 1], group=2),
        N("Relu", ["c2"], ["r2"], "/features/5/Relu"),
        N("LRN", ["r2"], ["n2"], "/features/6/LRN", size=5, alpha=1e-4, beta=0.75, bias=2.0),
        N("MaxPool", ["n2"], ["p2"], "/features/7/MaxPool", kernel_shape=[3, 3], strides=[2, 2]),
        N("Shape", ["p2"], ["sh"], "/Shape"),
        N("Gather", ["sh", "zero"], ["n"], "/Gather", axis=0),
        N("Unsqueeze", ["n"], ["n_1d"], "/Unsqueeze", axes=[0]),
        N("Concat", ["n_1d", "minus1"], ["target"], "/Concat", axis=0),
        N("Reshape", ["p2", "target"], ["flat"], "/Reshape"),
        N("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], "/classifier/Gemm", transB=1),
        N("Softmax", ["logits"], ["probs"], "/Softmax", axis=1),
    ]
    inits = {"c1.w": W(16, 3, 5, 5), "c1.b": W(16), "c2.w": W(24, 8, 3, 3), "c2.b": W(24),
             "zero": np.int64(0), "minus1": I64(-1), "fc.w": W(10, 24 * 3 * 3),
             "fc.b": W(10)}
    return make_onnx(path, nodes, [("image", [None, 3, 31, 31])], [("probs", [None, 10])],
                     inits, opset=9)


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_alexnet_like_network_at_opset_9(tmp_path, suffix):
    path = alexnet_like(tmp_path / "alexnet.onnx")
    model, report = convert_onnx_with_report(path, tmp_path / f"alexnet{suffix}")
    assert report.max_abs_diff < 1e-5
    assert {"Conv2D", "LRN", "MaxPooling2D", "Dense", "Softmax"} <= _types(model)
    assert "Lambda" not in _types(model)
    assert "features_2_LRN" in {layer.name for layer in model.layers}
    assert ort_vs_keras(path, model, [(3, 31, 31)]) < 1e-5
    # the written file reloads with plain keras.models.load_model (layers are registered)
    again = keras.models.load_model(tmp_path / f"alexnet{suffix}")
    x = np.random.default_rng(4).standard_normal((2, 31, 31, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), rtol=0, atol=1e-6)


def test_lrn_layer_is_registered():
    assert layers.LRN in layers.CUSTOM_LAYERS
    layer = layers.LRN(4, alpha=1e-3, beta=0.5, bias=2.0, axis=1)
    clone = layers.LRN.from_config(layer.get_config())
    assert (clone.size, clone.alpha, clone.beta, clone.bias, clone.axis) == (4, 1e-3, 0.5, 2.0, 1)


# ---- 2. constant folding with the model's opsets --------------------------------------------

def _fold_case(op_nodes, opset, inits=None):
    """A constant chain ending in `c`, added to the input (so the chain must fold)."""
    return op_nodes + [N("Add", ["x", "c"])], opset, inits or {}


FOLD_CASES = {
    "unsqueeze_axes_attr_opset9": _fold_case(
        [N("Unsqueeze", ["k"], ["c"], axes=[0, 2])], 9, {"k": W(4, 6)}),
    "unsqueeze_axes_attr_opset11": _fold_case(
        [N("Unsqueeze", ["k"], ["c"], axes=[1])], 11, {"k": W(4, 6)}),
    "squeeze_axes_attr_opset11": _fold_case(
        [N("Squeeze", ["k"], ["c"], axes=[0])], 11, {"k": W(1, 4, 6, 6)}),
    "reduce_sum_axes_attr_opset11": _fold_case(
        [N("ReduceSum", ["k"], ["c"], axes=[0], keepdims=0)], 11, {"k": W(3, 4, 6, 6)}),
    "reduce_max_axes_attr_opset13": _fold_case(
        [N("ReduceMax", ["k"], ["c"], axes=[-1], keepdims=1)], 13, {"k": W(4, 6, 5)}),
    "split_attr_opset11": _fold_case(
        [N("Split", ["k"], ["a", "c"], axis=0, split=[4, 6])], 11, {"k": W(10, 6)}),
    "slice_attrs_opset9": _fold_case(
        [N("Slice", ["k"], ["c"], starts=[1], ends=[7], axes=[1])], 9, {"k": W(4, 8, 6)}),
    "pad_attrs_opset10": _fold_case(
        [N("Pad", ["k"], ["c"], pads=[0, 1, 0, 0, 1, 1], value=0.5)], 10, {"k": W(4, 4, 5)}),
    "clip_attrs_opset10": _fold_case(
        [N("Clip", ["k"], ["c"], min=-0.1, max=0.2)], 10, {"k": W(4, 6, 6)}),
}


@pytest.mark.parametrize("case", sorted(FOLD_CASES))
def test_folding_uses_the_models_opset(tmp_path, case):
    nodes, opset, inits = FOLD_CASES[case]
    path, model = _convert(tmp_path, nodes, [(4, 6, 6)], inits, opset=opset)
    assert ort_vs_keras(path, model, [(4, 6, 6)]) < 1e-5


def test_folding_a_resize_at_opset_10(tmp_path):
    """Resize-10 has no roi input: run as Resize-19 its scales would be read as the roi."""
    nodes = [N("Resize", ["k", "sc"], ["r"], mode="nearest"), N("Add", ["x", "r"])]
    inits = {"k": W(1, 4, 3, 3), "sc": np.asarray([1, 1, 2, 2], np.float32)}
    path, model = _convert(tmp_path, nodes, [(4, 6, 6)], inits, opset=10)
    assert ort_vs_keras(path, model, [(4, 6, 6)]) < 1e-5


# ---- 3. AveragePool with pads excluded from the average ------------------------------------

AVGPOOL_CASES = {
    "k3_s2_p1_even_map": ((4, 6, 6), dict(kernel_shape=[3, 3], strides=[2, 2],
                                          pads=[1, 1, 1, 1])),
    "k7_pads_end_only": ((3, 7, 7), dict(kernel_shape=[7, 7], pads=[0, 0, 1, 1])),
    "k3_s2_asymmetric": ((3, 7, 8), dict(kernel_shape=[3, 3], strides=[2, 2],
                                         pads=[1, 0, 2, 1])),
    "ceil_mode_exclusive": ((3, 7, 7), dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    "ceil_mode_inclusive": ((3, 6, 6), dict(kernel_shape=[3, 3], strides=[2, 2],
                                            pads=[1, 1, 1, 1], ceil_mode=1,
                                            count_include_pad=1)),
    "ceil_mode_pads_exclusive": ((3, 8, 8), dict(kernel_shape=[3, 3], strides=[3, 3],
                                                 pads=[1, 1, 1, 1], ceil_mode=1)),
    "1d_k3_s2_p1": ((4, 8), dict(kernel_shape=[3], strides=[2], pads=[1, 1])),
}


@pytest.mark.parametrize("case", sorted(AVGPOOL_CASES))
def test_average_pool_excluding_pads(tmp_path, case):
    shape, attrs = AVGPOOL_CASES[case]
    path, model = _convert(tmp_path, [N("AveragePool", "x", **attrs)], [shape], opset=19)
    assert ort_vs_keras(path, model, [shape]) < 1e-5
    assert {"AveragePooling2D", "AveragePooling1D"} & _types(model)


def test_small_net_with_exclusive_average_pools(tmp_path):
    """An Inception-style stem: stride-2 exclusive average pooling with symmetric pads on an
    even map, then a 7x7 pool padded at the end only, then a classifier."""
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["c1"], "/stem/Conv", pads=[1, 1, 1, 1],
          kernel_shape=[3, 3]),
        N("Relu", ["c1"], ["r1"], "/stem/Relu"),
        N("AveragePool", ["r1"], ["a1"], "/stem/AveragePool", kernel_shape=[3, 3],
          strides=[2, 2], pads=[1, 1, 1, 1]),
        N("Conv", ["a1", "w2"], ["c2"], "/mid/Conv", kernel_shape=[1, 1]),
        N("AveragePool", ["c2"], ["a2"], "/head/AveragePool", kernel_shape=[7, 7],
          pads=[0, 0, 1, 1]),
        N("Flatten", ["a2"], ["f"], "/head/Flatten"),
        N("Gemm", ["f", "fc", "fcb"], ["y"], "/head/Gemm", transB=1),
    ]
    inits = {"w1": W(8, 3, 3, 3), "b1": W(8), "w2": W(6, 8, 1, 1), "fc": W(5, 6 * 2 * 2),
             "fcb": W(5)}
    path, model = _convert(tmp_path, nodes, [(3, 14, 14)], inits, opset=11)
    assert ort_vs_keras(path, model, [(3, 14, 14)]) < 1e-5
    _reload_matches(tmp_path, model, (3, 14, 14), ".keras")


# ---- 4. softmax over several trailing axes --------------------------------------------------

def test_softmax_over_trailing_unit_axes_at_large_logits(tmp_path):
    """Opset < 13 Softmax(axis=1) on an (N, C, 1, 1) map: logits near 7e9 that are all equal
    in float32 give 1/C each, not the 1 that exp(x - logsumexp(x)) rounds to."""
    nodes = [N("Mul", ["x", "small"], ["s"]), N("Add", ["s", "big"], ["z"]),
             N("Softmax", ["z"], axis=1)]
    inits = {"small": np.float32(1e-3), "big": np.float32(7e9)}
    path, model = _convert(tmp_path, nodes, [(1000, 1, 1)], inits, opset=11)
    assert ort_vs_keras(path, model, [(1000, 1, 1)]) < 1e-6
    y = np.asarray(model(np.zeros((1, 1, 1, 1000), np.float32)))
    np.testing.assert_allclose(y, 1e-3, rtol=1e-5)


@pytest.mark.parametrize("shape,axis", [((4, 5, 6), 1), ((4, 5, 6), 2), ((3, 1, 6), 1),
                                        ((5, 7), 1)])
def test_softmax_over_several_wide_axes_at_large_logits(tmp_path, shape, axis):
    """Logits near 1e7 (float32 spacing 1) spread over a few units: exp(x - logsumexp(x))
    would be off by up to exp(0.5); merged into one axis the softmax matches ONNX Runtime."""
    nodes = [N("Mul", ["x", "k"], ["s"]), N("Add", ["s", "big"], ["z"]),
             N("Softmax", ["z"], axis=axis)]
    inits = {"k": np.float32(3.0), "big": np.float32(1e7)}
    path, model = _convert(tmp_path, nodes, [shape], inits, opset=11)
    assert ort_vs_keras(path, model, [shape]) < 1e-6


@pytest.mark.parametrize("shape", [(4, 5, 6), (6, 1, 1)])
def test_log_softmax_over_trailing_axes_at_opset_11(tmp_path, shape):
    nodes = [N("Mul", ["x", "k"], ["z"]), N("LogSoftmax", ["z"], axis=1)]
    path, model = _convert(tmp_path, nodes, [shape], {"k": np.float32(30.0)}, opset=11)
    assert ort_vs_keras(path, model, [shape]) < 1e-4


# ---- 5. Transpose that moves the batch axis -------------------------------------------------

def attention_block(path, unbind="split", opset=13):
    """A ViT-style self-attention block: qkv projection reshaped to (B, N, 3, h, d), the 3
    transposed to the front, q/k/v taken apart (Split + Squeeze, or Gather), attention, and
    the heads merged back."""
    n_tok, dim, heads = 5, 8, 2
    d = dim // heads
    nodes = [
        N("MatMul", ["x", "qkv.w"], ["qkv0"], "/attn/qkv/MatMul"),
        N("Add", ["qkv0", "qkv.b"], ["qkv1"], "/attn/qkv/Add"),
        N("Reshape", ["qkv1", "shape5"], ["qkv2"], "/attn/Reshape"),
        N("Transpose", ["qkv2"], ["qkv"], "/attn/Transpose", perm=[2, 0, 3, 1, 4]),
    ]
    if unbind == "split":
        split_args = {"split": [1, 1, 1]} if opset < 13 else {}
        split_in = ["qkv"] if opset < 13 else ["qkv", "ones"]
        nodes.append(N("Split", split_in, ["q0", "k0", "v0"], "/attn/Split", axis=0,
                       **split_args))
        for t in "qkv":
            sq_args = {"axes": [0]} if opset < 13 else {}
            sq_in = [f"{t}0"] if opset < 13 else [f"{t}0", "axis0"]
            nodes.append(N("Squeeze", sq_in, [t], f"/attn/Squeeze_{t}", **sq_args))
    else:
        for i, t in enumerate("qkv"):
            nodes.append(N("Gather", ["qkv", f"i{i}"], [t], f"/attn/Gather_{t}", axis=0))
    nodes += [
        N("Mul", ["q", "scale"], ["qs"], "/attn/Mul"),
        N("Transpose", ["k"], ["kt"], "/attn/Transpose_1", perm=[0, 1, 3, 2]),
        N("MatMul", ["qs", "kt"], ["att0"], "/attn/MatMul"),
        N("Softmax", ["att0"], ["att"], "/attn/Softmax", axis=-1),
        N("MatMul", ["att", "v"], ["o0"], "/attn/MatMul_1"),
        N("Transpose", ["o0"], ["o1"], "/attn/Transpose_2", perm=[0, 2, 1, 3]),
        N("Reshape", ["o1", "shape3"], ["o2"], "/attn/Reshape_1"),
        N("MatMul", ["o2", "proj.w"], ["y"], "/attn/proj/MatMul"),
    ]
    inits = {"qkv.w": W(dim, 3 * dim), "qkv.b": W(3 * dim), "shape5": I64(0, n_tok, 3, heads, d),
             "ones": I64(1, 1, 1), "axis0": I64(0), "scale": np.float32(d ** -0.5),
             "shape3": I64(0, n_tok, dim), "proj.w": W(dim, dim),
             "i0": np.int64(0), "i1": np.int64(1), "i2": np.int64(2)}
    used = {i for node in nodes for i in node.input}
    inits = {k: v for k, v in inits.items() if k in used}
    return make_onnx(path, nodes, [("x", [None, n_tok, dim])], [("y", [None, n_tok, dim])],
                     inits, opset=opset)


@pytest.mark.parametrize("unbind,opset", [("split", 13), ("split", 11), ("gather", 13)])
def test_attention_block_with_batch_moving_transpose(tmp_path, unbind, opset):
    path = attention_block(tmp_path / "attn.onnx", unbind, opset)
    model = convert_onnx(path)
    assert "Lambda" not in _types(model) and "MatMul" in _types(model)
    assert ort_vs_keras(path, model, [(5, 8)]) < 1e-5
    _reload_matches(tmp_path, model, (5, 8), ".h5")


def test_batch_moving_transpose_slice_and_transpose_back(tmp_path):
    """Slicing the moved tensor along its new leading axes, or transposing the batch back."""
    nodes = [N("Transpose", ["x"], ["t"], "/t", perm=[1, 0, 2, 3]),           # (C, B, H, W)
             N("Slice", ["t", "s", "e", "a"], ["sl"], "/slice"),             # channels 1..3
             N("Transpose", ["sl"], ["back"], "/back", perm=[1, 2, 0, 3]),    # (B, H, C', W)
             N("Relu", ["back"], ["y"], "/relu")]
    inits = {"s": I64(1, 2), "e": I64(3, 6), "a": I64(0, 2)}
    path, model = _convert(tmp_path, nodes, [(4, 6, 6)], inits)
    assert ort_vs_keras(path, model, [(4, 6, 6)]) < 1e-6


def test_batch_moving_transpose_with_other_consumers_is_refused(tmp_path):
    nodes = [N("Transpose", ["x"], ["t"], "/attn/Transpose", perm=[1, 0, 2]),
             N("Relu", ["t"], ["y"], "/attn/Relu")]
    path = make_onnx(tmp_path / "m.onnx", nodes, [("x", [None, 4, 6])], [("y", None)])
    with pytest.raises(UserError, match=r"/attn/Relu.*/attn/Transpose \(Transpose\).*moves "
                                        r"the batch"):
        convert_onnx(path)
    nodes = [N("Transpose", ["x"], ["y"], "/attn/Transpose", perm=[1, 0, 2])]
    path = make_onnx(tmp_path / "m.onnx", nodes, [("x", [None, 4, 6])], [("y", None)])
    with pytest.raises(UserError, match="moves the batch axis"):
        convert_onnx(path)
    nodes = [N("Transpose", ["x"], ["t"], "/t", perm=[1, 0, 2]),
             N("Gather", ["t", "i"], ["y"], "/g", axis=1)]  # picks samples out of the batch
    path = make_onnx(tmp_path / "m.onnx", nodes, [("x", [None, 4, 6])], [("y", None)],
                     {"i": np.int64(0)})
    with pytest.raises(UserError, match="batch axis"):
        convert_onnx(path)


# ---- 6. verification: absolute plus magnitude-relative tolerance ----------------------------

def test_tolerance_is_absolute_plus_relative():
    ref = np.asarray([[300.0, 1e-3, 0.0]], np.float32)
    off = np.float32(300.0)
    for _ in range(4):  # 4 float32 ulps above 300: 1.2e-4
        off = np.nextafter(off, np.float32(np.inf))
    out = np.asarray([[off, 1e-3, 0.0]], np.float32)
    diffs = compare([(ref, out)])
    assert (diffs.atol, diffs.rtol) == (DEFAULT_ATOL, DEFAULT_RTOL)
    assert diffs.max_abs_diff == pytest.approx(1.2207e-4, rel=1e-3) and diffs.within
    assert diffs.max_rel_diff == pytest.approx(1.2207e-4 / 300, rel=1e-3)
    assert not compare([(ref, out)], rtol=0.0).within  # the old absolute-only check
    near_zero = compare([(ref, ref + np.asarray([[0, 2e-4, 0]], np.float32))])
    assert not near_zero.within and near_zero.worst == pytest.approx((1e-3, 1.2e-3))
    assert compare([(ref, ref[:, :2])]).excess == float("inf")
    assert not compare([(ref, np.full_like(ref, np.nan))]).within


def _scaled(cv_factor):
    """A converter for Mul by a scalar that multiplies by `cv_factor` times the constant."""
    def convert(conversion, node, attrs):
        x = conversion.model_tensor(0)
        value = float(np.asarray(conversion.const(1))) * cv_factor
        conversion.out(keras.layers.Rescaling(value, name=conversion.name())(x.tensor),
               channels_last=x.channels_last)
    return convert


def test_large_outputs_within_a_few_ulps_pass_and_failures_give_both_figures(tmp_path,
                                                                             monkeypatch):
    """Outputs near 300 that differ from ONNX Runtime in the last float32 bits are accepted
    (they were refused by the absolute 1e-4); a real error is refused with both figures."""
    from classes_tool.convert import ops

    nodes = [N("Mul", ["x", "k"])]
    path = make_onnx(tmp_path / "m.onnx", nodes, [("x", [None, 6])], [("y", None)],
                     {"k": np.float32(300.0)})
    monkeypatch.setitem(ops.CONVERTERS, "Mul", _scaled(1 + 4.8e-7))  # ~4 ulps off
    _, report = convert_onnx_with_report(path)
    assert 1e-4 < report.max_abs_diff < 2e-3 and report.max_rel_diff < 1e-6
    with pytest.raises(UserError, match=r"max abs difference .*max relative difference "
                                        r".*abs 0\.0001 \+ rel 0 x"):
        convert_onnx(path, rtol=0.0)
    monkeypatch.setitem(ops.CONVERTERS, "Mul", _scaled(1.01))  # a real error: 1 %
    with pytest.raises(UserError, match=r"max abs difference [0-9.e+-]+, max relative "
                                        r"difference 0\.01\b.*worst element"):
        convert_onnx(path)
    with pytest.raises(UserError, match="bad relative tolerance"):
        convert_onnx(path, rtol=-1.0)


def yolo_head(path):
    """A YOLO-style detection head: conv features, then boxes decoded to pixels (grid offsets
    times the stride, exp(wh) times anchors), so box outputs reach several hundred."""
    h = 16
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(h), indexing="xy"))[None]
    rng = np.random.default_rng(2)

    def w(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    nodes = [
        N("Conv", ["x", "w1", "b1"], ["c1"], "/c1/Conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        N("Sigmoid", ["c1"], ["s1"], "/c1/Sigmoid"),
        N("Mul", ["c1", "s1"], ["a1"], "/c1/Mul"),
        N("Conv", ["a1", "w2", "b2"], ["c2"], "/head/Conv"),
        N("Split", ["c2", "sp"], ["xy", "wh", "conf"], "/head/Split", axis=1),
        N("Sigmoid", ["xy"], ["sxy"], "/decode/Sigmoid"),
        N("Mul", ["sxy", "two"], ["xy2"], "/decode/Mul"),
        N("Sub", ["xy2", "half"], ["xy3"], "/decode/Sub"),
        N("Add", ["xy3", "grid"], ["xy4"], "/decode/Add"),
        N("Mul", ["xy4", "stride"], ["box_xy"], "/decode/Mul_1"),
        N("Exp", ["wh"], ["ewh"], "/decode/Exp"),
        N("Mul", ["ewh", "anchor"], ["box_wh"], "/decode/Mul_2"),
        N("Sigmoid", ["conf"], ["sconf"], "/decode/Sigmoid_1"),
        N("Concat", ["box_xy", "box_wh", "sconf"], ["y"], "/decode/Concat", axis=1),
    ]
    inits = {"w1": w(16, 3, 3, 3, scale=0.5), "b1": w(16), "w2": w(6, 16, 1, 1, scale=0.2),
             "b2": w(6), "sp": I64(2, 2, 2), "two": np.float32(2), "half": np.float32(0.5),
             "grid": grid.astype(np.float32), "stride": np.float32(20.0),
             "anchor": np.asarray([116, 90], np.float32).reshape(1, 2, 1, 1)}
    return make_onnx(path, nodes, [("x", [None, 3, 32, 32])], [("y", None)], inits, opset=13)


def test_yolo_style_detector_passes_the_default_check(tmp_path):
    path = yolo_head(tmp_path / "yolo.onnx")
    model, report = convert_onnx_with_report(path)
    assert report.max_rel_diff < 1e-4
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    got = np.asarray(model(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    assert np.abs(ref).max() > 300
    np.testing.assert_allclose(got, ref, atol=DEFAULT_ATOL, rtol=DEFAULT_RTOL)


_RELOAD = """
import sys, numpy as np, keras
import classes_tool.convert  # registers the custom layers (LRN, Constant, Gather, ...)
for path, x, expected in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
    got = np.asarray(keras.models.load_model(path)(np.load(x)))
    assert np.abs(got - np.load(expected)).max() < 1e-6, path
print("ok")
"""


@pytest.mark.slow
def test_new_conversions_reload_in_a_fresh_process(tmp_path):
    import os
    import subprocess
    import sys

    args = []
    rng = np.random.default_rng(6)
    for name, build, shape, suffix in (("alexnet", alexnet_like, (3, 31, 31), ".keras"),
                                       ("attn", attention_block, (5, 8), ".h5")):
        model = convert_onnx(build(tmp_path / f"{name}.onnx"), tmp_path / f"{name}{suffix}")
        x = rng.standard_normal((2, *shape)).astype(np.float32)
        x = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
        np.save(tmp_path / f"{name}_x.npy", x)
        np.save(tmp_path / f"{name}_y.npy", np.asarray(model(x)))
        args += [str(tmp_path / f"{name}{suffix}"), str(tmp_path / f"{name}_x.npy"),
                 str(tmp_path / f"{name}_y.npy")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", _RELOAD, *args], capture_output=True,
                            text=True, timeout=240, env=env)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
