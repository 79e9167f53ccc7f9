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

# The unit tests run on 2 workers (pytest-xdist): they are independent, and most of their time is
# spent starting kernels and processes. The notebooks run one after another, in order: lesson 03
# reads the MLP that lesson 01 saves.
test: $(STAMP)  ## unit tests (2 workers) + every solution notebook (nbval), in order
	$(BIN)/python -m pytest -n 2 tests
	$(BIN)/python -m pytest solutions

demo: $(STAMP)  ## fetch MNIST, train NumPy then PyTorch, compare
	$(BIN)/mnist-course demo

notebooks: $(STAMP)  ## re-execute solutions/ in place, then regenerate lessons/
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
