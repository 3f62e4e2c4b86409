"""Gradient compression for what workers send (AdaComp and its peers).

Empty until the compression issue: the MD-GAN transport sends uncompressed
float32 buffers.
"""
