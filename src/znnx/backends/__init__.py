"""Backends turn a shaped graph into a callable on batched tensors."""
