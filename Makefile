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

test: $(STAMP)  ## unit tests + every solution notebook (nbval)
	$(BIN)/python -m pytest

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
