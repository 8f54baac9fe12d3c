"""Layout and shape ops: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice,
Gather, Pad, Resize/Upsample.

Ops that depend on memory order (Reshape and friends) take the tensor in ONNX layout; ops that
only touch some axes (Concat, Slice, Split, Pad) map their axes through the tensor's layout and
keep it, so channels-last feature maps do not bounce through Permute layers.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from classes_tool.errors import UserError

from .. import layers as L
from ..converter import BatchMoved, ModelTensor
from . import register, register_batch_moved


def _reshape_to(conversion, x: ModelTensor, target: list[int]):
    """Reshape `x` to the ONNX shape `target` (its first entry is the batch)."""
    shape = list(x.onnx_shape)
    per_sample = math.prod(int(d) for d in shape[1:])
    batch, rest = target[0], [int(d) for d in target[1:]]
    if rest.count(-1) > 1:
        raise UserError(f"node {conversion.node_label}: more than one -1 in the target shape")
    known = math.prod(d for d in rest if d != -1)
    if -1 in rest:
        if batch not in (1, -1) or known == 0 or per_sample % known:
            raise UserError(f"node {conversion.node_label}: reshape {target} moves data across the "
                            "batch dimension; not supported")
        rest[rest.index(-1)] = per_sample // known
    elif batch == -1 and known != per_sample or batch not in (1, -1):
        raise UserError(f"node {conversion.node_label}: reshape {target} changes the batch dimension "
                        f"of a {shape} tensor; not supported")
    elif known != per_sample:
        raise UserError(f"node {conversion.node_label}: cannot reshape {shape} to {target}")
    tensor = conversion.onnx_layout(x, for_reshape=True)
    if tuple(tensor.shape[1:]) == tuple(rest):
        return tensor
    return keras.layers.Reshape(tuple(rest), name=conversion.name())(tensor)


@register("Reshape")
def reshape(conversion, node, attrs):
    x = conversion.model_tensor(0)
    target = [int(d) for d in conversion.const(1).reshape(-1)]
    shape = x.onnx_shape
    if not attrs.get("allowzero", 0):
        target = [(1 if i == 0 else int(shape[i])) if d == 0 else d
                  for i, d in enumerate(target)]
    conversion.out(_reshape_to(conversion, x, target))


@register("Flatten")
def flatten(conversion, node, attrs):
    x = conversion.model_tensor(0)
    axis = int(attrs.get("axis", 1)) % max(x.rank, 1)
    # the output is 2-D (prod(shape[:axis]), prod(shape[axis:])): only axis 1 keeps the batch
    if axis == 0 or math.prod(int(d) for d in x.onnx_shape[1:axis]) != 1:
        raise UserError(f"node {conversion.node_label}: Flatten(axis={axis}) merges axes into the "
                        "batch; not supported")
    conversion.out(keras.layers.Flatten(name=conversion.name())(conversion.onnx_layout(x, for_reshape=True)))


def _axes_input(conversion, node, attrs):
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    if len(node.input) > 1 and node.input[1]:
        return [int(a) for a in conversion.const(1).reshape(-1)]
    return None


@register("Squeeze")
def squeeze(conversion, node, attrs):
    x = conversion.model_tensor(0)
    shape = list(x.onnx_shape)
    axes = _axes_input(conversion, node, attrs)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if i > 0 and d == 1]
    axes = {a % len(shape) for a in axes}
    if 0 in axes:
        raise UserError(f"node {conversion.node_label}: squeezing the batch axis is not supported")
    if any(shape[a] != 1 for a in axes):
        raise UserError(f"node {conversion.node_label}: squeezing an axis whose size is not 1")
    conversion.out(_reshape_to(conversion, x, [1] + [d for i, d in enumerate(shape) if i and i not in axes]))


@register("Unsqueeze")
def unsqueeze(conversion, node, attrs):
    x = conversion.model_tensor(0)
    shape = list(x.onnx_shape)
    axes = _axes_input(conversion, node, attrs)
    rank = len(shape) + len(axes)
    axes = sorted(a % rank for a in axes)
    if 0 in axes:
        raise UserError(f"node {conversion.node_label}: adding a new leading (batch) axis is not "
                        "supported")
    rest = iter(shape)
    new = [1 if i in axes else next(rest) for i in range(rank)]
    new[0] = 1
    conversion.out(_reshape_to(conversion, x, new))


def _permuted(conversion, x: ModelTensor, perm: list[int]) -> ModelTensor:
    """`x` transposed by an ONNX `perm` that keeps the batch first (a Permute, or nothing)."""
    # output ONNX axis j is input ONNX axis perm[j], which Keras holds at keras_axis(perm[j])
    source = [x.keras_axis(p) for p in perm]
    if source == list(range(x.rank)):
        return ModelTensor(x.tensor, False)
    return ModelTensor(keras.layers.Permute(tuple(source[1:]), name=conversion.name())(x.tensor), False)


def _settle(conversion, source: ModelTensor, perm: list[int], origin: str, index: int = 0) -> None:
    """Output `Transpose(source, perm)`: a real tensor once the batch is first again."""
    if perm[0] == 0:
        conversion.out(_permuted(conversion, source, perm), index=index)
    else:
        conversion.out(BatchMoved(source, tuple(perm), origin), index=index)


@register("Transpose")
def transpose(conversion, node, attrs):
    x = conversion.model_tensor(0)
    rank = x.rank
    perm = [int(p) % rank for p in attrs.get("perm", list(range(rank))[::-1])]
    if sorted(perm) != list(range(rank)):
        raise UserError(f"node {conversion.node_label}: Transpose perm {perm} is not a permutation")
    # a perm moving the batch stays pending (BatchMoved) until its consumers take it apart
    _settle(conversion, x, perm, conversion.node_label)


@register_batch_moved("Transpose")
def transpose_moved(conversion, node, attrs):
    x = conversion.get(node.input[0])
    rank = len(x.perm)
    perm = [int(p) % rank for p in attrs.get("perm", list(range(rank))[::-1])]
    if sorted(perm) != list(range(rank)):
        raise UserError(f"node {conversion.node_label}: Transpose perm {perm} is not a permutation")
    _settle(conversion, x.source, [x.perm[p] for p in perm], x.origin)


@register_batch_moved("Identity", "Dropout")
def identity_moved(conversion, node, attrs):
    conversion.out(conversion.get(node.input[0]))


def _batch_axis_refused(conversion, x: BatchMoved, what: str):
    return UserError(f"node {conversion.node_label}: {what} the batch axis (moved to axis "
                     f"{x.perm.index(0)} by {x.origin}) is not supported")


@register_batch_moved("Squeeze")
def squeeze_moved(conversion, node, attrs):
    x = conversion.get(node.input[0])
    shape = conversion.static_shape(x)
    axes = _axes_input(conversion, node, attrs)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1 and x.perm[i] != 0]
    axes = {int(a) % len(shape) for a in axes}
    if any(x.perm[a] == 0 for a in axes):
        raise _batch_axis_refused(conversion, x, "squeezing")
    if any(shape[a] != 1 for a in axes):
        raise UserError(f"node {conversion.node_label}: squeezing an axis whose size is not 1")
    gone = {x.perm[a] for a in axes}  # source axes that disappear
    source_shape = conversion.static_shape(x.source)
    kept = [i for i in range(len(source_shape)) if i not in gone]
    source = ModelTensor(_reshape_to(conversion, x.source, [source_shape[i] for i in kept]), False)
    perm = [kept.index(x.perm[j]) for j in range(len(shape)) if j not in axes]
    _settle(conversion, source, perm, x.origin)


@register_batch_moved("Gather")
def gather_moved(conversion, node, attrs):
    x = conversion.get(node.input[0])
    indices = np.asarray(conversion.const(1))
    axis = int(attrs.get("axis", 0)) % len(x.perm)
    source_axis = x.perm[axis]
    if source_axis == 0:
        raise _batch_axis_refused(conversion, x, "Gather on")
    source = _gather(conversion, x.source, source_axis, indices)
    if indices.ndim == 0:  # the axis is gone: renumber the source axes after it
        perm = [p - (p > source_axis) for j, p in enumerate(x.perm) if j != axis]
    else:
        perm = list(x.perm)
    _settle(conversion, source, perm, x.origin)


def _slice_args(conversion, attrs, rank: int):
    """(axes, starts, ends, steps) of the current Slice node, for either opset form."""
    if conversion.opset < 10:
        starts, ends = attrs["starts"], attrs["ends"]
        axes = attrs.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = [int(v) for v in conversion.const(1).reshape(-1)]
        ends = [int(v) for v in conversion.const(2).reshape(-1)]
        axes = conversion.const(3, required=False)
        axes = list(range(len(starts))) if axes is None else [int(a) for a in axes.reshape(-1)]
        steps = conversion.const(4, required=False)
        steps = [1] * len(starts) if steps is None else [int(s) for s in steps.reshape(-1)]
    return [int(a) % rank for a in axes], starts, ends, steps


@register_batch_moved("Slice")
def slice_moved(conversion, node, attrs):
    x = conversion.get(node.input[0])
    axes, starts, ends, steps = _slice_args(conversion, attrs, len(x.perm))
    source = x.source
    # _slice_layer refuses a real slice of the batch (source axis 0) and skips a whole one
    tensor = _slice_layer(conversion, source, [x.perm[a] for a in axes], starts, ends, steps)
    conversion.out(BatchMoved(ModelTensor(tensor, source.channels_last), x.perm, x.origin))


@register_batch_moved("Split")
def split_moved(conversion, node, attrs):
    x = conversion.get(node.input[0])
    axis = int(attrs.get("axis", 0)) % len(x.perm)
    source_axis = x.perm[axis]
    if source_axis == 0:
        raise _batch_axis_refused(conversion, x, "splitting")
    source = x.source
    for i, (start, part) in enumerate(_split_parts(conversion, node, attrs,
                                                   conversion.static_shape(x)[axis])):
        tensor = _slice_layer(conversion, source, [source_axis], [start], [start + part], [1],
                              suffix=str(i))
        conversion.out(BatchMoved(ModelTensor(tensor, source.channels_last), x.perm, x.origin), index=i)


@register("Concat")
def concat(conversion, node, attrs):
    values = [conversion.get(n) for n in node.input if n]
    if any(not isinstance(v, ModelTensor) for v in values):
        raise UserError(f"node {conversion.node_label}: Concat of computed tensors with constants is "
                        "not supported")
    axis = int(attrs["axis"]) % values[0].rank
    if axis == 0:
        raise UserError(f"node {conversion.node_label}: Concat along the batch axis is not supported")
    if len({v.rank for v in values}) != 1:
        raise UserError(f"node {conversion.node_label}: Concat of tensors of different rank")
    if len(values) == 1:
        conversion.out(values[0])
        return
    channels_last = values[0].rank >= 3 and any(v.channels_last for v in values)
    if channels_last:  # feature maps stay channels-last; stragglers are permuted to match
        tensors = [conversion.channels_last(v) for v in values]
        keras_axis = ModelTensor(tensors[0], True).keras_axis(axis)
    else:
        tensors, keras_axis = [conversion.onnx_layout(v) for v in values], axis
    conversion.out(keras.layers.Concatenate(axis=keras_axis, name=conversion.name())(tensors),
           channels_last=channels_last)


def _slice_layer(conversion, x: ModelTensor, onnx_axes, starts, ends, steps, suffix=""):
    shape = x.onnx_shape
    k_axes, k_starts, k_ends, k_steps = [], [], [], []
    for axis, start, end, step in zip(onnx_axes, starts, ends, steps, strict=True):
        axis = int(axis) % x.rank
        if step == 0:
            raise UserError(f"node {conversion.node_label}: Slice step 0")
        if axis == 0:
            if (start, step) == (0, 1) and end >= 2**30:
                continue  # the whole batch: nothing to do
            raise UserError(f"node {conversion.node_label}: slicing the batch axis is not supported")
        size = int(shape[axis])
        start = int(max(min(start, 2**62), -2**62))
        end = int(max(min(end, 2**62), -2**62))
        picked = range(size)[slice(start, end, int(step))]
        if len(picked) == 0:
            raise UserError(f"node {conversion.node_label}: Slice selects nothing")
        if picked.start == 0 and picked.step == 1 and len(picked) == size:
            continue
        k_axes.append(x.keras_axis(axis))
        k_starts.append(picked.start)
        k_ends.append(picked.stop if picked.stop >= 0 else None)
        k_steps.append(picked.step)
    if not k_axes:
        return x.tensor
    return L.Slice(k_axes, k_starts, k_ends, k_steps, name=conversion.name(suffix))(x.tensor)


@register("Slice")
def slice_(conversion, node, attrs):
    x = conversion.model_tensor(0)
    axes, starts, ends, steps = _slice_args(conversion, attrs, x.rank)
    conversion.out(_slice_layer(conversion, x, axes, starts, ends, steps), channels_last=x.channels_last)


def _split_parts(conversion, node, attrs, size: int) -> list[tuple[int, int]]:
    """(start, length) of each output of the current Split node along an axis of `size`."""
    parts = attrs.get("split")
    if parts is None and len(node.input) > 1 and node.input[1]:
        parts = [int(p) for p in conversion.const(1).reshape(-1)]
    if parts is None:
        n = int(attrs.get("num_outputs", len(node.output)))
        chunk = math.ceil(size / n)
        parts = [min(chunk, size - i * chunk) for i in range(n)]
    parts = [int(p) for p in parts]
    if sum(parts) != size:
        raise UserError(f"node {conversion.node_label}: split sizes {parts} do not add up to {size}")
    starts = [sum(parts[:i]) for i in range(len(parts))]
    return list(zip(starts, parts, strict=True))


@register("Split")
def split(conversion, node, attrs):
    x = conversion.model_tensor(0)
    axis = int(attrs.get("axis", 0)) % x.rank
    for i, (start, part) in enumerate(_split_parts(conversion, node, attrs, int(x.onnx_shape[axis]))):
        y = _slice_layer(conversion, x, [axis], [start], [start + part], [1], suffix=str(i))
        conversion.out(y, channels_last=x.channels_last, index=i)


def _gather(conversion, x: ModelTensor, axis: int, indices: np.ndarray) -> ModelTensor:
    """`x` gathered at constant `indices` along ONNX `axis` (not the batch)."""
    if indices.ndim > 1:
        raise UserError(f"node {conversion.node_label}: Gather with multi-dimensional indices is not "
                        "supported")
    size = int(x.onnx_shape[axis])
    flat = [int(i) % size for i in indices.reshape(-1)]
    if indices.ndim == 0:
        return ModelTensor(L.Gather(axis, flat, scalar=True, name=conversion.name())(conversion.onnx_layout(x)), False)
    tensor = L.Gather(x.keras_axis(axis), flat, name=conversion.name())(x.tensor)
    return ModelTensor(tensor, x.channels_last and len(tensor.shape) >= 3)


@register("Gather")
def gather(conversion, node, attrs):
    x = conversion.model_tensor(0)
    indices = np.asarray(conversion.const(1))
    axis = int(attrs.get("axis", 0)) % x.rank
    if axis == 0:
        raise UserError(f"node {conversion.node_label}: Gather on the batch axis is not supported")
    conversion.out(_gather(conversion, x, axis, indices))


@register("Pad")
def pad(conversion, node, attrs):
    x = conversion.model_tensor(0)
    rank = x.rank
    mode = attrs.get("mode", "constant")
    if conversion.opset < 11:
        pads, value = list(attrs["pads"]), float(attrs.get("value", 0.0))
        axes = list(range(rank))
    else:
        pads = [int(p) for p in conversion.const(1).reshape(-1)]
        value = conversion.const(2, required=False)
        value = 0.0 if value is None or np.asarray(value).size == 0 else float(
            np.asarray(value).reshape(-1)[0])
        axes = conversion.const(3, required=False)
        axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes.reshape(-1)]
    n = len(axes)
    per_axis = {a: (int(pads[i]), int(pads[i + n])) for i, a in enumerate(axes)}
    if any(p < 0 for pair in per_axis.values() for p in pair):
        raise UserError(f"node {conversion.node_label}: negative pads (cropping) are not supported")
    if per_axis.get(0, (0, 0)) != (0, 0):
        raise UserError(f"node {conversion.node_label}: padding the batch axis is not supported")
    if mode not in ("constant", "reflect"):
        raise UserError(f"node {conversion.node_label}: Pad mode {mode!r} is not supported")
    full = [per_axis.get(a, (0, 0)) for a in range(rank)]
    if (x.channels_last and rank in (3, 4) and mode == "constant" and value == 0.0
            and full[1] == (0, 0)):
        layer = keras.layers.ZeroPadding2D(tuple(full[2:]), name=conversion.name()) if rank == 4 \
            else keras.layers.ZeroPadding1D(full[2], name=conversion.name())
        conversion.out(layer(x.tensor), channels_last=True)
        return
    keras_pads = [list(full[o]) for o in x.onnx_order()]
    conversion.out(L.Pad(keras_pads, mode=mode, constant_value=value, name=conversion.name())(x.tensor),
           channels_last=x.channels_last)


def _nearest_source(size: int, out: int, scale: float, ctm: str, nearest_mode: str):
    """ONNX Resize nearest: input index read by each output index along one axis."""
    x = np.arange(out, dtype=np.float64)
    if ctm == "asymmetric":
        src = x / scale
    elif ctm in ("half_pixel", "pytorch_half_pixel"):
        src = (x + 0.5) / scale - 0.5
        if ctm == "pytorch_half_pixel" and out == 1:
            src = np.zeros_like(x)
    elif ctm == "align_corners":
        src = x * (size - 1) / (out - 1) if out > 1 else np.zeros_like(x)
    elif ctm == "half_pixel_symmetric":
        adj = out / (scale * size)
        center = size / 2 * (1 - adj)
        src = center + ((x + 0.5) / scale - 0.5)
    else:
        return None
    if nearest_mode == "floor":
        idx = np.floor(src)
    elif nearest_mode == "ceil":
        idx = np.ceil(src)
    elif nearest_mode == "round_prefer_ceil":
        idx = np.floor(src + 0.5)
    else:  # round_prefer_floor
        idx = np.ceil(src - 0.5)
    return np.clip(idx, 0, size - 1).astype(int)


@register("Resize", "Upsample")
def resize(conversion, node, attrs):
    x = conversion.model_tensor(0)
    if x.rank != 4:
        raise UserError(f"node {conversion.node_label}: only 4-D Resize is supported")
    spatial = [int(d) for d in x.onnx_shape[2:]]
    scales = sizes = None
    if node.op_type == "Upsample" and "scales" in attrs:
        scales = attrs["scales"]
    elif node.op_type == "Upsample" or conversion.opset < 11:
        scales = conversion.const(1)
    else:
        scales = conversion.const(2, required=False)
        sizes = conversion.const(3, required=False)
        if scales is not None and np.asarray(scales).size == 0:
            scales = None
    axes = attrs.get("axes")
    if axes is not None:  # opset 18: scales/sizes only for these axes
        axes = [int(a) % 4 for a in axes]
        full_sizes = [1, int(x.onnx_shape[1]), *spatial]
        if sizes is not None:
            for a, v in zip(axes, np.asarray(sizes).reshape(-1), strict=True):
                full_sizes[a] = int(v)
            sizes = full_sizes
        else:
            full_scales = [1.0] * 4
            for a, v in zip(axes, np.asarray(scales).reshape(-1), strict=True):
                full_scales[a] = float(v)
            scales = full_scales
    if sizes is not None:
        sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
        if len(sizes) != 4 or sizes[1] != int(x.onnx_shape[1]):
            raise UserError(f"node {conversion.node_label}: Resize must keep batch and channels")
        out = sizes[2:]
        factors = [o / i for o, i in zip(out, spatial, strict=True)]
    else:
        scales = [float(s) for s in np.asarray(scales).reshape(-1)]
        if len(scales) != 4 or scales[:2] != [1.0, 1.0]:
            raise UserError(f"node {conversion.node_label}: Resize must keep batch and channels")
        factors = scales[2:]
        out = [int(math.floor(i * f)) for i, f in zip(spatial, factors, strict=True)]
    mode = attrs.get("mode", "nearest")
    ctm = attrs.get("coordinate_transformation_mode",
                    "asymmetric" if node.op_type == "Upsample" or conversion.opset < 11 else
                    "half_pixel")
    integer = [o == i * round(f) and round(f) >= 1 for o, i, f in
               zip(out, spatial, factors, strict=True)]
    tensor = conversion.channels_last(x)
    if mode == "nearest":
        nearest_mode = attrs.get("nearest_mode", "round_prefer_floor")
        if conversion.opset < 11:
            nearest_mode = "floor"
        exact = all(integer) and all(
            np.array_equal(_nearest_source(i, o, f, ctm, nearest_mode), np.arange(o) // round(f))
            for i, o, f in zip(spatial, out, factors, strict=True))
        if not exact:
            raise UserError(f"node {conversion.node_label}: nearest Resize is supported only with "
                            "integer factors that repeat pixels")
        layer = keras.layers.UpSampling2D(tuple(round(f) for f in factors),
                                          interpolation="nearest", name=conversion.name())
    elif mode in ("linear", "bilinear"):
        if ctm == "align_corners":
            layer = L.Resize(out, "bilinear", align_corners=True, name=conversion.name())
        elif ctm in ("half_pixel", "pytorch_half_pixel") and all(o > 1 for o in out):
            if all(integer):
                layer = keras.layers.UpSampling2D(tuple(round(f) for f in factors),
                                                  interpolation="bilinear", name=conversion.name())
            else:
                layer = L.Resize(out, "bilinear", name=conversion.name())
        else:
            raise UserError(f"node {conversion.node_label}: linear Resize with "
                            f"coordinate_transformation_mode={ctm!r} is not supported")
    else:
        raise UserError(f"node {conversion.node_label}: Resize mode {mode!r} is not supported")
    conversion.out(layer(tensor), channels_last=True)
