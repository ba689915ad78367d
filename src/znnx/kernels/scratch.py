"""Scratch buffers shared by every layer a thread runs: one slab's transformed tiles and products
(Winograd's V and M, the FFT's spectra and products), the implicit conv's padded input. Each grows to
the largest request and is kept, so no slab-sized tensor is allocated, page-faulted in and zeroed by
the kernel on every call (a fresh 230 MB spectra buffer per call of an 80-channel FFT 24 layer was a
fifth of its time)."""

from __future__ import annotations

import threading

import torch

_buffers = threading.local()


def buffer(name: str, numel: int) -> torch.Tensor:
    """The first `numel` floats of this thread's scratch buffer `name`; a normal tensor, so calls
    inside and outside inference mode can both write it."""
    kept = getattr(_buffers, name, None)
    if kept is None or kept.numel() < numel:
        with torch.inference_mode(False):
            kept = torch.empty(numel)
        setattr(_buffers, name, kept)
    return kept[:numel]
