# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit test-slow lint table6 clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) scripts/setup_opencv.py
	$(PY) -c "import cv2, torch, torchvision, pycocotools, albumentations; print('installed: torch', torch.__version__, 'torchvision', torchvision.__version__, 'opencv', cv2.__version__)"
	touch $(STAMP)

DEMO := runs/demo

# The embedded default: synthetic shapes dataset -> train -> COCO evaluation -> detection on a generated video.
demo: $(STAMP)
	$(PY) tools/make_synthetic.py --out $(DEMO)/data --train 2000 --val 300 --video $(DEMO)/video.mp4
	$(PY) tools/train_coco.py --config configs/synthetic_demo.yaml --output-dir $(DEMO)/train
	$(PY) tools/eval_coco.py --weights $(DEMO)/train/best.pt --data-root $(DEMO)/data --output-dir $(DEMO)/eval
	$(PY) tools/detect.py --video $(DEMO)/video.mp4 --weights $(DEMO)/train/best.pt --output-dir $(DEMO)/detect \
		--save-json $(DEMO)/detect/detections.jsonl
	@echo "demo outputs: $(DEMO)/train (checkpoints, log.jsonl), $(DEMO)/eval (metrics.json, pr_curve.png),"
	@echo "              $(DEMO)/detect (annotated video, detections.jsonl)"

# One pytest worker per core (pytest-xdist), each on one thread, as the tools they start (OMP_NUM_THREADS).
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow" -n auto

test-unit: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow" -n auto tests/unit

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check detector tools benchmarks scripts tests
	$(VENV)/bin/ruff format --check detector tools benchmarks scripts tests

table6: $(STAMP)
	$(PY) tools/table6.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
