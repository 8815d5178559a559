# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# extras installed into the venv; the tests also run the Lightning and Hugging Face recipes, TensorBoard
# logging; lint needs ruff and mypy (the dev extra), and tune for the optuna and sqlalchemy types mypy follows
EXTRAS ?= test,harness
test: EXTRAS = test,harness,lightning,tune,hf,tensorboard,docs
lint: EXTRAS = test,harness,tune,dev
docs: EXTRAS = test,harness,docs

.PHONY: setup data demo test lint docs bench
setup:
	EXTRAS=$(EXTRAS) bash scripts/setup.sh

data:
	bash scripts/fetch-data.sh

demo: setup data
	$(VENV)/bin/gradgeo demo

test: setup data
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy src

# the documentation site into site/; --strict: a warning (a broken link, an unresolved reference) fails
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site  # (that variable silences a banner about Material's end of life in 2027)
	$(PY) scripts/check-site.py site  # every link resolves from disk (the README says: open site/index.html)

bench: setup
	$(PY) benchmarks/transforms.py
	$(PY) benchmarks/osgd.py 2>/dev/null
