# bench/bench.mk — side-by-side benchmarks against mosquitto, and soak runs.
# Included by the top-level Makefile.
#
#   make bench               full run (several minutes); table on stdout and in bench/RESULTS.md
#   BENCH_QUICK=1 make bench one short run of each figure (under a minute)
#   make bench-readme        splice bench/RESULTS.md into README.md between the bench markers
#   make soak                storage crash test, 500 kill -9 cycles, then the bridge flap tests x20,
#                            then soak-powercut
#   make soak-powercut       the power-cut crash test (real edged on faultfs), 300 cuts

BENCH_BIN     := bin/edged-bench
BENCH_RESULTS ?= bench/RESULTS.md
BENCH_ARGS    ?=
SOAK_CYCLES   ?= 500
# The bridge's link-flap tests (in-process and real-process) repeated this many times.
FLAP_COUNT    ?= 20
# Power cuts in soak-powercut (test/powercut; needs root or fusermount3, and /dev/fuse).
POWERCUT_CUTS ?= 300
README        ?= README.md

.PHONY: bench bench-tool bench-readme soak soak-powercut

bench-tool:
	$(GO) build -trimpath -o $(BENCH_BIN) ./bench/cmd/edged-bench

bench: build bench-tool ## edged vs mosquitto (needs mosquitto): throughput, latency, durable ingest, drain, memory, CBOR vs JSON -> bench/RESULTS.md
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || { echo "bench: apt-get install mosquitto" >&2; exit 1; }
	./$(BENCH_BIN) -edged $(BIN) -o $(BENCH_RESULTS) $(BENCH_ARGS)

# Everything between the markers is replaced; the markers stay, so the splice can be repeated.
bench-readme: ## put bench/RESULTS.md into README.md between <!-- bench:start --> and <!-- bench:end -->
	@test -f $(BENCH_RESULTS) || { echo "bench-readme: no $(BENCH_RESULTS): run make bench first" >&2; exit 1; }
	@grep -q '^<!-- bench:start -->' $(README) && grep -q '^<!-- bench:end -->' $(README) || \
		{ echo "bench-readme: $(README) lacks the lines <!-- bench:start --> and <!-- bench:end -->" >&2; exit 1; }
	@awk -v res='$(BENCH_RESULTS)' ' \
		/^<!-- bench:start -->/ { print; while ((getline l < res) > 0) print l; skip = 1; next } \
		/^<!-- bench:end -->/   { skip = 0 } \
		!skip { print }' $(README) > $(README).tmp && mv $(README).tmp $(README)
	@echo "$(README): benchmark section replaced from $(BENCH_RESULTS)"

soak: ## long durability runs: storage kill -9 crash test, 500 cycles (SOAK_CYCLES=N); bridge link-flap tests x20 (FLAP_COUNT=N); the 60 s bandwidth-cap drain
	EDGED_SOAK_CYCLES=$(SOAK_CYCLES) $(GO) test -run TestCrash -count=1 -timeout 60m ./storage/
	$(GO) test -run 'LinkFlaps' -count=$(FLAP_COUNT) -timeout 60m ./bridge/
	EDGED_TRAFFIC_DRAIN=60s $(GO) test -run 'TestTrafficBandwidthCap' -count=1 -v -timeout 10m ./bridge/
	$(MAKE) --no-print-directory soak-powercut

soak-powercut: ## power-cut crash test: real edged on faultfs (FUSE), 300 cuts (POWERCUT_CUTS=N), then every acked message must arrive
	EDGED_POWERCUT_CUTS=$(POWERCUT_CUTS) $(GO) test -run 'TestPowerCut' -count=1 -v -timeout 120m ./test/powercut/

# The fleet soak needs root (network namespaces, veth, a bridge), nats-server and mosquitto.
# Its tables go to bench/FLEET.md and into bench/RESULTS.md between the fleet markers (a later
# `make bench` keeps that section).
FLEET_BIN  := bin/edged-fleet
FLEET_ARGS ?=
FLEET_MD   := bench/FLEET.md

.PHONY: soak-fleet
soak-fleet: build ## fleet soak (root): 20 gateways in network namespaces, links cut at random, vs a 3-node JetStream cluster, then vs mosquitto, 10 min each (FLEET_ARGS='-gateways N -duration D')
	$(GO) build -trimpath -o $(FLEET_BIN) ./bench/cmd/edged-fleet
	./$(FLEET_BIN) -edged $(BIN) -cloud nats -o $(FLEET_MD).nats $(FLEET_ARGS)
	./$(FLEET_BIN) -edged $(BIN) -cloud mosquitto -o $(FLEET_MD).mosquitto $(FLEET_ARGS)
	@{ echo '<!-- fleet:start -->'; echo '## Many gateways: fleet soak'; echo; cat $(FLEET_MD).nats; echo; cat $(FLEET_MD).mosquitto; echo '<!-- fleet:end -->'; } > $(FLEET_MD)
	@rm -f $(FLEET_MD).nats $(FLEET_MD).mosquitto
	@touch $(BENCH_RESULTS)
	@awk -v res='$(FLEET_MD)' ' \
		/^<!-- fleet:start -->/ { skip = 1; next } \
		/^<!-- fleet:end -->/   { skip = 0; next } \
		!skip { print } \
		END { print ""; while ((getline l < res) > 0) print l }' $(BENCH_RESULTS) > $(BENCH_RESULTS).tmp && mv $(BENCH_RESULTS).tmp $(BENCH_RESULTS)
	@echo "$(BENCH_RESULTS): fleet section replaced from $(FLEET_MD)"
