"""znnx's own convolution kernels (Winograd, FFT) and the C library that backs them."""
