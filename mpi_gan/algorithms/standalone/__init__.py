"""The standalone GAN: one process, one G and one D, the same models, losses and files."""
