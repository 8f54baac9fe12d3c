# The README's two commands: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,distributed]'
	-$(VENV)/bin/classes-tool build-native
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/classes-tool demo
	rm -rf runs/demo
	$(VENV)/bin/classes-tool campaign configs/demo.yaml --out runs/demo
	$(VENV)/bin/classes-tool report runs/demo/results.db -o runs/demo/report

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check classes_tool tests bench models

clean:
	rm -rf $(VENV) runs build *.egg-info
