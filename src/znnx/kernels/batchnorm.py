"""BatchNorm in training mode fused with the activation that follows it (kernels/batchnorm.c), on
channels-last tensors: forward in two passes over x (per-channel sums; normalize, scale, shift and
activate), backward in two passes over (g, y, x) (per-channel sums of g' and g' x; the input
gradient), g' = g * act'(y) recomputed from the saved output instead of stored. PyTorch's eager
BatchNorm and activation take seven passes, and their backward on channels-last 3D tensors ran at a
fraction of memory bandwidth (45 ms against a few for 28 channels at 12x128x128, 2 threads).

Statistics as PyTorch's: biased variance for normalizing, the unbiased one into the running
variance, running = (1 - momentum) * running + momentum * batch.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from znnx.kernels import native

ACTIVATIONS = {None: 0, "relu": 1, "leaky_relu": 2, "elu": 3, "sigmoid": 4, "tanh": 5}
Tensor = torch.Tensor


@functools.cache
def _library() -> ctypes.CDLL:
    from importlib.resources import files

    lib = native.load("batchnorm", native.with_vectors(files("znnx.kernels").joinpath("batchnorm.c").read_text()))
    i, p, c, f = ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.bn_sums.argtypes = [p, i, i, p, p]
    lib.bn_apply.argtypes = [p, i, i, p, p, p, c, f]
    lib.bn_grad_sums.argtypes = [p, p, p, i, i, c, f, p, p]
    lib.bn_grad_apply.argtypes = [p, p, p, i, i, c, f, p, p, p, p]
    for fn in (lib.bn_sums, lib.bn_apply, lib.bn_grad_sums, lib.bn_grad_apply):
        fn.restype = None
    return lib


def _rows(t: Tensor) -> tuple[Tensor, int, int]:
    t = t.contiguous(memory_format=torch.channels_last_3d)
    return t, t.numel() // t.shape[1], t.shape[1]


class _BatchNormActivation(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: Tensor, gamma: Tensor, beta: Tensor, running_mean: Tensor, running_var: Tensor,
                momentum: float, eps: float, activation: str | None, alpha: float) -> Tensor:
        lib = _library()
        x, rows, channels = _rows(x.float())
        total, squares = torch.empty(channels, dtype=torch.float64), torch.empty(channels, dtype=torch.float64)
        lib.bn_sums(x.data_ptr(), rows, channels, total.data_ptr(), squares.data_ptr())
        mean64 = total / rows
        var64 = (squares / rows - mean64 * mean64).clamp_min(0.0)
        mean, var = mean64.float(), var64.float()
        invstd = torch.rsqrt(var + eps)
        scale = (gamma.detach() * invstd).contiguous()
        shift = (beta.detach() - mean * scale).contiguous()
        y = torch.empty_like(x, memory_format=torch.channels_last_3d)
        op = ACTIVATIONS[activation]
        lib.bn_apply(x.data_ptr(), rows, channels, scale.data_ptr(), shift.data_ptr(), y.data_ptr(), op, alpha)
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            running_var.mul_(1 - momentum).add_(var * (rows / max(rows - 1, 1)), alpha=momentum)
        ctx.save_for_backward(x, y, gamma, mean, invstd)  # type: ignore[attr-defined]
        ctx.op, ctx.alpha = op, alpha  # type: ignore[attr-defined]
        return y

    @staticmethod
    def backward(ctx: object, g: Tensor) -> tuple[Tensor | None, ...]:
        lib = _library()
        x, y, gamma, mean, invstd = ctx.saved_tensors  # type: ignore[attr-defined]
        op, alpha = ctx.op, ctx.alpha  # type: ignore[attr-defined]
        g, rows, channels = _rows(g.float())
        sum_g, sum_gx = torch.empty(channels, dtype=torch.float64), torch.empty(channels, dtype=torch.float64)
        lib.bn_grad_sums(g.data_ptr(), y.data_ptr(), x.data_ptr(), rows, channels, op, alpha, sum_g.data_ptr(),
                         sum_gx.data_ptr())
        sum_g32 = sum_g.float()
        dgamma = (invstd.double() * (sum_gx - mean.double() * sum_g)).float()
        a = (gamma.detach() * invstd).contiguous()
        b = (-a * invstd * dgamma / rows).contiguous()
        c = (-a * sum_g32 / rows - mean * b).contiguous()
        dx = torch.empty_like(x, memory_format=torch.channels_last_3d)
        lib.bn_grad_apply(g.data_ptr(), y.data_ptr(), x.data_ptr(), rows, channels, op, alpha, a.data_ptr(),
                          b.data_ptr(), c.data_ptr(), dx.data_ptr())
        return dx, dgamma, sum_g32, None, None, None, None, None, None


def batchnorm_activation(x: Tensor, gamma: Tensor, beta: Tensor, running_mean: Tensor, running_var: Tensor,
                         momentum: float, eps: float, activation: str | None = None, alpha: float = 0.0) -> Tensor:
    """act(BatchNorm(x)) with batch statistics (training mode); updates the running statistics."""
    result: Tensor = _BatchNormActivation.apply(x, gamma, beta, running_mean, running_var, momentum, eps,
                                                activation, alpha)
    return result
