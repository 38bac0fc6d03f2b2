# kyam: `make test` and `make reproduce` are all the set-up a fresh machine needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= quick
SEEDS ?=
DATASET ?=
DATA_ROOT ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv system-deps test test-fast reproduce browse bench clean-results

venv: $(VENV)/.installed

# Re-installs when pyproject.toml changes; an editable install, so code edits need no reinstall.
# The crf extra is installed too, so the tests of the dense CRF run in CI; pydensecrf2 builds from its
# sdist and needs a C++ compiler.
$(VENV)/.installed: pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	@command -v g++ >/dev/null 2>&1 || { $(SUDO) apt-get update && $(SUDO) apt-get install -y g++; }
	$(PY) -m pip install -e ".[dev,crf]"
	touch $@

# Debian's Chromium for the browser test (Playwright drives it; its own browser download is not used).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }

test: venv system-deps
	$(PY) -m pytest -q -ra

test-fast: venv
	$(PY) -m pytest -q -ra -m "not browser and not slow"

reproduce: venv
	$(PY) -m kyam_lib.experiments.reproduce --preset $(PRESET) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(DATASET),--dataset $(DATASET)) $(if $(DATA_ROOT),--data-root $(DATA_ROOT))

browse: venv
	$(VENV)/bin/voila notebooks/08_attention_browser.ipynb --port=8866 --no-browser --Voila.ip=127.0.0.1 --show_tracebacks=True

bench: venv
	$(PY) -m benchmarks.bench
