# Set-up and entry points. Every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
# torch: the CPU build, pinned so that pip never resolves a CUDA build.
TORCH := torch==2.13.0
# JAX build: cpu (default), gpu (jax[cuda12]) or tpu (jax[tpu]); `make install ACCEL=gpu`.
ACCEL ?= cpu
ifeq ($(filter $(ACCEL),cpu gpu tpu),)
$(error ACCEL=$(ACCEL) is invalid: use ACCEL=cpu (default), gpu (jax[cuda12]) or tpu (jax[tpu]))
endif
EXTRAS := $(if $(filter cpu,$(ACCEL)),,[$(ACCEL)])
# One stamp per build, so that `make install ACCEL=gpu` after a CPU install adds the plugin.
INSTALLED := $(VENV)/.installed$(if $(filter cpu,$(ACCEL)),,-$(ACCEL))

.PHONY: demo test install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(INSTALLED): pyproject.toml | $(PY)
	$(PIP) install -e ".$(EXTRAS)"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PIP) install $(TORCH)
	$(PIP) install -e ".[hf,test,beam]"
	touch $(VENV)/.installed $@

install: $(INSTALLED)
install-test: $(VENV)/.installed-test

## The main job on the embedded default: a small multilingual pretraining run.
demo: install
	$(PY) -m polyglot.train

## The test suite (CPU, 8 fake devices).
test: install-test
	$(PY) -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) workdir .pytest_cache
