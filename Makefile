# edgecert: `make test` is the one test command (unit tests, then the e2e
# suite against the real Docker Engine). `make image` builds edgecert:local.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
PEBBLE  := v2.10.1
# staticcheck with its default checks (bugs, simplifications, style that
# hides bugs): no configuration of ours. Pinned, fetched by `go run`.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN     := build/bin
export DOCKER_BUILDKIT := 0
UNIT    := $(shell $(GO) list ./... | grep -v /e2e)

.PHONY: all setup build image tools test-images lint unit compose-check e2e test test-podman soak soak-cluster flake fuzz bench bench-e2e clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o build/edgecert ./cmd/edgecert

# The image, built by the Dockerfile with no registry: its build stage is made
# from this machine's Go toolchain and module cache (e2e/images/builder.sh).
# DNS_PROVIDERS=all (default) links every one of lego's DNS providers; the e2e
# suite builds DNS_PROVIDERS=minimal (rfc2136, exec, httpreq), minutes faster.
DNS_PROVIDERS ?= all
image:
	DNS_PROVIDERS=$(DNS_PROVIDERS) e2e/images/builder.sh
	docker build -q --build-arg GO_IMAGE=edgecert-builder:local --build-arg VERSION=$(VERSION) \
		--build-arg DNS_PROVIDERS=$(DNS_PROVIDERS) -t edgecert:local . >/dev/null
	@echo "built edgecert:local ($(VERSION), DNS_PROVIDERS=$(DNS_PROVIDERS)), $$(docker image inspect -f '{{.Size}}' edgecert:local) bytes"

tools:
	CGO_ENABLED=0 GOBIN=$(CURDIR)/$(BIN) $(GO) install \
		github.com/letsencrypt/pebble/v2/cmd/pebble@$(PEBBLE) \
		github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@$(PEBBLE)
	CGO_ENABLED=0 $(GO) build -o $(BIN)/testapp ./e2e/testapp
	e2e/images/etcd.sh

test-images: setup tools
	$(MAKE) --no-print-directory image DNS_PROVIDERS=minimal
	e2e/images/build.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt would change:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# The cluster's tests run the real etcd server (e2e/images/etcd.sh builds it
# from etcd's module source); the full DNS build is compiled and checked too.
unit: lint
	e2e/images/etcd.sh
	$(GO) test -race -count=1 $(UNIT)
	$(GO) test -count=1 -tags dnsall -run 'DNS' ./acme/legoissuer

e2e: test-images
	EDGECERT_E2E=1 EDGECERT_E2E_LOGS=$(CURDIR)/build/e2e-logs $(GO) test -count=1 -v -parallel 6 -timeout 30m ./e2e

# Every compose file users copy must stay valid Compose Specification (checked by
# `docker compose` when it is installed, docker-compose otherwise), and the socket
# proxy's HAProxy configuration too.
COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
compose-check:
	@for f in compose/*.yml compose/*/docker-compose.yml; do \
	  ! grep -q '^version:' $$f || { echo "$$f: the obsolete version: key"; exit 1; }; \
	  $(COMPOSE) -f $$f config -q && echo "compose ok ($(COMPOSE)): $$f" || exit 1; done
	@haproxy -c -q -f compose/socket-proxy/haproxy.cfg && echo "haproxy config ok: compose/socket-proxy/haproxy.cfg"

# Debian packages and a Docker Engine: installed when missing (as root), or the
# command to run is printed.
setup:
	@e2e/setup.sh

test: setup unit compose-check e2e

# The engine-neutral part of the e2e suite against Podman's Docker-compatible
# API (rootful, netavark), with the same images: e2e/podman.sh installs and
# starts what it needs. CI runs it after make test.
PODMAN_TESTS := ^(TestLoop|TestInvalidLabel|TestBrokenConfig|TestDNS01|TestStatusPageInABrowser)$$
test-podman: test-images
	e2e/podman.sh
	DOCKER_HOST=unix:///run/podman/podman.sock EDGECERT_E2E_PODMAN=1 EDGECERT_E2E=1 EDGECERT_E2E_LOGS=$(CURDIR)/build/e2e-logs/podman \
		$(GO) test -count=1 -v -parallel 4 -timeout 20m -run '$(PODMAN_TESTS)' ./e2e

# The crash campaign with 200 kills (make test runs 30): prints its counts.
soak: test-images
	EDGECERT_E2E=1 EDGECERT_E2E_CRASH_KILLS=200 EDGECERT_E2E_LOGS=$(CURDIR)/build/e2e-logs $(GO) test -count=1 -v -run 'TestCrashCampaign' -timeout 90m ./e2e | grep -E 'MEASURE|^(---|ok|FAIL|PASS)'

# The cluster's fault campaign with 200 faults (make test runs 30): prints its counts.
soak-cluster: test-images
	EDGECERT_E2E=1 EDGECERT_E2E_CLUSTER_FAULTS=200 EDGECERT_E2E_LOGS=$(CURDIR)/build/e2e-logs $(GO) test -count=1 -v -run 'TestClusterFaults' -timeout 180m ./e2e | grep -E 'MEASURE|cluster fault|^(---|ok|FAIL|PASS)'

# The unit suite 20 times with -race under -cpu 1,2 and a CPU burner per core beside it:
# a hunt for flaky tests (FLAKE_COUNT=N to change the count, FLAKE_BURNERS=N the burners). About 1 h here.
flake:
	e2e/images/etcd.sh
	e2e/flake.sh

# The end-to-end benchmark (issue 11's table): one certificate 5 times, 10 at once, idle memory,
# a restart, and requests under load across 20 renewals. make test runs a small smoke of it.
bench-e2e: test-images
	@mkdir -p build
	EDGECERT_E2E=1 EDGECERT_BENCH=full EDGECERT_E2E_LOGS=$(CURDIR)/build/e2e-logs $(GO) test -count=1 -v -run '^TestBench(Scale)?$$' -timeout 60m ./e2e >build/bench-e2e.log 2>&1; \
	st=$$?; awk '/^BENCH$$/{p=1;print;next} p&&/^\|/{print;next} {p=0}' build/bench-e2e.log; grep -E '^(--- |ok|FAIL)|Error' build/bench-e2e.log; exit $$st

# Each fuzz target for FUZZTIME (their seed corpora run in make unit).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./dockerwatch
	$(GO) test -run '^$$' -fuzz '^FuzzValidateName$$' -fuzztime $(FUZZTIME) ./acme
	$(GO) test -run '^$$' -fuzz '^FuzzStateDecoding$$' -fuzztime $(FUZZTIME) ./acme
	$(GO) test -run '^$$' -fuzz '^FuzzReadVersion$$' -fuzztime $(FUZZTIME) ./acme

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(UNIT)

clean:
	rm -rf build
