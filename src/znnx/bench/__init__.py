"""Benchmarks: the reference U-Nets, peer runtimes, and the side-by-side report (`znnx bench`)."""
