"""mpi_gan: MD-GAN (Hardy et al., IPDPS 2019) over MPI point-to-point."""

__version__ = "0.1.0"
