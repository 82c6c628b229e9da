# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint table6 clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -c "import cv2, torch, torchvision, pycocotools, albumentations; print('installed: torch', torch.__version__, 'torchvision', torchvision.__version__, 'opencv', cv2.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/table6.py --latency

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check detector tools tests
	$(VENV)/bin/ruff format --check detector tools tests

table6: $(STAMP)
	$(PY) tools/table6.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
