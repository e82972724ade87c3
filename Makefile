# The two commands of the README: `make demo` (main job on embedded defaults) and `make test`.
# Each creates the virtual environment from the pinned requirements.lock if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dtl-installed

.PHONY: demo test test-heavy wheel-check bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dtl demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q -m "not heavy"

# The longest proofs (4.4 min on 2 cores): kills in every stage of a study, four trials per logical GPU
# over two Ray nodes. Run before a release or after touching those paths.
test-heavy: $(STAMP)
	$(PY) -m pytest -q -m heavy

# A plain install as a user makes it: build the wheel, install it (not editable) into a fresh venv with the
# pinned dependencies, then run the installed `dtl` from a directory outside the checkout.
WHEEL_CHECK ?= /tmp/dtl-wheel-check
wheel-check: $(STAMP)
	rm -rf $(WHEEL_CHECK) && mkdir -p $(WHEEL_CHECK)/run
	$(PY) -m pip wheel -q --no-deps -w $(WHEEL_CHECK) .
	$(PYTHON) -m venv $(WHEEL_CHECK)/venv
	$(WHEEL_CHECK)/venv/bin/python -m pip install -q -r requirements.lock $(WHEEL_CHECK)/dtl_dist-*.whl
	cd $(WHEEL_CHECK)/run && ../venv/bin/dtl ingest UL.120 --grid 420:2500:10 --out site.zarr --quiet \
		&& ../venv/bin/dtl select-local site.zarr --n 30 && ../venv/bin/dtl info site.zarr
	rm -rf $(WHEEL_CHECK)

clean:
	rm -rf demo_out .pytest_cache
