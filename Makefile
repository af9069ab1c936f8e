# sluice: `make run` starts the daemon on the built-in config, `make test` runs every test.

VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO        ?= go
BIN       := bin/sluice
LDFLAGS   := -X main.version=$(VERSION)
FUZZTIME  ?= 30s
GOLANGCI  := github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
VULNCHECK := golang.org/x/vuln/cmd/govulncheck@v1.9.0

.DEFAULT_GOAL := help

.PHONY: help build run test lint vulncheck fuzz bench tidy-check

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-10s %s\n", $$1, $$2}'

build: ## Build bin/sluice
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/sluice

run: build ## Build and start the daemon (built-in config, data in ./data)
	./$(BIN) serve

test: ## Run every test with the race detector (external tools: see .ci/run)
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...

lint: tidy-check ## gofmt, vet and golangci-lint (import rules, errors, security)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) run $(GOLANGCI) run ./...

vulncheck: ## govulncheck (needs access to vuln.go.dev, which sandboxed CI machines do not have)
	$(GO) run $(VULNCHECK) ./...

tidy-check: ## go.mod and go.sum are tidy
	$(GO) mod tidy -diff

fuzz: ## Run every fuzz target for FUZZTIME each (default 30s)
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

bench: ## Run the Go benchmarks with allocation counts
	$(GO) test -run '^$$' -bench . -benchmem ./...
