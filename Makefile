# Set-up and everyday commands. `make demo` and `make test` each install what they need first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO ?= demo_output
DEMO_MODEL = $(DEMO)/CNN_training/demo/demo.safetensors
DEMO_TEST = $(DEMO)/CNN_training/demo/test_set/datacube/cube_test.h5

.PHONY: install demo test lint bench clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Whole pipeline on built-in simulated data, written to $(DEMO)/.
demo: $(STAMP)
	mkdir -p $(DEMO)
	$(BIN)/otrain simulate --outdir $(DEMO)/cutouts --n-true 1500 --n-false 1500 --size 32 --seed 1 --overwrite
	$(BIN)/otrain convert --path $(DEMO) --cube demo --cutouts $(DEMO)/cutouts --seed 1 --overwrite
	$(BIN)/otrain train --cube $(DEMO)/datacube/demo.h5 --model-path $(DEMO) --model-name demo --epochs 10 --seed 1 --overwrite
	# A new "night": unseen candidates with injected sources, scored and checked against the injections.
	$(BIN)/otrain simulate --outdir $(DEMO)/night --n-true 300 --n-false 700 --size 32 --seed 2 --overwrite
	$(BIN)/otrain infer --cutouts $(DEMO)/night/true $(DEMO)/night/false --model $(DEMO)/CNN_training/demo/demo.safetensors --output $(DEMO)/night/infer_results.dat --threshold model --overwrite
	$(BIN)/otrain checkinfer --plots $(DEMO)/plots --crossmatch $(DEMO)/night --infer $(DEMO)/night --overwrite
	# Evaluation on the held-out test cube: metrics and thresholds, plots, Grad-CAM, one HTML page.
	$(BIN)/otrain diagnostics --path-cube-validation $(DEMO_TEST) --model $(DEMO_MODEL) --path-diagnostics $(DEMO)/diagnostics --n-examples 12 --prevalence 0.01 --overwrite
	$(BIN)/otrain plot-results --path-cube-validation $(DEMO_TEST) --model $(DEMO_MODEL) --path-plots $(DEMO)/plots --overwrite --quiet
	$(BIN)/otrain grad-cam --cube $(DEMO_TEST) --model $(DEMO_MODEL) --cam-path $(DEMO)/grad_cam --n-random 12 --overwrite
	$(BIN)/otrain report --model-dir $(DEMO)/CNN_training/demo --overwrite
	@echo ""
	@echo "Where to look:"
	@echo "  $(DEMO)/CNN_training/demo/report.html   everything on one page (open it in a browser)"
	@echo "  $(DEMO)/diagnostics/diagnostics.json    metrics, thresholds; contact sheets and misclassified cutouts beside it"
	@echo "  $(DEMO)/plots/                          ROC, precision-recall, F1/MCC, reliability (also at another prevalence: --prevalence)"
	@echo "  $(DEMO)/grad_cam/                       where the network looks, per outcome (TP/TN/FP/FN)"
	@echo "  $(DEMO)/plots/CheckInfer/               recovery of the injected sources of the simulated night"

test: $(STAMP)
	$(BIN)/pytest -q -n 2

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/convert.py
