# Entry points; each one does the set-up it needs first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: setup test lint demo train bench soak clean

setup:
	@ROAD_SEG_VENV=$(VENV) scripts/setup_env.sh

lint: setup
	$(VENV)/bin/ruff check road_seg_perception test launch bench scripts setup.py

test: lint
	$(PY) -m pytest -m "not soak" test

demo: setup
	$(PY) -m road_seg_perception.tools.demo

train: setup
	$(PY) -m road_seg_perception.training.cli --config config/train_camvid.yaml

bench: setup
	$(PY) -m road_seg_perception.tools.bench

soak: setup
	$(PY) -m pytest -m soak test -s

clean:
	rm -rf build install log .pytest_cache
