# booktape: `make demo` runs the main job against the embedded simulator, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test conformance faults soak bench docs clean

DEMO_ROOT := demo-data
# The L3 feed's numba kernels: compiled once into numba's cache (~12 s), loaded in ~1 s afterwards.
WARM   := $(BIN)/python -c 'from recorder.feeds import l3; l3.warm()'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,cluster,s3]'
	$(BIN)/pip install -q --no-deps 'ccxt==4.4.50'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(WARM)
	rm -rf $(DEMO_ROOT)
	$(BIN)/recorder demo --seconds 30 --root $(DEMO_ROOT)
	$(BIN)/replay bbo --root $(DEMO_ROOT) --exchange btcalpha --pair BTC_USD
	$(BIN)/replay verify --root $(DEMO_ROOT) --exchange btcalpha --pair BTC_USD
	$(BIN)/replay sql --root $(DEMO_ROOT) "SELECT exchange, pair, count(*) AS bbo_rows, \
	    min(ask_price - bid_price) AS min_spread, max(ask_price - bid_price) AS max_spread FROM bbo GROUP BY ALL"
	@echo "dataset kept in $(DEMO_ROOT)/ -- try: $(BIN)/replay sql --root $(DEMO_ROOT) 'SELECT * FROM sessions'"

test: $(STAMP)
	$(WARM)
	$(BIN)/python -m pytest -q -n 3

# Recordings under injected faults (restart, kill -9, drops, stalls, bad files, a frozen store, two recorders, S3;
# ~5 min); kept out of `make test` for its 10-min budget, run by .ci/run.
faults: $(STAMP)
	$(WARM)
	$(BIN)/python -m pytest -q -m faults -o addopts='-p no:cacheprovider'

# recorder run against the real npm socket.io 2.5.0 / 4.x and engine.io 6 servers (the tests install them with npm
# into $$BOOKTAPE_NPM_CACHE, default ~/.cache/booktape-npm; ~2.5 min); kept out of `make test` for its 10-min budget.
conformance: $(STAMP)
	$(WARM)
	$(BIN)/python -m pytest -q -m conformance -o addopts='-p no:cacheprovider'

soak: $(STAMP)
	$(WARM)
	$(BIN)/python -m pytest -q -m soak -o addopts='-p no:cacheprovider'

bench: $(STAMP)
	for b in store sim ingest hotpath replay query; do $(BIN)/python bench/$$b.py || exit 1; done

docs: $(STAMP)
	$(BIN)/python -m schemas.render > docs/schemas.md

clean:
	rm -rf $(VENV) build *.egg-info
