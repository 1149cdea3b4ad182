# Set-up and entry points. Every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
# torch: the CPU build, pinned so that pip never resolves a CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PIP) install $(TORCH)
	$(PIP) install -e ".[hf,test]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## The main job on the embedded default: a small multilingual pretraining run.
demo: install
	$(PY) -m polyglot.train

## The test suite (CPU, 8 fake devices).
test: install-test
	$(PY) -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) workdir .pytest_cache
