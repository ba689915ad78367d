"""Hypothesis strategies for random single-layer settings: odd sizes, anisotropic kernels, strides."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st


@dataclass(frozen=True)
class ConvCase:
    batch: int
    c_in: int
    c_out: int
    groups: int
    spatial: tuple[int, int, int]
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int]
    dilation: tuple[int, int, int]
    pads: tuple[int, int, int, int, int, int]
    output_padding: tuple[int, int, int]


triples = lambda lo, hi: st.tuples(*(st.integers(lo, hi),) * 3)


@st.composite
def conv_cases(draw: st.DrawFn, symmetric: bool = False, transposed: bool = False) -> ConvCase:
    groups = draw(st.sampled_from([1, 1, 2]))
    kernel = draw(triples(1, 3))
    stride = draw(triples(1, 2))
    dilation = draw(triples(1, 2))
    begin = draw(st.tuples(*(st.integers(0, (k - 1) * d) for k, d in zip(kernel, dilation))))
    end = begin if symmetric else draw(st.tuples(*(st.integers(0, (k - 1) * d) for k, d in zip(kernel, dilation))))
    reach = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    spatial = draw(st.tuples(*(st.integers(max(r, 1), r + 6) for r in reach)))
    output_padding = (0, 0, 0)
    if transposed:
        output_padding = draw(st.tuples(*(st.integers(0, max(s, d) - 1) for s, d in zip(stride, dilation))))
    return ConvCase(draw(st.integers(1, 2)), groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3)),
                    groups, spatial, kernel, stride, dilation, (*begin, *end), output_padding)  # type: ignore[arg-type]
