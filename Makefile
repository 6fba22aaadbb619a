# chainwatch — see README.md. `make run` and `make test` are the two set-up
# commands; everything else is for development.
GO      ?= go
BIN     := bin/chainwatch
PKGS    := ./...

.PHONY: all build run test test-short race bench bench-go bench-models vet fmt clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/chainwatch

## run: the main job on the embedded default (in-process Kafka broker,
## embedded ledger, simulated fleet, detection pipeline) until Ctrl-C.
run: build
	./$(BIN) run

## test: every test, as CI runs it (the chaincode and benchmark harness are
## modules of their own, so they are vetted and tested separately).
test: vet
	$(GO) test -count=1 -timeout 20m $(PKGS)
	cd ledgerclient/fabric/chaincode && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd models/benchmarks && $(GO) vet ./...

## test-short: unit tests only, skipping end-to-end runs.
test-short:
	$(GO) test -short -count=1 $(PKGS)

## race: every test under the race detector (slower).
race:
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

vet:
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi

## bench-go: Go micro-benchmarks of the hot paths.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## bench-models: isolation forest vs go-iforest and scikit-learn (speed),
## and accuracy on mlbench data sets; rewrites its section of docs/BENCHMARKS.md.
bench-models:
	models/benchmarks/run.sh

## bench: everything `docs/BENCHMARKS.md` reports.
bench: bench-go bench-models

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin chainwatch-data
