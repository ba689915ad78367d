"""Trainable nets from imported graphs: the forward and every gradient against PyTorch autograd on
the test zoo (BatchNorm in training mode), each conv algorithm forced in turn, and against a
float64 reference."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import znnx
from tests.nets import Net2d, ValidUNet, cases, randomize, rel_error
from znnx.kernels import fft as fft_kernel
from znnx.kernels import winograd as winograd_kernel
from znnx.plan.algorithm import DIRECT, Algorithm, fft, winograd
from znnx.training.conv import ConvAlgorithms, ConvSpec
from znnx.training.module import TrainableNet, final_activation, initialized, training_graph, without_final_activation

ALGORITHMS = [DIRECT, winograd(2), winograd(4), fft(16)]
CONSTANTS = {"scale"}
"""Module parameters the IR holds as elementwise constants (KitchenSink's `x * scale / 2` folds into
one `mul` constant): fixed in training, as every constant of an arithmetic op."""


def _forced(graph: znnx.Graph, algorithm: Algorithm, passes: str = "both") -> dict[str, ConvAlgorithms]:
    """`algorithm` for every conv it can run, in the forward pass, the input gradient or both;
    direct elsewhere."""
    chosen = {}
    for node in graph.nodes:
        if node.op != "conv":
            continue
        a = node.attrs
        shape = (a["kernel"], a["stride"], a["dilation"], a["groups"])
        fits = {"direct": True, "winograd": winograd_kernel.applicable(*shape), "fft": fft_kernel.applicable(*shape)}
        use = algorithm if fits[algorithm.kind] and a["pads"][:3] == a["pads"][3:] else DIRECT
        data = use if ConvSpec.of(node).flippable(a["kernel"]) else DIRECT
        weight = use if use.kind == "winograd" and a["pads"][:3] == a["pads"][3:] else DIRECT
        chosen[node.name] = ConvAlgorithms(DIRECT if passes == "data" else use, DIRECT if passes == "forward" else data,
                                           DIRECT if passes == "forward" else weight)
    return chosen


def _run(net: torch.nn.Module, x: torch.Tensor, lift: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.clone().requires_grad_()
    y = net(leaf.reshape(lift)) if lift else net(leaf)
    return y, leaf


def _compare(case, algorithm: Algorithm, training: bool, passes: str = "both") -> list[tuple[str, float]]:
    """Relative errors of the output, the input gradient and each parameter's gradient against
    PyTorch's. A parameter gradient closer to the float64 one than PyTorch's counts as exact (the
    fused BatchNorm sums in double, PyTorch in float: a shift's gradient, a sum with cancellation,
    then differs from PyTorch's by PyTorch's own rounding). A parameter whose float64 gradient is
    zero (a bias right before a BatchNorm in training mode) holds only rounding on both sides: its
    error is taken relative to the net's largest gradient."""
    torch.manual_seed(0)
    module = case.build()
    graph = training_graph(znnx.load(module, input_shape=case.input_shape))
    ours = TrainableNet(graph, _forced(graph, algorithm, passes)).train(training)
    theirs = copy.deepcopy(module).train(training)
    x = torch.rand((2, *case.input_shape), generator=torch.Generator().manual_seed(1))
    lift = (2, case.input_shape[0], *(1,) * (4 - len(case.input_shape)), *case.input_shape[1:])
    y_theirs, x_theirs = _run(theirs, x, ())
    y_ours, x_ours = _run(ours, x, lift)
    g = torch.rand(y_theirs.shape, generator=torch.Generator().manual_seed(2))
    (y_theirs * g).sum().backward()
    (y_ours.reshape(y_theirs.shape) * g).sum().backward()
    errors = [("output", rel_error(y_ours.detach().reshape(y_theirs.shape), y_theirs.detach())),
              ("input", rel_error(x_ours.grad, x_theirs.grad))]
    exact = copy.deepcopy(module).double().train(training)
    (exact(x.double()) * g.double()).sum().backward()
    initial = copy.deepcopy(module)
    scale = max(float(p.grad.abs().max()) for p in theirs.parameters() if p.grad is not None)
    for (name, p), p0, p64 in zip(theirs.named_parameters(), initial.parameters(), exact.parameters()):
        match = [q for q in ours.parameters() if q.numel() == p0.numel()
                 and torch.equal(q.detach().reshape(-1), p0.detach().reshape(-1))]
        if name in CONSTANTS:
            assert not match
            continue
        assert match, f"no parameter of the trainable net holds {name}"
        ours_grad, theirs_grad, exact_grad = (t.reshape(-1).double() for t in (match[0].grad, p.grad, p64.grad))
        zero = float(exact_grad.abs().max()) < 1e-9 * scale
        size = scale if zero else float(theirs_grad.abs().max())
        error = float((ours_grad - theirs_grad).abs().max()) / size
        closer = float((ours_grad - exact_grad).abs().max()) <= float((theirs_grad - exact_grad).abs().max())
        errors.append((name, 0.0 if closer else error))
    return errors


@pytest.mark.parametrize("case", cases(), ids=str)
def test_direct_training_gradients_match_autograd(case) -> None:
    errors = _compare(case, DIRECT, training=True)
    assert max(e for _, e in errors) < 1e-4, errors


@pytest.mark.parametrize("algorithm", ALGORITHMS[1:], ids=str)
@pytest.mark.parametrize("case", cases()[:6], ids=str)
def test_backward_algorithms_match_autograd(case, algorithm) -> None:
    """Each algorithm forced for the input gradients (and, for Winograd, the weight gradients).
    BatchNorm in eval mode: in training mode it divides by the batch's spread, which amplifies any
    rounding difference of the convs before it (see the float64 test for that mode)."""
    errors = _compare(case, algorithm, training=False, passes="data")
    assert max(e for _, e in errors) < 1e-4, errors


@pytest.mark.parametrize("algorithm", ALGORITHMS[1:], ids=str)
@pytest.mark.parametrize("case", cases()[:6], ids=str)
def test_forward_algorithms_match_autograd(case, algorithm) -> None:
    """Each algorithm forced in the forward pass: outputs within the algorithm's tolerance. The
    gradients are compared only on nets without max pooling: a pooled maximum whose window holds
    a near tie (1e-5 apart, F(4,3)'s error) may pick the other voxel, which moves that gradient
    to its neighbour."""
    errors = dict(_compare(case, algorithm, training=False, passes="forward"))
    assert errors.pop("output") < 2 * algorithm.tolerance
    pools = any(n.op == "max_pool" for n in znnx.load(case.build(), input_shape=case.input_shape).nodes)
    if not pools:
        assert max(errors.values()) < 1e-4, errors


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=str)
def test_training_mode_against_float64(algorithm) -> None:
    """znnx's fp32 gradients are as close to float64 autograd as PyTorch's own fp32 ones (within
    10x, or 1e-4)."""
    module = randomize(ValidUNet(4), 3).train()
    shape = (1, 46, 44, 46)
    graph = training_graph(znnx.load(module.eval(), input_shape=shape))
    x = torch.rand((2, *shape), generator=torch.Generator().manual_seed(1))
    g = None
    grads = {}
    for label, net, dtype in [("float64", copy.deepcopy(module).double(), torch.float64),
                              ("torch", copy.deepcopy(module), torch.float32),
                              ("znnx", TrainableNet(graph, _forced(graph, algorithm)), torch.float32)]:
        net.train()
        leaf = x.to(dtype).clone().requires_grad_()
        y = net(leaf)
        g = torch.rand(y.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64) if g is None else g
        (y * g.to(dtype)).sum().backward()
        grads[label] = leaf.grad.double()
    torch_error = rel_error(grads["torch"], grads["float64"])
    assert rel_error(grads["znnx"], grads["float64"]) < max(1e-4, 10 * torch_error)


def test_final_sigmoid_is_split_off_for_the_loss() -> None:
    graph = training_graph(znnx.load(randomize(Net2d(3), 0), input_shape=(3, 20, 18)))
    assert final_activation(graph) in ("sigmoid", "softmax", None)
    module = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv3d(4, 1, 1),
                                 torch.nn.Sigmoid()).eval()
    graph = training_graph(znnx.load(module, input_shape=(1, 8, 8, 8)))
    assert final_activation(graph) == "sigmoid"
    logits = without_final_activation(graph)
    assert final_activation(logits) is None
    x = torch.rand(1, 1, 8, 8, 8)
    assert torch.allclose(torch.sigmoid(TrainableNet(logits)(x)), TrainableNet(graph)(x), atol=1e-6)


def test_init_rules_draw_fresh_weights() -> None:
    graph = training_graph(znnx.load(randomize(ValidUNet(3), 0), input_shape=(1, 44, 44, 46)))
    fresh = initialized(graph, "msra", seed=5)
    again = initialized(graph, "msra", seed=5)
    for node, new, same in zip(graph.nodes, fresh.nodes, again.nodes):
        for key, value in new.params.items():
            assert np.array_equal(value, same.params[key])
            if node.op == "conv" and key == "weight":
                fan_in = value[0].size
                assert abs(value.std() - np.sqrt(2 / fan_in)) < 0.5 * np.sqrt(2 / fan_in)
            if key == "bias":
                assert not value.any()
    with pytest.raises(znnx.ModelError, match="init rule 'he'"):
        initialized(graph, "he")


@pytest.mark.parametrize("case", cases()[:4], ids=str)
def test_native_mode_is_pytorch_autograd(case) -> None:
    """native=True (GPUs, mixed precision): PyTorch's own ops, the same gradients as the module."""
    torch.manual_seed(0)
    module = case.build()
    graph = training_graph(znnx.load(module, input_shape=case.input_shape))
    ours, theirs = TrainableNet(graph, native=True).train(), copy.deepcopy(module).train()
    x = torch.rand((2, *case.input_shape), generator=torch.Generator().manual_seed(1))
    y_theirs, x_theirs = _run(theirs, x, ())
    y_ours, x_ours = _run(ours, x, ())
    g = torch.rand(y_theirs.shape, generator=torch.Generator().manual_seed(2))
    (y_theirs * g).sum().backward()
    (y_ours * g).sum().backward()
    assert rel_error(y_ours.detach(), y_theirs.detach()) < 1e-5 and rel_error(x_ours.grad, x_theirs.grad) < 1e-4
