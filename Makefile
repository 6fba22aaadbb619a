# chainwatch — see README.md. `make run` and `make test` are the two set-up
# commands; everything else is for development.
GO      ?= go
BIN     := bin/chainwatch
PKGS    := ./...

.PHONY: all build run test test-short race bench bench-go bench-models bench-detection bench-rehearsal bench-soak bench-soak-trust bench-ledger vet fmt clean fabric-up fabric-down test-fabric dashboards

all: build

build:
	$(GO) build -o $(BIN) ./cmd/chainwatch

## run: the main job on the embedded default (in-process Kafka broker,
## embedded ledger, simulated fleet, detection pipeline) until Ctrl-C.
run: build
	./$(BIN) run

## test: every test, as CI runs it (the chaincode, the benchmark harness,
## the dashboards generator and the deployment checks are modules of their
## own, so that their dependencies stay out of the service; they are vetted
## and tested separately).
test: vet
	$(GO) test -count=1 -timeout 20m $(PKGS)
	cd ledgerclient/fabric/chaincode && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd models/benchmarks && $(GO) vet ./...
	cd dashboards && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 ./...

## dashboards: regenerate the Grafana dashboards' JSON in dashboards/ from
## the Go that builds them (a test fails when they differ).
dashboards:
	cd dashboards && $(GO) run ./cmd/generate

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
	@command -v kcat >/dev/null || echo "kcat not installed (apt-get install kcat): the end-to-end benchmark reports no kcat baseline"
	$(GO) test -run '^$$' -bench . -benchmem -skip DetectionQuality $(PKGS)

## bench-models: isolation forest vs go-iforest and scikit-learn (speed),
## and accuracy on mlbench data sets; rewrites its section of docs/BENCHMARKS.md.
bench-models:
	models/benchmarks/run.sh

## bench-detection: the whole service on three fleets (the simulator twice,
## and the independent campus generator in goflow2 JSON), each on three
## seeds, with an attack sweep from subtle to blatant; writes
## docs/bench/detection.md, which docs/DETECTION.md quotes. kcat (Debian) is
## the end-to-end benchmark's baseline consumer; install it for bench-go's
## ratio.
bench-detection:
	@mkdir -p docs/bench
	CHAINWATCH_DETECTION_SEEDS=3 CHAINWATCH_DETECTION_REPORT=$(CURDIR)/docs/bench/detection.md $(GO) test ./pipeline -run '^$$' -bench DetectionQuality -benchtime 1x -timeout 60m -v

## bench-rehearsal: the issue's new user through the released command —
## 60 campus devices registered with the CLI, goflow2 JSON produced from
## outside, a 2 h 20 min warm-up, ten attacks — at seeds 42 and 1…9;
## writes docs/bench/rehearsal.md, which docs/DETECTION.md quotes.
bench-rehearsal:
	@mkdir -p docs/bench
	cd cmd/chainwatch && CHAINWATCH_REHEARSAL_SEEDS=42,1,2,3,4,5,6,7,8,9 CHAINWATCH_REHEARSAL_REPORT=$(CURDIR)/docs/bench/rehearsal.md $(GO) test -run '^$$' -bench Rehearsal -benchtime 1x -timeout 30m -v .

## bench-soak: `chainwatch run` on the embedded default at ten times the
## simulator's default speed for 30 minutes, memory, lag, outbox depth and
## integrity findings sampled every 10 s into docs/bench/soak.md.
bench-soak:
	@mkdir -p docs/bench
	cd cmd/chainwatch && CHAINWATCH_SOAK=30m CHAINWATCH_SOAK_REPORT=$(CURDIR)/docs/bench/soak.md $(GO) test -run '^$$' -bench Soak -benchtime 1x -timeout 40m -v .

## bench-soak-trust: the same with the simulator's trust scenarios on, as
## `make run` plays them, into docs/bench/soak-trust.md.
bench-soak-trust:
	@mkdir -p docs/bench
	cd cmd/chainwatch && CHAINWATCH_SOAK=30m CHAINWATCH_SOAK_TRUST=1 CHAINWATCH_SOAK_REPORT=$(CURDIR)/docs/bench/soak-trust.md $(GO) test -run '^$$' -bench Soak -benchtime 1x -timeout 40m -v .

## bench-ledger: the embedded ledger's anchoring cost (transactions an
## hour, MiB a day) with 4 and 32 partitions; docs/BENCHMARKS.md records it.
bench-ledger:
	@mkdir -p docs/bench
	cd cmd/chainwatch && CHAINWATCH_LEDGER_COST=3m CHAINWATCH_LEDGER_COST_REPORT=$(CURDIR)/docs/bench/ledger.md $(GO) test -run '^$$' -bench LedgerCost -benchtime 1x -timeout 20m -v .

## bench: everything `docs/BENCHMARKS.md` and `docs/DETECTION.md` report.
bench: bench-go bench-models bench-detection bench-rehearsal

## fabric-up / fabric-down: a real single-organisation Fabric v2.5 network on
## loopback with the chainwatch chaincode as a service, from the release
## binaries in FABRIC_BIN (deploy/fabric/README.md).
fabric-up:
	deploy/fabric/network.sh up

fabric-down:
	deploy/fabric/network.sh down

## test-fabric: the Fabric backend's integration test; it stands up its own
## network, so run it with no other network up. Needs FABRIC_BIN.
test-fabric:
	@test -n "$(FABRIC_BIN)" || { echo "set FABRIC_BIN to Fabric v2.5 release binaries (deploy/fabric/README.md)"; exit 1; }
	$(GO) test -count=1 -v -run TestAgainstRealFabricNetwork ./ledgerclient/fabric/

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin chainwatch-data
