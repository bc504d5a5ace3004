# The two commands of the README:
#   make book   executes every chapter at the default profile and builds the HTML book
#   make test   runs the test suite (what CI runs)
# Each creates the virtual environment and installs everything on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= default
INSTALLED := $(VENV)/.installed
MATHJAX := node_modules/mathjax/es5/tex-chtml.js

.PHONY: book html test benchmarks chromium clean

book: $(INSTALLED) $(MATHJAX)
	$(PY) -m synaptic_geometry.book.build build --profile $(PROFILE)

html: $(INSTALLED) $(MATHJAX)
	$(PY) -m synaptic_geometry.book.build html

test: $(INSTALLED) $(MATHJAX) chromium  # two test processes: the 2-core machine the book targets
	$(PY) -m pytest -ra -n 2

benchmarks: $(INSTALLED)
	for script in benchmarks/bench_*.py; do $(PY) $$script || exit 1; done

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(MATHJAX): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# Headless Chromium for the test that checks the rendered math (Debian package).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is missing: install it (sudo apt-get install chromium) to run the screenshot test"; fi; }

clean:
	rm -rf _build book/*.ipynb results
