# porttrace: `make` builds the binary, `make test` runs every test (root
# for the kernel tests), `make generate` recompiles the BPF object.

BPF_CLANG ?= clang
BPF_CFLAGS ?= -O2 -g -Wall -Werror
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO ?= go

.PHONY: all build generate test test-vm bench bench-vm lint help clean

all: build

build: ## build the static porttrace binary
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o porttrace ./cmd/porttrace

generate: ## recompile bpf/*.c into tracer/porttrace_x86_bpfel.{go,o}
	cd tracer && BPF_CLANG=$(BPF_CLANG) BPF_CFLAGS="$(BPF_CFLAGS)" $(GO) generate ./...

test: ## run unit and kernel tests (kernel tests need root)
	$(GO) vet ./...
	CGO_ENABLED=1 $(GO) test -race -count=1 ./...

test-vm: ## run the kernel tests in QEMU on each kernel of vm/kernels, per backend
	bash vm/run.sh

bench: build ## measure overhead and startup against no tracer (root)
	go run ./bench

bench-vm: ## per-call kernel time of the fentry and tracepoint backends, in QEMU
	VM_BENCH='-reps+3+-tcp+300+-udp+1000+-events+0.005+-backends+fentry,tracepoint' bash vm/run.sh

lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

clean:
	rm -f porttrace

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "%-12s %s\n", $$1, $$2}'
