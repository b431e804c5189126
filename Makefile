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

.PHONY: all build deps test lint bench demo fuzz proto clean help

all: build

## build: compile every command, plugin and the EGO simulator into bin/
build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/ ./cmd/... $(CONTRIB_BINS)

# Binaries built from contrib/: the example allocator plugin (hostfile) and the EGO simulator.
CONTRIB_BINS := ./contrib/sfalloc-plugin-hostfile ./contrib/egosim

## proto: regenerate the plugin protocol's Go code (needs protoc: apt-get install protobuf-compiler)
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
PROTO_BIN := $(CURDIR)/.cache/protoc-bin
proto:
	@command -v protoc >/dev/null || { echo "proto: protoc is missing: apt-get install protobuf-compiler"; exit 1; }
	GOBIN=$(PROTO_BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(PROTO_BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(PROTO_BIN):$$PATH protoc -I allocator/plugin/proto \
	  --go_out=paths=source_relative:allocator/plugin/proto \
	  --go-grpc_out=paths=source_relative:allocator/plugin/proto \
	  allocator/plugin/proto/allocator.proto

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
bench: deps
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) ./...

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

clean:
	rm -rf $(BIN) .cache

help:
	@grep -E '^## ' Makefile | sed 's/^## /  make /'
