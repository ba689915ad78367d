"""The shared scratch buffers: one storage per name and thread, grown to the largest request."""

from __future__ import annotations

import threading

import torch

from znnx.kernels import scratch


def test_a_name_keeps_its_storage_and_grows_to_the_largest_request() -> None:
    small = scratch.buffer("test-grow", 10)
    again = scratch.buffer("test-grow", 8)
    assert small.numel() == 10 and again.numel() == 8
    assert again.data_ptr() == small.data_ptr()
    large = scratch.buffer("test-grow", 1000)
    assert large.numel() == 1000
    assert scratch.buffer("test-grow", 10).data_ptr() == large.data_ptr()


def test_names_and_threads_have_their_own_buffers() -> None:
    here = scratch.buffer("test-own", 16)
    assert scratch.buffer("test-other", 16).data_ptr() != here.data_ptr()
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(scratch.buffer("test-own", 16).data_ptr()))
    thread.start()
    thread.join()
    assert seen and seen[0] != here.data_ptr()


def test_buffers_are_writable_inside_inference_mode() -> None:
    with torch.inference_mode():
        buffer = scratch.buffer("test-inference", 4)
        buffer.fill_(1.0)
    scratch.buffer("test-inference", 4).add_(1.0)
    assert torch.equal(scratch.buffer("test-inference", 4), torch.full((4,), 2.0))
