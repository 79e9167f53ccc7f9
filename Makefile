# mnist-course: `make test` and `make demo` are the two commands a learner needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo notebooks lessons lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Everything runs on 2 pytest-xdist workers, each process on one thread. --dist loadgroup hands
# out units of work, those with the most tests first (see work_unit in conftest.py): each notebook whole, its cells
# in order in one kernel; lessons 01, 03 and 06 as one unit, in that order, since each reads a
# file the one before saves; test_draw.py whole, since it trains its networks once; every other
# test alone. One thread each, because a second thread buys little here (`mnist-course bench`:
# NumPy 29.0 vs 27.3 ms per step, PyTorch 42 vs 31) and two processes with two threads each on
# 2 cores ran slower than one after the other; so the whole command
# took 887 s for 1,747 s of tests added up across the two workers (docs/maintaining.md).
THREADS := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
test: $(STAMP)  ## every solution notebook (nbval) and unit test, on 2 workers
	$(THREADS) $(BIN)/python -m pytest -n 2 --dist loadgroup solutions tests

demo: $(STAMP)  ## fetch MNIST, train NumPy then PyTorch, compare
	$(BIN)/mnist-course demo

notebooks: $(STAMP)  ## re-execute solutions/ in place, then regenerate lessons/
	$(BIN)/python -m mnist_course.keep build solutions
	$(BIN)/python -m mnist_course.notebooks execute solutions/*.ipynb
	$(BIN)/mnist-course lessons

lessons: $(STAMP)  ## regenerate lessons/ from solutions/
	$(BIN)/mnist-course lessons

bench: $(STAMP)  ## NumPy vs PyTorch milliseconds per training step
	$(BIN)/mnist-course bench

lint: $(STAMP)
	$(BIN)/ruff check mnist_course tests

clean-venv:
	rm -rf $(VENV)
