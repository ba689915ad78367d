"""Planning a compiled net: memory (buffer lifetimes, in-place steps, peak bytes) and network files."""
