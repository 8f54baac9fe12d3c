"""Convolution as a matrix product: im2col lowering and the matching lifting back.

Layout follows Keras: inputs NHWC, kernels (kh, kw, in_channels, out_channels). A patch row of the
lowered matrix lists its values in (kh, kw, in_channel) order, which is exactly
``kernel.reshape(kh * kw * cin, cout)``, so ``lift(im2col(x) @ kernel_matrix(w))`` is the
convolution (cross-correlation, as in Keras) for any kernel, stride, dilation, padding, channel
count and batch.
"""

from __future__ import annotations

import numpy as np

from classes_tool.errors import UserError


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, int | np.integer):
        return int(v), int(v)
    v = tuple(int(x) for x in v)
    if len(v) != 2 or min(v) < 1:
        raise UserError(f"{name} must be a positive int or a pair of them, got {v!r}")
    return v


def output_size(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """Output length along one axis, as Keras/TensorFlow compute it."""
    span = (kernel - 1) * dilation + 1
    if padding == "same":
        return -(-size // stride)
    if padding == "valid":
        return max(0, (size - span) // stride + 1)
    raise UserError(f"padding must be 'valid' or 'same', got {padding!r}")


def _pads(size: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    if padding == "valid":
        return 0, 0
    out = output_size(size, kernel, stride, dilation, padding)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2  # TensorFlow puts the odd pixel after


def im2col(x: np.ndarray, kernel_size, strides=1, padding: str = "valid",
           dilation_rate=1) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Lower NHWC `x` to patches (batch * out_h * out_w, kh * kw * channels) and (batch, oh, ow)."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise UserError(f"im2col needs an NHWC batch (4 dimensions), got shape {x.shape}")
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(strides, "strides")
    dh, dw = _pair(dilation_rate, "dilation_rate")
    n, h, w, c = x.shape
    oh = output_size(h, kh, sh, dh, padding)
    ow = output_size(w, kw, sw, dw, padding)
    (pt, pb), (pl, pr) = _pads(h, kh, sh, dh, padding), _pads(w, kw, sw, dw, padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=x.dtype)
    for a in range(kh):
        for b in range(kw):
            r0, c0 = a * dh, b * dw
            cols[:, :, :, a, b, :] = xp[:, r0:r0 + (oh - 1) * sh + 1:sh, c0:c0 + (ow - 1) * sw + 1:sw, :]
    return cols.reshape(n * oh * ow, kh * kw * c), (n, oh, ow)


def kernel_matrix(kernel: np.ndarray) -> np.ndarray:
    """Keras kernel (kh, kw, cin, cout) as the (kh * kw * cin, cout) right-hand matrix."""
    kernel = np.asarray(kernel)
    return kernel.reshape(-1, kernel.shape[-1])


def lift(product: np.ndarray, out_shape: tuple[int, int, int]) -> np.ndarray:
    """Product rows (batch * oh * ow, cout) back to NHWC (batch, oh, ow, cout)."""
    n, oh, ow = out_shape
    return product.reshape(n, oh, ow, product.shape[-1])


def conv2d(x: np.ndarray, kernel: np.ndarray, matmul, strides=1, padding: str = "valid",
           dilation_rate=1) -> np.ndarray:
    """Convolution computed by `matmul(A, B)` (for example ``SystolicArray.matmul``)."""
    cols, shape = im2col(x, kernel.shape[:2], strides, padding, dilation_rate)
    return lift(matmul(cols, kernel_matrix(kernel)), shape)
