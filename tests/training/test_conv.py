"""Training convolutions: every algorithm's forward, input, weight and bias gradients against
PyTorch autograd, for each fused activation, residual add, stride, dilation, groups and odd shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.nets import rel_error
from znnx.plan.algorithm import DIRECT, IMPLICIT, fft, winograd
from znnx.training.conv import ConvAlgorithms, ConvSpec, activation_gradient, conv, data_graph, flipped
from znnx.training.module import training_graph

ACTIVATIONS = {None: lambda y: y, "relu": F.relu, "elu": F.elu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
               "leaky_relu": lambda y: F.leaky_relu(y, 1.0)}
FAST = [DIRECT, IMPLICIT, winograd(2), winograd(4), fft(16)]


def _grads(fn, *tensors: torch.Tensor, seed: int = 3) -> list[torch.Tensor]:
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    y = fn(*leaves)
    g = torch.rand(y.shape, generator=torch.Generator().manual_seed(seed))
    (y * g).sum().backward()
    return [y.detach(), *(leaf.grad for leaf in leaves)]


@pytest.mark.parametrize("algorithm", FAST, ids=str)
@pytest.mark.parametrize("act", list(ACTIVATIONS), ids=str)
def test_conv_gradients_match_autograd(algorithm, act) -> None:
    gen = torch.Generator().manual_seed(0)
    x, w, b, r = (torch.randn(2, 5, 9, 11, 7, generator=gen), torch.randn(6, 5, 3, 1, 3, generator=gen),
                  torch.randn(6, generator=gen), torch.randn(2, 6, 9, 11, 7, generator=gen))
    steps = ("add", act) if act else ("add",)
    spec = ConvSpec((1, 1, 1), (1, 0, 1), (1, 1, 1), 1, steps, 1.0)
    weight = algorithm if algorithm.kind in ("winograd", "fft") else DIRECT
    ours = _grads(lambda x, w, b, r: conv(x.contiguous(memory_format=torch.channels_last_3d), w, b, r, spec,
                                          ConvAlgorithms(algorithm, algorithm, weight)), x, w, b, r)
    theirs = _grads(lambda x, w, b, r: ACTIVATIONS[act](F.conv3d(x, w, b, padding=(1, 0, 1)) + r), x, w, b, r)
    bound = 1e-4 if algorithm.tile == 4 else 1e-5
    for name, a, e in zip(("output", "input", "weight", "bias", "residual"), ours, theirs):
        assert rel_error(a, e) < bound, (name, rel_error(a, e))


@pytest.mark.parametrize(("stride", "dilation", "groups", "pads"), [
    ((2, 1, 2), (1, 1, 1), 1, (1, 1, 0)), ((1, 1, 1), (2, 1, 1), 1, (2, 1, 1)), ((1, 1, 1), (1, 1, 1), 2, (0, 1, 1)),
    ((1, 1, 1), (1, 1, 1), 1, (3, 0, 0)),
])
def test_other_convs_fall_back_to_onednn_backward(stride, dilation, groups, pads) -> None:
    gen = torch.Generator().manual_seed(1)
    x, w, b = torch.randn(1, 4, 10, 9, 8, generator=gen), torch.randn(6, 4 // groups, 3, 3, 1, generator=gen), \
        torch.randn(6, generator=gen)
    spec = ConvSpec(stride, pads, dilation, groups, ("relu",), 0.0)
    assert not spec.flippable((3, 3, 1))
    ours = _grads(lambda x, w, b: conv(x, w, b, None, spec, ConvAlgorithms()), x, w, b)
    theirs = _grads(lambda x, w, b: F.relu(F.conv3d(x, w, b, stride, pads, dilation, groups)), x, w, b)
    for a, e in zip(ours, theirs):
        assert rel_error(a, e) < 1e-5


def test_activation_gradient_from_output_alone() -> None:
    pre = torch.linspace(-3, 3, 41, dtype=torch.float64)
    for act, fn in [("relu", F.relu), ("elu", lambda t: F.elu(t, 0.7)), ("leaky_relu", lambda t: F.leaky_relu(t, 0.1)),
                    ("sigmoid", torch.sigmoid), ("tanh", torch.tanh)]:
        alpha = {"elu": 0.7, "leaky_relu": 0.1}.get(act, 0.0)
        leaf = pre.clone().requires_grad_()
        fn(leaf).sum().backward()
        assert torch.allclose(activation_gradient(torch.ones_like(pre), fn(pre), act, alpha), leaf.grad)


def test_data_graph_holds_the_flipped_convs() -> None:
    import znnx
    from tests.nets import ResidualNet

    graph = training_graph(znnx.load(ResidualNet(4).eval(), input_shape=(1, 3, 16, 16)))
    backward = data_graph(graph)
    convs = {n.name: n for n in graph.nodes if n.op == "conv"}
    assert {n.name for n in backward.nodes} == set(convs)
    for node in backward.nodes:
        source = convs[node.name]
        assert backward.types[node.output].channels == graph.types[source.inputs[0]].channels
        assert backward.types[node.output].spatial == graph.types[source.inputs[0]].spatial
        assert torch.equal(torch.from_numpy(node.params["weight"].copy()),
                           flipped(torch.from_numpy(source.params["weight"].copy())))


def test_weight_gradients_are_timed_among_winograd_or_fft() -> None:
    """A 3x3x3 conv's weight gradient is timed against Winograd F(2,3) and F(4,3), a (1,4,4) conv's
    (no Winograd) against FFT; every choice within its tolerance of oneDNN's."""
    from tests.passes.graphs import builder
    from tests.passes.graphs import conv as add_conv
    from znnx.training.conv import choose

    b, x = builder(channels=8, spatial=(6, 12, 12))
    h = add_conv(b, x, 8)
    graph = b.finish([add_conv(b, h, 8, kernel=(1, 4, 4), pads=(0, 2, 2, 0, 2, 2))])
    choice = choose(graph, 1)
    timed = {c.node: c for c in choice.weight}
    first, second = (n.name for n in graph.nodes)
    assert {"direct", "winograd2", "winograd4"} <= set(dict(timed[first].errors))
    assert set(dict(timed[second].errors)) == {"direct", "fft16"}
    for c in choice.weight:
        assert all(dict(c.errors)[name] <= 1e-4 for name in dict(c.seconds))
