"""Training (ZNN): nets from every frontend trained with znnx's own convolutions."""
