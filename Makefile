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

.PHONY: all build deps test lint bench demo fuzz proto clean help guest slurm-up slurm-down hosts-up hosts-down test-xen bench-xen xen-image xen-up xen-demo xen-down libegosf install

all: build

## build: compile every command, plugin and the EGO simulator into bin/
build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/ ./cmd/... $(CONTRIB_BINS)

## libegosf: build the C library (bindings/c) into build/libegosf/libegosf.so
LIBEGOSF := build/libegosf/libegosf.so
libegosf:
	$(GO) build -buildmode=c-shared -o $(LIBEGOSF) ./bindings/c
	@rm -f $(basename $(LIBEGOSF)).h  # cgo's generated header: bindings/c/egosf.h is the API

## install: install libegosf under PREFIX (default /usr/local): lib/libegosf.so, include/egosf.h, lib/pkgconfig/libegosf.pc
PREFIX ?= /usr/local
install: libegosf
	install -d $(DESTDIR)$(abspath $(PREFIX))/lib/pkgconfig $(DESTDIR)$(abspath $(PREFIX))/include
	install -m 0755 $(LIBEGOSF) $(DESTDIR)$(abspath $(PREFIX))/lib/libegosf.so
	install -m 0644 bindings/c/egosf.h $(DESTDIR)$(abspath $(PREFIX))/include/egosf.h
	sed -e 's|@PREFIX@|$(abspath $(PREFIX))|' -e 's|@VERSION@|$(VERSION)|' bindings/c/libegosf.pc.in \
	  > $(DESTDIR)$(abspath $(PREFIX))/lib/pkgconfig/libegosf.pc
	@# the dynamic linker's cache knows the system prefixes only after ldconfig
	@case "$(DESTDIR)$(abspath $(PREFIX))" in /usr|/usr/local) [ "$$(id -u)" = 0 ] && ldconfig || true;; esac

# Binaries built from contrib/: the example allocator plugin (hostfile) and the EGO simulator.
CONTRIB_BINS := ./contrib/sfalloc-plugin-hostfile ./contrib/egosim

## proto: regenerate the Go code of the plugin protocol and the sfld API (needs protoc: apt-get install protobuf-compiler)
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
	PATH=$(PROTO_BIN):$$PATH protoc -I clonesvc/sfldpb \
	  --go_out=paths=source_relative:clonesvc/sfldpb \
	  --go-grpc_out=paths=source_relative:clonesvc/sfldpb \
	  clonesvc/sfldpb/sfld.proto

## deps: install the Debian packages and Go modules the project needs (idempotent)
deps:
	@contrib/deps/install

## lint: gofmt check and go vet
lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$bad" ]; then echo "gofmt would change: $$bad"; exit 1; fi
	$(GO) vet ./...

## guest: build the test guest (Debian cloud kernel + busybox initramfs + sfguest) into build/guest (cached)
guest:
	@contrib/guest/build

## test: install what is needed, lint, then run every test (root, real processes, real QEMU, the Xen bed)
test: deps lint guest xen-image
	$(GO) test $(GOFLAGS_TEST) -tags xenbed -count=1 -timeout 40m ./...

## test-xen: the Xen tests (build tag xenbed): a real Xen 4.17 host booted once in QEMU (TCG), sfld in its dom0, PV guests
test-xen: deps lint guest xen-image
	$(GO) test $(GOFLAGS_TEST) -tags xenbed -count=1 -timeout 40m -v ./integration/xenbed/ ./integration/xen/

## bench: run the benchmarks and print their figures against in-run baselines
# Benchmarks that start VMs run VMBENCHTIME iterations; Slurm grants take
# 30 ms (commands) to 1 s (slurmrestd): SLURM_BENCHTIME; the others BENCHTIME.
VMBENCHTIME ?= 3x
VMBENCH_PKGS := ./kvmbackend/...
SLURM_BENCHTIME ?= 30x
bench: deps guest xen-image
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) $$($(GO) list ./... | grep -v -e /kvmbackend -e /integration -e '/allocator/slurm$$')
	$(GO) test -run '^$$' -bench . -benchtime $(SLURM_BENCHTIME) ./allocator/slurm
	$(GO) test -run '^$$' -bench . -benchtime $(VMBENCHTIME) $(VMBENCH_PKGS)
	$(GO) test -run '^$$' -bench MultiHost -benchtime 1x -timeout 30m ./integration/
	$(MAKE) --no-print-directory bench-xen

## bench-xen: (part of make bench) clone latency through the Xen backend against plain xl save -c + xl restore of the same guest in the same run, descriptor vs image size (Xen bed)
bench-xen: deps guest xen-image
	$(GO) test -tags xenbed -run '^$$' -bench XenClone -benchtime 1x -timeout 30m ./integration/xen/

## fuzz: run each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## demo: the main job on the embedded default configuration (HOSTS=4: across 4 hosts)
HOSTS ?= 1
demo: deps build guest
	@HOSTS=$(HOSTS) contrib/demo/run

## hosts-up: start BED_HOSTS SnowFlock hosts here (network namespaces on a bridge, one sfld each; root)
BED_HOSTS ?= 4
HOSTS_PREFIX ?= sfhosts
HOSTS_SUBNET ?= 10.77.0.0/24
hosts-up: build guest
	@contrib/testbed/hosts/testbed up $(BED_HOSTS) --prefix $(HOSTS_PREFIX) --subnet $(HOSTS_SUBNET) --bin $(BIN) \
	  --kernel build/guest/vmlinuz --initrd build/guest/initrd.img

## hosts-down: stop the test hosts and remove their namespaces and files
hosts-down:
	@contrib/testbed/hosts/testbed down --prefix $(HOSTS_PREFIX)

## xen-image: build the Xen test bed's boot files (Xen 4.17, dom0 kernel + initramfs with xl) into build/xen (cached)
xen-image:
	@contrib/testbed/xen/build

## xen-up: boot a real Xen host in QEMU (TCG) in XEN_DIR, with sfld (static) and the test guest in its dom0
XEN_DIR ?= /run/snowflock-xen
XEN_PORT ?=
XEN_MEM ?= 4096
XEN_DOM0_BIN := build/xen/dom0-bin
xen-up: build guest xen-image
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(XEN_DOM0_BIN)/sfld ./cmd/sfld
	@contrib/testbed/xen/testbed up --dir $(XEN_DIR) --sfld $(XEN_DOM0_BIN)/sfld --guest build/guest \
	  --mem $(XEN_MEM) $(if $(XEN_PORT),--port $(XEN_PORT)) >/dev/null
	@port=$$(cat $(XEN_DIR)/port); i=0; \
	  until $(BIN)/sfctl --config $(XEN_DIR)/host.yaml --addr 127.0.0.1:$$port info >/dev/null 2>&1; do \
	    i=$$((i + 1)); [ $$i -le 120 ] || { echo "xen-up: dom0's sfld did not answer within 60s (dom0:/var/log/sfld.log)"; exit 1; }; sleep 0.5; \
	  done; \
	  echo "xen-up: Xen 4.17 host up in $(XEN_DIR) (QEMU pid $$(cat $(XEN_DIR)/qemu.pid)); dom0 sfld at 127.0.0.1:$$port"; \
	  echo "  $(BIN)/sfctl --config $(XEN_DIR)/host.yaml --addr 127.0.0.1:$$port info"; \
	  echo "  contrib/testbed/xen/testbed exec --dir $(XEN_DIR) -- xl list"; \
	  echo "  contrib/testbed/xen/testbed status --dir $(XEN_DIR)"; \
	  echo "  consoles: $(XEN_DIR)/serial.log (Xen, dom0); dom0:/var/log/xen/console/guest-NAME.log (domUs); dom0:/var/log/sfld.log"; \
	  echo "  make xen-down"

## xen-demo: the in-guest demo on the Xen bed of xen-up: sfprimes in a PV guest and its XEN_DEMO_N-1 clones (combined count, checked against one VM)
XEN_DEMO_N ?= 3
XEN_DEMO_UPTO ?= 300000
xen-demo:
	@test -f $(XEN_DIR)/port || { echo "xen-demo: no Xen bed in $(XEN_DIR): run make xen-up first"; exit 1; }
	@sfctl="$(BIN)/sfctl --config $(XEN_DIR)/host.yaml --addr 127.0.0.1:$$(cat $(XEN_DIR)/port)"; \
	  $$sfctl vm start --name xen-demo --wait >/dev/null && \
	  trap '$$sfctl vm stop xen-demo >/dev/null' EXIT && \
	  echo "one VM:" && $$sfctl vm exec xen-demo -- sfprimes -single -upto $(XEN_DEMO_UPTO) && \
	  echo "$(XEN_DEMO_N) VMs (the parent and its clones, PV domains restored from its checkpoint):" && \
	  $$sfctl vm exec xen-demo -- sfprimes -n $(XEN_DEMO_N) -upto $(XEN_DEMO_UPTO)

## xen-down: stop the Xen test bed of xen-up and remove XEN_DIR
xen-down:
	@contrib/testbed/xen/testbed down --dir $(XEN_DIR)

## slurm-up: start a real Slurm test cluster here (root; see contrib/testbed/slurm/testbed)
SLURM_NODES ?= 4
slurm-up: build
	@contrib/testbed/slurm/testbed up --nodes $(SLURM_NODES) --rest --system-conf

## slurm-down: stop the Slurm test cluster, leaving nothing behind
slurm-down:
	@contrib/testbed/slurm/testbed down

clean:
	rm -rf $(BIN) .cache

help:
	@grep -E '^## ' Makefile | sed 's/^## /  make /'
