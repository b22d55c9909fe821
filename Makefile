# The two set-up commands of the README: `make demo` and `make test`.
# Everything they need is installed here: a virtualenv, the npm proxy, and (for tests) Debian packages.

VENV      ?= .venv
PYTHON    ?= python3
NODE_DIR  := $(CURDIR)/.tools/node
CHP       := $(NODE_DIR)/node_modules/.bin/configurable-http-proxy
DEBIAN_PKGS := prometheus postgresql chromium
export PATH := $(CURDIR)/$(VENV)/bin:$(NODE_DIR)/node_modules/.bin:$(PATH)

.PHONY: demo test bench system-packages clean

demo: $(VENV)/.demo $(CHP)
	af-metrics demo

test: $(VENV)/.test $(CHP) system-packages
	python -m pytest $(PYTEST_ARGS)

# Each benchmark also runs on its own: python -m bench.<module> (see the README's Benchmarks).
BENCHES := bench bench.dask_scrape bench.coffea_overhead bench.promql_vs_ledger bench.api_latency bench.accounting_ingest

bench: $(VENV)/.test $(CHP) system-packages
	@command -v wrk >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get install -y -q --no-install-recommends wrk; }
	for b in $(BENCHES); do python -m $$b || exit 1; done

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

$(VENV)/.demo: pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[demo]'
	touch $@

$(VENV)/.test: pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@ $(VENV)/.demo

$(CHP):
	npm install --silent --no-audit --no-fund --prefix $(NODE_DIR) configurable-http-proxy@^5

# Debian's prometheus (promtool), postgresql and chromium, for the tests that run the real thing.
system-packages:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

clean:
	rm -rf $(VENV) .tools test-artifacts
