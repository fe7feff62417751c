# Every target sets itself up on a fresh clone: a virtualenv in .venv, the project installed editable with
# its test dependency group, pinned by constraints.txt so that every machine gets the same versions. uv (the
# pinned one, installed into the virtualenv by the system's pip: `pip --python`, pip 22.3 or later, as every
# Python 3.11 has) makes the install: 16 s on a fresh clone with empty caches where pip took 101 s, the same
# packages; and it fills uv's cache, from which test_packaging and test_quickstart
# then install Airflow without downloading it again. --compile-bytecode: the installed packages' bytecode is
# written once, at install (about 7 s more on two cores). Where PYTHONDONTWRITEBYTECODE is set (this
# machine's environment sets it) no process writes it, so every process the suite starts (its workers,
# dag.test children, Airflow's CLI and components) compiled Airflow and the rest from source: 1.8 s more CPU
# each to import Airflow's SDK, the provider's hook, Hypothesis and pytest alone (3.2 s against 1.4).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test e2e bench airflow lint clean compat dist docs chromium-start

setup: $(STAMP)

# --without-pip: nothing here uses the virtualenv's own pip (test_provider builds its wheel with pypa/build,
# as `make dist`), whose install (ensurepip) took 3.5 s of a fresh clone's 23 s of set-up.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(PY) install -qq --disable-pip-version-check -c constraints.txt uv
	$(PY) -m uv pip install -q --compile-bytecode --python $(PY) -c constraints.txt -e . --group test
	touch $(STAMP)

demo: setup
	$(PY) scripts/demo.py

# The suite runs in PYTEST_WORKERS processes (pytest-xdist): most of its time is spent waiting on servers and
# subprocesses, so more workers than cores pay. tests/conftest.py keeps on one worker each the e2e deployments,
# the wheel build and the tests of each module-scoped fixture (--dist loadgroup). PYTEST_WORKERS=0: one process.
# Six: on two cores, 4 workers left a fifth of the CPU idle (351 s against 309 s for six; eight took 299 s
# for 30 s more CPU).
# scripts/warm_bytecode.py compiles the modules (and rewrites the test modules' asserts) once for all workers.
# make lint runs beside the suite (scripts/with-lint.sh), not before it: its report comes after the suite's, and
# either failing fails make test.
# Chromium installs (where missing) in the background from the start, beside the virtualenv's install, and
# is waited for before redis-server's install (one apt at a time) and the suite.
PYTEST_WORKERS ?= 6
test: chromium-start setup
	bash scripts/ensure-chromium.sh --wait
	bash scripts/ensure-redis.sh
	$(PY) scripts/warm_bytecode.py
	MAKE="$(MAKE)" bash scripts/with-lint.sh $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# Real deployments: LocalExecutor on SQLite, CeleryExecutor with a private redis-server and PostgreSQL
# (127.0.0.1:5432, user postgres), and the connection form in headless Chromium.
e2e: setup
	bash scripts/ensure-redis.sh
	bash scripts/ensure-chromium.sh
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

# The unit suite and every example DAG on the latest patch of each supported Airflow minor (3.0 to 3.3), one
# uv virtualenv each in .compat/ with the built wheel; prints a table. COMPAT_ARGS="--minors 3.0,3.3" etc.
compat: setup
	bash scripts/ensure-redis.sh
	$(PY) scripts/compat.py $(COMPAT_ARGS)

# The sdist and the wheel, as a package index would get them: hatchling and its readme plugin come pinned from
# the test group (--no-isolation), so nothing is fetched to build. test_packaging.py runs this very target.
DIST ?= dist
dist: setup
	rm -f $(DIST)/airflow_provider_deyel-*
	$(PY) -m build --no-isolation --outdir $(DIST) .

# The documentation site (docs/ and the API reference from the docstrings) with warnings as errors, into
# docs/_build/html; test_docs_site.py builds the same with docs/conf.py.
DOCS_OUT ?= docs/_build/html
docs: setup
	$(PY) -m sphinx -W --keep-going -q -b html docs $(DOCS_OUT)

# Every table's variants interleaved, 5 rounds, medians and spreads; the machine and date printed first.
# BENCH_ARGS="--quick" (small sizes: checks every table runs), "--rounds 3 extract", etc.
bench: setup
	$(PY) -m bench $(BENCH_ARGS)

# DAGS="my_dags dags_examples" serves other DAG folders (default: dags_examples/); EMULATOR_PORT (8765) fixes
# the emulator's port so connections made in the UI survive a restart (0: any free port).
DAGS ?=
EMULATOR_PORT ?= 8765
airflow: setup
	$(PY) scripts/airflow_local.py --emulator-port $(EMULATOR_PORT) $(if $(DAGS),--dags $(DAGS))

chromium-start:
	bash scripts/ensure-chromium.sh --start

lint: setup
	$(VENV)/bin/ruff check provider tests dags_examples bench scripts
	$(VENV)/bin/ruff format --check provider tests dags_examples bench scripts
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .demo .airflow artifacts .pytest_cache dist build .compat docs/_build
