# The two commands of the README: `make demo` (main job on embedded defaults) and `make test`.
# Each creates the virtual environment from the pinned requirements.lock if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dtl-installed

.PHONY: demo test bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dtl demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf demo_out .pytest_cache
