# a2lc — make demo (the whole job on the built-in data) and make test. Each sets itself up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Exact versions CI was verified with (Linux x86_64); `make CONSTRAINTS= ...` installs unpinned-but-bounded.
CONSTRAINTS ?= $(if $(filter Linux-x86_64,$(shell uname -s)-$(shell uname -m)),constraints-ci.txt,)
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
DEMO_DIR ?= demo-work
PYTEST_WORKERS ?= 2

.PHONY: install demo test bench-train bench-acquire bench-quality bench-quality-quick bench-calibration clean

$(BIN)/.installed: setup.cfg pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q $(PIP_C) -e '.[test]'
	touch $@

install: $(BIN)/.installed

demo: install
	mkdir -p $(DEMO_DIR)
	cd $(DEMO_DIR) && ../$(BIN)/a2lc demo

test: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) tests

bench-train: install
	$(BIN)/python bench/train_speed.py

bench-acquire: install
	$(BIN)/python bench/acquire_speed.py

bench-quality: install
	$(BIN)/python bench/quality.py

bench-quality-quick: install
	$(BIN)/python bench/quality.py --quick

bench-calibration: install
	$(BIN)/python bench/calibration.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build *.egg-info
