# porttrace: `make` builds the binary, `make run` builds and runs it (as
# root), `make test` runs every test (root for the kernel tests), `make
# generate` recompiles the BPF object.

BPF_CLANG ?= clang
BPF_CFLAGS ?= -O2 -g -Wall -Werror
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO ?= go
# Loading BPF programs takes root: `make run` and `make test` run as they
# are when already root (a container, a fresh VM with no sudo), else
# through sudo, keeping PATH so sudo finds the same go.
AS_ROOT := $(if $(filter 0,$(shell id -u)),,sudo env "PATH=$$PATH")
# `make run ARGS="-p 80 -o json"` passes flags to porttrace.
ARGS ?=
# `make build BIN=path` writes the binary there.
BIN ?= porttrace
# `make release` makes the release files in dist/ for these architectures
# (packaging/release.sh says what they are).
RELEASE_ARCHS ?= amd64 arm64
# `make image` tags $(IMAGE):$(VERSION) and $(IMAGE):latest, the tag
# deploy/kubernetes/daemonset.yaml runs.
IMAGE ?= localhost/porttrace
PODMAN ?= podman
# `make fuzz` runs each fuzz target this many times. A count, not a
# duration: Go 1.26's fuzz coordinator can report the end of a -fuzztime
# duration as a failure ("context deadline exceeded", go.dev/issue/75804)
# on a loaded machine, with no failing input; a count sets no deadline.
FUZZTIME ?= 30000x

# `make mutate` runs gremlins over the packages whose code is pure logic,
# the decisions every view prints: the event model, its classification
# and reasons (tracer/event), the escaping and the JSON and table writers
# (tracer/textout), the stream's filters, table and loss lines
# (tracer/stream), churn's arithmetic: rates, headroom, time to
# exhaustion (tracer/churn), what a socket means (tracer/ports), and the
# shared flag checks. Their unit tests must pin exact behaviour, so a
# changed operator or boundary fails one. gremlins runs a package's own
# tests only, so MUTATE_SKIP leaves out the files of those packages whose
# tests live in tracer/: those that drive the kernel, /proc, netlink or a
# server, or only wire flags and loops (the kernel tests), and ports' and
# churn's views (the golden files).
MUTATE_PKGS := tracer/event tracer/textout tracer/stream tracer/churn tracer/ports tracer/internal/flagcheck
MUTATE_SKIP := tracer/textout/stall.go \
	tracer/stream/run.go tracer/stream/holders.go tracer/stream/none.go tracer/stream/metrics.go \
	tracer/churn/run.go tracer/churn/usage_read.go tracer/churn/metrics.go tracer/churn/config.go tracer/churn/view.go \
	tracer/ports/ports.go tracer/ports/holders.go tracer/ports/who.go tracer/ports/watch.go tracer/ports/run.go \
	tracer/ports/view.go tracer/ports/columns.go tracer/ports/config.go \
	tracer/internal/flagcheck/netns.go
# The least test efficacy, killed / (killed + lived) mutants, in percent,
# of each package and of all. Two workers, one a core of a 2-CPU
# machine: each mutant builds and runs a package's tests. A mutant's
# timeout is the coverage run's time times the coefficient, room for a
# loaded machine; only a mutant that loops for ever reaches it.
MUTATE_THRESHOLD ?= 85
GREMLINS_FLAGS ?= --workers 2 --timeout-coefficient 20

.PHONY: all build release test-release image run generate test test-vm fuzz bench bench-scale bench-vm soak lint mutate mutate-changed help clean

all: build

build: ## build the static porttrace binary
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/porttrace

release: ## dist/: for linux amd64 and arm64 the binary's tar.gz, .deb and .rpm, and SHA256SUMS
	VERSION=$(VERSION) GO=$(GO) MAKE=$(MAKE) bash packaging/release.sh $(RELEASE_ARCHS)

# It installs the .deb on this machine and removes it after.
test-release: ## make release, check dist/, install the amd64 .deb, trace with it, remove it (root)
	$(AS_ROOT) PORTTRACE_RELEASE_TEST=1 $(GO) test -count=1 -timeout 20m -v -run '^TestRelease$$' ./packaging

image: build ## build the container image IMAGE:VERSION and IMAGE:latest from the static binary (podman; nothing is pulled)
	$(PODMAN) build --layers=false --platform linux/$$($(GO) env GOARCH) --build-arg VERSION=$(VERSION) -f Containerfile -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

run: build ## build, then trace as root (ARGS="..." for flags)
	$(AS_ROOT) ./porttrace $(ARGS)

man: ## write the man pages, one a command, into man/ (from the commands' help)
	VERSION=$(VERSION) $(GO) run ./internal/cli/mangen man

generate: ## recompile bpf/*.c into tracer/porttrace_{x86,arm64}_bpfel.{go,o}
	BPF_CLANG=$(BPF_CLANG) BPF_CFLAGS="$(BPF_CFLAGS)" $(GO) generate .

# The second run takes the paths of kernels before 5.15 (no
# bpf_task_pt_regs, no bpf_get_current_task_btf) on this one too. deploy
# runs last, alone: its containers load porttrace's programs, which the
# kernel tests count across the whole machine.
test: ## run unit, kernel and image tests (as root, through sudo if need be)
	$(GO) vet ./...
	$(AS_ROOT) CGO_ENABLED=1 $(GO) test -race -count=1 $$($(GO) list ./... | grep -v '/deploy$$')
	$(AS_ROOT) PORTTRACE_BACKEND=tracepoint PORTTRACE_WITHOUT_HELPERS=1 $(GO) test -count=1 -run '^TestKernel' ./tracer
	$(AS_ROOT) $(GO) test -count=1 ./deploy

# The targets are every func FuzzX of a _test.go, found here so that a new
# one is run too; go test takes one -fuzz target a run. New inputs that
# widen coverage go to the Go build cache; testdata/fuzz/ gets only a
# failing input, to commit with its fix.
fuzz: ## run each fuzz target FUZZTIME (default 30000x: times), one after another
	@set -e; for dir in $$(git grep -l '^func Fuzz' -- '*_test.go' | xargs -n1 dirname | sort -u); do \
		list=$$($(GO) test -list '^Fuzz' ./$$dir); \
		for target in $$(echo "$$list" | grep '^Fuzz'); do \
			echo "== $$target (./$$dir)"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) ./$$dir; \
		done; \
	done

test-vm: ## run the kernel tests in QEMU on each kernel of vm/kernels, per backend
	bash vm/run.sh

bench: build ## measure overhead and startup against no tracer (root)
	go run ./bench

bench-scale: build ## K parallel loops, K = 1, 2, 4, ... CPUs: events offered, delivered, lost, and the cost (root)
	go run ./bench -scale

# `make soak SOAK=30m` soaks for 30 minutes (a Go duration).
SOAK ?= 2m
soak: build ## stream, churn and ports --watch at once under a mixed load for SOAK (default 2m): flat resources, every event accounted for (root)
	$(AS_ROOT) $(GO) run ./soak -d $(SOAK) -bin ./porttrace

bench-vm: ## per-call kernel time of the fentry and tracepoint backends, in QEMU
	VM_BENCH='-reps+3+-tcp+300+-udp+1000+-events+0.005+-backends+fentry,tracepoint' bash vm/run.sh

lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

mutate: ## mutation testing (gremlins) of MUTATE_PKGS: efficacy per package and overall, fails below MUTATE_THRESHOLD
	MUTATE_SKIP="$(MUTATE_SKIP)" MUTATE_THRESHOLD=$(MUTATE_THRESHOLD) GREMLINS_FLAGS="$(GREMLINS_FLAGS)" GO=$(GO) bash .ci/mutate $(MUTATE_PKGS)

mutate-changed: ## make mutate on the MUTATE_PKGS changed against origin/main (else the last commit)
	MUTATE_SKIP="$(MUTATE_SKIP)" MUTATE_THRESHOLD=$(MUTATE_THRESHOLD) GREMLINS_FLAGS="$(GREMLINS_FLAGS)" GO=$(GO) bash .ci/mutate --changed $(MUTATE_PKGS)

clean:
	rm -rf porttrace man dist

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "%-12s %s\n", $$1, $$2}'
