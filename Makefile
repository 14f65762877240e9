# Broker: build, check and test. `make test` is what CI runs (.ci/run).
# `make` then `make client` is the original Broker's "Run Example": the library entry point on
# PORT, and the two-window demo page against it.

CARGO ?= cargo
## Port of the seed example (`make`), which `make client` talks to; port of the demo page.
PORT ?= 8080
CLIENT_PORT ?= 3000
## Cargo profile flag of `make` (empty for a debug build).
EXAMPLE_PROFILE ?= --release

.PHONY: all seed client build release run demo screenshot bench bench-full bench-cluster test deps fmt fmt-check lint api-test js-test browser-test fuzz clean

all: seed

## The seed example (examples/seed.rs, `broker::broker_run("*")`) on PORT: open mode, no users,
## the database in ./tmp (BROKER_DB moves it; BROKER_JWT_SECRET turns authentication on).
seed:
	PORT=$(PORT) $(CARGO) run $(EXAMPLE_PROFILE) --example seed

## The two-window demo page against `make`'s server (BROKER_URL names another), served on
## CLIENT_PORT by examples/demo/serve.py (Python 3, nothing to build); prints the URL to open.
client:
	@PORT=$(PORT) CLIENT_PORT=$(CLIENT_PORT) python3 examples/demo/serve.py

## Build the binary (debug).
build:
	$(CARGO) build

release:
	$(CARGO) build --release

## Start a server on port 8080 with the database in ./data.
run:
	$(CARGO) run --release

## The two-window demo at http://localhost:8080/demo (open mode, no login).
demo:
	$(CARGO) run --release -- --demo --no-auth

## Refresh docs/demo.png and docs/console-*.png from the browser tests.
screenshot: deps
	$(CARGO) build
	cd tests/browser && UPDATE_SCREENSHOT=1 node --test demo.test.mjs console.test.mjs

## Load-test a release build: a quick suite (about two minutes) or the whole one.
bench:
	scripts/bench.sh quick

bench-full:
	scripts/bench.sh full

bench-cluster:
	scripts/bench.sh cluster

## Install what the tests need, check formatting and lints, run every test.
test: deps fmt-check lint
	$(CARGO) build --examples
	$(CARGO) test --workspace --all-targets
	$(MAKE) api-test js-test browser-test

## schemathesis against /openapi.json of target/debug/broker: no 5xx, every response as
## documented (tests/schemathesis/run.py; API_TEST_EXAMPLES, API_TEST_SEED to vary it).
api-test: deps
	$(CARGO) build
	python3 tests/schemathesis/run.py

## The JS client's tests (node:test) against target/debug/broker.
js-test:
	$(CARGO) build
	cd clients/js && node --test test/

## The browser tests (headless Debian chromium via playwright-core) against target/debug/broker.
browser-test: deps
	$(CARGO) build
	cd tests/browser && node --test

## Fuzz every parser of untrusted bytes for FUZZ_SECONDS each, from the corpora in fuzz/corpus
## (new inputs go to fuzz/target/new-corpus). cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= stream_request names permissions last_event_id json_bodies

fuzz:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@for target in $(FUZZ_TARGETS); do \
		echo "== fuzz $$target for $(FUZZ_SECONDS) s"; \
		mkdir -p fuzz/target/new-corpus/$$target; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$target \
			fuzz/target/new-corpus/$$target fuzz/corpus/$$target -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -max_len=8192 || exit 1; \
	done

## System packages, npm packages and schemathesis the tests use (installed only when missing).
deps:
	@scripts/install-deps.sh

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
