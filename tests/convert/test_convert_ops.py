"""One small ONNX graph per op family, converted and compared with ONNX Runtime."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from onnx import helper
from onnx_helpers import make_onnx, ort_vs_keras

from classes_tool.convert import convert_onnx

_RNG = np.random.default_rng(42)


def W(*shape):
    return _RNG.standard_normal(shape).astype(np.float32)


def I64(*values):
    return np.asarray(values, dtype=np.int64)


def N(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), name=f"/blk/{op}", **attrs)


X4 = (4, 6, 6)  # default 4-D input (C, H, W) without batch

# name -> (nodes, input shapes (no batch), initializers, opset)
CASES = {
    # --- convolution family
    "conv_same": ([N("Conv", "xwb", pads=[1, 1, 1, 1])], [X4],
                  {"w": W(5, 4, 3, 3), "b": W(5)}, 17),
    "conv_stride2_pad1": ([N("Conv", "xwb", pads=[1, 1, 1, 1], strides=[2, 2])], [X4],
                          {"w": W(5, 4, 3, 3), "b": W(5)}, 17),
    "conv_asym_pads_nobias": ([N("Conv", "xw", pads=[0, 1, 2, 0])], [X4],
                              {"w": W(3, 4, 2, 3)}, 17),
    "conv_groups": ([N("Conv", "xwb", group=2, pads=[1, 1, 1, 1])], [X4],
                    {"w": W(6, 2, 3, 3), "b": W(6)}, 17),
    "conv_depthwise": ([N("Conv", "xwb", group=4, pads=[1, 1, 1, 1], strides=[2, 2])], [X4],
                       {"w": W(4, 1, 3, 3), "b": W(4)}, 17),
    "conv_depthwise_mult2": ([N("Conv", "xw", group=4, pads=[1, 1, 1, 1])], [X4],
                             {"w": W(8, 1, 3, 3)}, 17),
    "conv_dilated": ([N("Conv", "xwb", dilations=[2, 2], pads=[2, 2, 2, 2])], [X4],
                     {"w": W(3, 4, 3, 3), "b": W(3)}, 17),
    "conv_auto_pad": ([N("Conv", "xw", auto_pad="SAME_UPPER", strides=[2, 2])], [(4, 7, 7)],
                      {"w": W(3, 4, 3, 3)}, 17),
    "conv1d": ([N("Conv", "xwb", pads=[1, 1])], [(4, 9)], {"w": W(5, 4, 3), "b": W(5)}, 17),
    "conv_transpose_s2": ([N("ConvTranspose", "xwb", strides=[2, 2], pads=[1, 1, 1, 1],
                             output_padding=[1, 1])], [X4], {"w": W(4, 3, 3, 3), "b": W(3)}, 17),
    "conv_transpose_k2": ([N("ConvTranspose", "xw", strides=[2, 2])], [X4],
                          {"w": W(4, 2, 2, 2)}, 17),
    "batchnorm": ([N("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)], [X4],
                  {"s": W(4), "b": W(4), "m": W(4), "v": np.abs(W(4)) + 0.5}, 17),
    "batchnorm_2d": ([N("BatchNormalization", ["x", "s", "b", "m", "v"])], [(4,)],
                     {"s": W(4), "b": W(4), "m": W(4), "v": np.abs(W(4)) + 0.5}, 17),
    "gemm": ([N("Gemm", "xwb", transB=1, alpha=0.5, beta=2.0)], [(6,)],
             {"w": W(3, 6), "b": W(3)}, 17),
    "matmul_const": ([N("MatMul", "xw")], [(5, 6)], {"w": W(6, 3)}, 17),
    "matmul_tensors": ([N("Transpose", "x", ["t"], perm=[0, 2, 1]),
                        N("MatMul", ["x", "t"])], [(5, 6)], {}, 17),
    # --- activations
    "relu": ([N("Relu", "x")], [X4], {}, 17),
    "relu6_clip": ([N("Clip", ["x", "lo", "hi"])], [X4],
                   {"lo": np.float32(0), "hi": np.float32(6)}, 17),
    "clip_pm1": ([N("Clip", ["x", "lo", "hi"])], [X4],
                 {"lo": np.float32(-1), "hi": np.float32(0.5)}, 17),
    "clip_opset6": ([N("Clip", "x", min=0.0, max=6.0)], [X4], {}, 6),
    "leaky_relu": ([N("LeakyRelu", "x", alpha=0.1)], [X4], {}, 17),
    "prelu": ([N("PRelu", "xs")], [X4], {"s": W(4, 1, 1)}, 17),
    "sigmoid_tanh_elu": ([N("Sigmoid", "x", ["a"]), N("Tanh", "a", ["b"]), N("Elu", "b")],
                         [X4], {}, 17),
    "more_activations": ([N("Mish", "x", ["a"]), N("Softplus", "a", ["b"]),
                          N("Selu", "b", ["c"]), N("Softsign", "c", ["d"]), N("Gelu", "d")],
                         [X4], {}, 20),
    "log_softmax_seq": ([N("LogSoftmax", "x", axis=-1)], [(5, 7)], {}, 17),
    "hard_sigmoid": ([N("HardSigmoid", "x", alpha=0.25, beta=0.4)], [X4], {}, 17),
    "hard_swish": ([N("HardSwish", "x")], [X4], {}, 17),
    "softmax_channels": ([N("Softmax", "x", axis=1)], [X4], {}, 17),
    "softmax_opset11": ([N("Softmax", "x", axis=1)], [X4], {}, 11),
    "softmax_last": ([N("Softmax", "x")], [(7,)], {}, 17),
    # --- pooling and reductions
    "maxpool_s2_p1": ([N("MaxPool", "x", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1])], [X4], {}, 17),
    "maxpool_ceil": ([N("MaxPool", "x", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)],
                     [(4, 7, 7)], {}, 17),
    "maxpool_same": ([N("MaxPool", "x", kernel_shape=[3, 3], pads=[1, 1, 1, 1])], [X4], {}, 17),
    "avgpool_exclusive": ([N("AveragePool", "x", kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                          [X4], {}, 17),
    "avgpool_inclusive": ([N("AveragePool", "x", kernel_shape=[3, 3], strides=[2, 2],
                             pads=[1, 1, 1, 1], count_include_pad=1)], [X4], {}, 17),
    "avgpool_valid": ([N("AveragePool", "x", kernel_shape=[2, 2], strides=[2, 2])], [X4], {},
                      17),
    "global_pools": ([N("GlobalAveragePool", "x", ["a"]), N("GlobalMaxPool", "x", ["m"]),
                      N("Add", "am")], [X4], {}, 17),
    "reduce_mean_keep": ([N("ReduceMean", "x", axes=[2, 3], keepdims=1)], [X4], {}, 17),
    "reduce_mean_ch": ([N("ReduceMean", ["x", "a"], keepdims=0)], [X4], {"a": I64(1)}, 18),
    "reduce_sum_last": ([N("ReduceSum", ["x", "a"], keepdims=1)], [X4], {"a": I64(-1)}, 17),
    # --- element-wise with broadcasting
    "add_sub_mul_div_const": ([N("Add", ["x", "c"], ["a"]), N("Sub", ["d", "a"], ["s"]),
                               N("Mul", ["s", "k"], ["m"]), N("Div", ["m", "e"])], [X4],
                              {"c": W(4, 1, 1), "d": W(1, 6), "k": np.float32(3.0),
                               "e": np.abs(W(4, 1, 1)) + 1}, 17),
    "scalar_ops": ([N("Add", ["x", "c"], ["a"]), N("Sub", ["c", "a"], ["s"]),
                    N("Div", ["s", "c"], ["d"]), N("Mul", ["d", "c"])], [X4],
                   {"c": np.float32(2.5)}, 17),
    "se_gate": ([N("GlobalAveragePool", "x", ["g"]), N("Sigmoid", "g", ["s"]),
                 N("Mul", ["x", "s"])], [X4], {}, 17),
    "tensor_div_max_min": ([N("Abs", "x", ["a"]), N("Add", ["a", "one"], ["b"]),
                            N("Div", ["x", "b"], ["d"]), N("Max", ["d", "x"], ["m"]),
                            N("Min", ["m", "b"])], [X4], {"one": np.float32(1)}, 17),
    "pow_sqrt": ([N("Abs", "x", ["a"]), N("Sqrt", "a", ["s"]), N("Pow", ["s", "p"])], [X4],
                 {"p": np.float32(3.0)}, 17),
    # --- shape and layout
    "flatten": ([N("Flatten", "x")], [X4], {}, 17),
    "flatten_axis2_unit": ([N("ReduceMean", "x", ["m"], axes=[1], keepdims=1),
                            N("Flatten", "m", axis=2)], [X4], {}, 17),
    "reshape_folded_shape": ([N("Shape", "x", ["sh"]), N("Gather", ["sh", "i0"], ["n"], axis=0),
                              N("Unsqueeze", ["n", "ax"], ["n1"]),
                              N("Concat", ["n1", "m1"], ["t"], axis=0),
                              N("Reshape", ["x", "t"])], [X4],
                             {"i0": np.int64(0), "ax": I64(0), "m1": I64(-1)}, 17),
    "reshape_to_sequence": ([N("Reshape", ["x", "t"], ["r"]),
                             N("Transpose", "r", perm=[0, 2, 1])], [X4],
                            {"t": I64(0, 4, -1)}, 17),
    "transpose_nhwc": ([N("Transpose", "x", perm=[0, 2, 3, 1])], [X4], {}, 17),
    "squeeze_unsqueeze": ([N("ReduceMean", "x", ["m"], axes=[2], keepdims=1),
                           N("Squeeze", ["m", "a"], ["s"]), N("Unsqueeze", ["s", "b"])], [X4],
                          {"a": I64(2), "b": I64(-1)}, 17),
    "concat_channels": ([N("Relu", "x", ["r"]), N("Concat", ["x", "r"], axis=1)], [X4], {}, 17),
    "concat_mixed_layout": ([N("Transpose", "x", ["t"], perm=[0, 1, 3, 2]), N("Relu", "x", ["r"]),
                             N("Concat", ["t", "r"], axis=2)], [X4], {}, 17),
    "concat_seq": ([N("Reshape", ["x", "t"], ["r"]), N("Concat", ["r", "r"], axis=-1)], [X4],
                   {"t": I64(0, 4, -1)}, 17),
    "split": ([N("Split", ["x", "sp"], ["a", "b"], axis=1), N("Sub", ["a", "b"])], [X4],
              {"sp": I64(2, 2)}, 17),
    "slice_steps": ([N("Slice", ["x", "s", "e", "a", "st"])], [X4],
                    {"s": I64(1, -1), "e": I64(4, -7), "a": I64(1, 3), "st": I64(1, -2)}, 17),
    "gather_scalar": ([N("Gather", ["x", "i"], axis=2)], [X4], {"i": I64(3)[0]}, 17),
    "gather_list": ([N("Gather", ["x", "i"], axis=1)], [X4], {"i": I64(3, 0)}, 17),
    "pad_constant": ([N("Pad", ["x", "p", "v"])], [X4],
                     {"p": I64(0, 1, 2, 0, 0, 0, 1, 3), "v": np.float32(0.5)}, 17),
    "pad_zero_spatial": ([N("Pad", ["x", "p"])], [X4], {"p": I64(0, 0, 1, 2, 0, 0, 3, 0)}, 17),
    "pad_reflect": ([N("Pad", ["x", "p"], mode="reflect")], [X4],
                    {"p": I64(0, 0, 1, 2, 0, 0, 2, 1)}, 17),
    "resize_nearest": ([N("Resize", ["x", "", "sc"], mode="nearest",
                          coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
                       [X4], {"sc": np.asarray([1, 1, 2, 2], np.float32)}, 17),
    "resize_nearest_halfpixel": ([N("Resize", ["x", "", "sc"], mode="nearest")], [X4],
                                 {"sc": np.asarray([1, 1, 3, 2], np.float32)}, 17),
    "resize_bilinear": ([N("Resize", ["x", "", "sc"], mode="linear")], [X4],
                        {"sc": np.asarray([1, 1, 2, 2], np.float32)}, 17),
    "resize_bilinear_sizes": ([N("Resize", ["x", "", "", "sz"], mode="linear", axes=[2, 3])],
                              [X4], {"sz": I64(9, 10)}, 18),
    "resize_align_corners": ([N("Resize", ["x", "", "", "sz"], mode="linear", axes=[2, 3],
                                coordinate_transformation_mode="align_corners")], [X4],
                             {"sz": I64(11, 9)}, 18),
    "upsample_opset9": ([N("Upsample", ["x", "sc"])], [X4],
                        {"sc": np.asarray([1, 1, 2, 2], np.float32)}, 9),
    "range_folded": ([N("Range", ["a", "b", "c"], ["r"]), N("Cast", "r", ["f"], to=1),
                      N("Add", ["x", "f"])], [X4],
                     {"a": np.int64(0), "b": np.int64(6), "c": np.int64(1)}, 17),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_onnxruntime(case, tmp_path):
    nodes, shapes, inits, opset = CASES[case]
    inputs = [("x" if i == 0 else f"x{i}", [None, *s]) for i, s in enumerate(shapes)]
    path = make_onnx(tmp_path / "m.onnx", nodes, inputs, [("y", None)], inits, opset=opset)
    model = convert_onnx(path, tolerance=1e-4)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    assert ort_vs_keras(path, model, shapes) < 1e-4
