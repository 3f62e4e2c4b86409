"""The scoring choices the command line offers, by name, without importing torch (entry
points check their arguments before they load it: mpi_gan/preflight.py).

``PREPROCESSING``: how images are prepared for the Inception network, named after the FID
tool each matches (``inception_input`` implements them); ``LEGACY``: what run files
written before the choice existed show (their configuration lacks it): they resized
half-pixel bilinear on unrounded x in [-1, 1] (NVIDIA's file: its own resize).
"""
PREPROCESSING = ("tensorflow", "pytorch-fid", "clean-fid")
LEGACY = "legacy"
