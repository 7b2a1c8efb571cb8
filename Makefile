# anycast-operator — build, generate, test.
#
#   make demo     the whole product on this machine, live: a local control plane, the manager, three agents, a route
#                 server; a scripted failure and recovery, then it stays up for you to try things (Ctrl-C stops it)
#   make test     everything CI runs: generated files up to date, format, vet, lint, unit and integration tests
#                 against a real kube-apiserver and etcd (built from the Go module proxy on first use)
#   make bench    the benchmarks behind docs/performance.md

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

K8S_VERSION ?= 1.37.2
ENVTEST_ASSETS ?= $(CURDIR)/bin/k8s/$(K8S_VERSION)
METALLB_VERSION ?= 0.16.1
METALLB_SPEAKER_DIR ?= $(CURDIR)/bin/metallb/$(METALLB_VERSION)
TEST_ENV = KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) METALLB_SPEAKER=$(METALLB_SPEAKER_DIR)/speaker
CONTROLLER_GEN := go tool controller-gen
STATICCHECK_VERSION ?= v0.8.2
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
GO_TEST_FLAGS ?=

.PHONY: all
all: build

##@ Generate

.PHONY: generate
generate: ## DeepCopy methods of the API types and of the local Cilium types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/... paths=./internal/backend/cilium/ciliumv2/...

.PHONY: manifests
manifests: ## CRDs and the manager's RBAC role from the Go markers.
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=anycast-manager paths=./controllers/... output:rbac:artifacts:config=config/rbac

.PHONY: verify-gen
verify-gen: generate manifests ## Regenerate and fail if anything differs from what is committed.
	@if [ -n "$$(git status --porcelain -- api config internal/backend/cilium/ciliumv2)" ]; then \
	  echo "Generated files are out of date; run 'make generate manifests' and commit:"; \
	  git status --porcelain -- api config internal/backend/cilium/ciliumv2; git --no-pager diff --stat -- api config internal/backend/cilium/ciliumv2; exit 1; fi

##@ Check

.PHONY: fmt
fmt: ## Format the Go code.
	gofmt -w $$(git ls-files '*.go')

.PHONY: fmt-check
fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "Not gofmt'ed: $$out"; exit 1; fi

.PHONY: vet
vet: ## go vet.
	go vet ./...

.PHONY: lint
lint: fmt-check vet ## gofmt, go vet and staticcheck.
	go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

##@ Test

.PHONY: envtest-assets
envtest-assets: ## Build kube-apiserver, etcd and kubectl from the Go module proxy into bin/k8s/ (cached).
	K8S_VERSION=$(K8S_VERSION) ENVTEST_ASSETS_DIR=$(ENVTEST_ASSETS) hack/build-envtest-assets.sh

.PHONY: metallb-speaker
metallb-speaker: ## Build MetalLB's speaker from the Go module proxy into bin/metallb/ (cached), for the real-speaker test.
	METALLB_VERSION=$(METALLB_VERSION) METALLB_SPEAKER_DIR=$(METALLB_SPEAKER_DIR) hack/build-metallb-speaker.sh

.PHONY: test
test: verify-gen lint envtest-assets metallb-speaker ## All tests, including those against a real API server, and demo-check.
	$(TEST_ENV) go test $(GO_TEST_FLAGS) $$(go list ./... | grep -v /test/demo) -count=1
	cd test/upstream && go vet ./... && go test $(GO_TEST_FLAGS) ./... -count=1
	$(MAKE) --no-print-directory demo-check

.PHONY: demo-check
demo-check: envtest-assets ## The demo's scenario with short timings; fails unless each step is seen at the router and Ctrl-C leaves nothing behind.
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) go test ./test/demo/ -count=1 -v -timeout 10m

##@ Demo

.PHONY: demo
demo: envtest-assets build ## Run the product on this machine, live (Ctrl-C stops everything).
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) bin/demo --bin-dir bin

.PHONY: bench
bench: envtest-assets metallb-speaker ## Benchmarks; figures go to docs/performance.md.
	go test ./internal/plan/ -run '^$$' -bench . -benchmem -count=5
	go test ./internal/speaker/embedded/ -run '^$$' -bench DecisionToRouter -benchtime=2000x -count=3
	go test ./internal/speaker/bird/ -run '^$$' -bench DecisionToRouter -benchtime=300x -count=2
	$(TEST_ENV) go test ./test/e2e/ -run '^$$' -bench ServiceDeath -benchtime=20x -timeout 10m
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) go test ./test/bench/ -run '^$$' -bench ColdConvergence -benchtime=3x -timeout 30m
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) go test ./test/bench/ -run '^$$' -bench AgentFootprint -benchtime=1x -timeout 10m

##@ Build

.PHONY: build
build: ## Build the manager, the agent and the demo into bin/.
	@echo "Building bin/manager, bin/agent and bin/demo (the first build compiles the dependencies: a few minutes)"
	go build -ldflags "$(LDFLAGS)" -o bin/manager ./cmd/manager
	go build -ldflags "$(LDFLAGS)" -o bin/agent ./cmd/agent
	go build -o bin/demo ./cmd/demo

.PHONY: run
run: ## Run the manager against the current kubeconfig.
	go run ./cmd/manager --leader-elect=false

.PHONY: help
help: ## This help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-16s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)
