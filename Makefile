# sluice: `make run` starts the daemon on the built-in config, `make test` runs every test.

VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO        ?= go
BIN       := bin/sluice
LDFLAGS   := -X main.version=$(VERSION)
FUZZTIME  ?= 30s
# Minimizing a new interesting input stops the whole run until it ends (up to 60s by default):
# bound it by count so that FUZZTIME is spent fuzzing.
FUZZMIN   ?= 100x
FUZZPKGS  ?= ./...
GOLANGCI  := github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
VULNCHECK := golang.org/x/vuln/cmd/govulncheck@v1.9.0

.DEFAULT_GOAL := help

.PHONY: help build run test lint vulncheck fuzz bench tidy-check soak

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-10s %s\n", $$1, $$2}'

build: ## Build bin/sluice
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/sluice

run: build ## Build and start the daemon (built-in config, data in ./data)
	./$(BIN) serve

test: ## Run every test with the race detector (external tools: see .ci/run)
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...
	# LiveKit's Go SDK as a second client, in its own module (kept out of sluice's dependencies);
	# -mod=mod: it requires sluice from this tree, whose dependency bumps it follows.
	cd sfu/livekit/testdata/gosdk && $(GO) vet -mod=mod ./... && $(GO) test -mod=mod -race -count=1 -timeout 5m ./...

SOAK      ?= 10m

soak: ## Run the churn soak (RTMP/WHIP/RTSP joins and leaves) for SOAK (default 10m); not in make test
	SLUICE_SOAK=$(SOAK) $(GO) test -race -count=1 -timeout 60m -v -run '^TestChurnSoak$$' ./cmd/sluice/

lint: tidy-check ## gofmt, vet and golangci-lint (import rules, errors, security)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) run $(GOLANGCI) run ./...

vulncheck: ## govulncheck (needs access to vuln.go.dev, which sandboxed CI machines do not have)
	$(GO) run $(VULNCHECK) ./...

tidy-check: ## go.mod and go.sum are tidy
	$(GO) mod tidy -diff

# A run that fails with "context deadline exceeded" and writes no failing input is Go's
# coordinator race at the end of -fuzztime (golang/go#75804, fixed in Go 1.27), not a finding.
fuzz: ## Run every fuzz target (of FUZZPKGS) for FUZZTIME each (default 30s)
	@log=$$(mktemp); trap 'rm -f $$log $$log.rc' EXIT; \
	for pkg in $$($(GO) list $(FUZZPKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    { $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) $$pkg; echo $$? >$$log.rc; } 2>&1 | tee $$log; \
	    [ "$$(cat $$log.rc)" = 0 ] && continue; \
	    if grep -q '^    context deadline exceeded$$' $$log && ! grep -q 'Failing input written' $$log; then \
	      echo "== $$f: ended by golang/go#75804 (no failing input): not a finding"; continue; \
	    fi; \
	    exit 1; \
	  done; \
	done

bench: ## Run the Go benchmarks with allocation counts
	$(GO) test -run '^$$' -bench . -benchmem ./...
