# edged — see `make help`. The two commands a new user needs: `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# commit and build date for `edged version`; the date is the commit's, so a rebuild of the same
# commit is byte-identical. Without git, edged falls back to the VCS stamp Go embeds.
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILD_DATE ?= $(shell git log -1 --format=%cI 2>/dev/null)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(BUILD_DATE)
BIN := bin/edged
export CGO_ENABLED := 0

.PHONY: help run build test vet lint clean

help: ## this list
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## static binary for this machine in bin/edged
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/edged

run: build ## start edged on its embedded defaults (broker 127.0.0.1:1883, data in ./data)
	./$(BIN) run

vet: ## go vet
	$(GO) vet ./...

# golangci-lint is pinned as a tool in deploy/lint.mod (its own module, so its dependencies stay
# out of edged's go.mod); the first run builds it (a few minutes), later runs use the cache.
lint: ## golangci-lint with .golangci.yml
	$(GO) tool -modfile=deploy/lint.mod golangci-lint run ./...

# deploy/arm's tests need the release artefacts (dist/, .debs): test-cross builds them and runs
# those tests (test-deploy), so the race pass leaves the package out instead of skipping it.
test: vet lint ## every test: vet, golangci-lint, race-enabled unit + integration tests, cross-arch suites under qemu, deploy tests
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v /deploy/arm)
	$(MAKE) --no-print-directory test-cross

clean: ## remove build outputs
	rm -rf bin dist

-include deploy/arm/arm.mk
-include bench/bench.mk
