# SnowFlock — see README.md. `make demo` and `make test` work on a fresh
# Debian 12 machine: both install what they need first (make deps).

SHELL := /bin/bash
# Go lives in /usr/local/go on our machines; find it even when PATH lacks it.
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin
GOFLAGS_TEST ?= -race
BENCHTIME ?= 2000x
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: all build deps test lint bench demo fuzz clean help slurm-up slurm-down

all: build

## build: compile every command into bin/
build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/ ./cmd/...

## deps: install the Debian packages and Go modules the project needs (idempotent)
deps:
	@contrib/deps/install

## lint: gofmt check and go vet
lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$bad" ]; then echo "gofmt would change: $$bad"; exit 1; fi
	$(GO) vet ./...

## test: install what is needed, lint, then run every test (root, real processes)
test: deps lint
	$(GO) test $(GOFLAGS_TEST) -count=1 ./...

## bench: run the benchmarks and print their figures against in-run baselines
# Slurm grants take 30 ms (commands) to 1 s (slurmrestd): fewer runs there.
SLURM_BENCHTIME ?= 30x
bench: deps
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) $$($(GO) list ./... | grep -v /allocator/slurm$$)
	$(GO) test -run '^$$' -bench . -benchtime $(SLURM_BENCHTIME) ./allocator/slurm

## fuzz: run each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## demo: the main job on the embedded default configuration
demo: deps build
	@contrib/demo/run

## slurm-up: start a real Slurm test cluster here (root; see contrib/testbed/slurm/testbed)
SLURM_NODES ?= 4
slurm-up: build
	@contrib/testbed/slurm/testbed up --nodes $(SLURM_NODES) --rest --system-conf

## slurm-down: stop the Slurm test cluster, leaving nothing behind
slurm-down:
	@contrib/testbed/slurm/testbed down

clean:
	rm -rf $(BIN)

help:
	@grep -E '^## ' Makefile | sed 's/^## /  make /'
