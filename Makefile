# Portico — see README.md.
GO      ?= go
BIN     := bin
CACHE   ?= $(HOME)/.cache/portico

.PHONY: all build run test unit e2e conformance bench bench-attack fuzz fmt lint clean topology-ui istio-diff

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Standalone mode on the quickstart: demo backends + controller + embedded
# proxy. Ctrl-C stops everything.
run: build
	@./hack/run-quickstart.sh

# The whole test suite: lint (gofmt, vet, staticcheck), unit and integration
# tests with the race detector, the hostile-input suite, h2spec against the
# proxy (built once into ~/.cache/portico), then the end-to-end tests
# against a real kube-apiserver.
test: lint
	./hack/ensure-test-deps.sh
	H2SPEC=$$(./hack/h2spec.sh) $(GO) test -race -count=1 -timeout 30m ./...
	# Gateway API conformance, the GATEWAY-HTTP, -TLS, -GRPC and -TCP
	# profiles (issue 15): the upstream suite in the container-free
	# cluster of test/conformance.
	cd test/conformance && flock /tmp/portico-e2e.lock $(GO) test -count=1 -timeout 40m . \
		-args -conformance.budget 30m -conformance.report $$(mktemp -d)/report.yaml

unit:
	$(GO) test -race -count=1 ./pkg/... ./internal/... ./cmd/...

e2e:
	./hack/ensure-test-deps.sh
	$(GO) test -count=1 -timeout 30m -v ./test/e2e/...

# The upstream Gateway API conformance suite (GATEWAY-HTTP, -TLS, -GRPC,
# -TCP) against Portico in the container-free cluster of test/conformance
# (a nested module; root, iproute2). Writes conformance/reports/portico.yaml.
# CONFORMANCE_FLAGS, e.g. "-conformance.run-test HTTPRouteSimpleSameNamespace".
CONFORMANCE_FLAGS ?=
conformance:
	./hack/ensure-test-deps.sh
	cd test/conformance && flock /tmp/portico-e2e.lock $(GO) test -count=1 -timeout 60m -v . -args $(CONFORMANCE_FLAGS)

bench:
	./bench/run.sh

# The Istio fidelity suite (issue 16): every case of test/istiodiff/cases
# through Istio's own xDS generator and through Portico; fails on a
# route-table difference not listed in test/istiodiff/explained.tsv.
# Not part of `make test` (builds Istio's module once; needs root).
istio-diff: build
	./hack/istio-diff.sh $(ISTIO_DIFF_CASES)

# Hostile loads against Portico and nginx side by side (bench/attack):
# ATTACK_FLAGS, e.g. "-duration 10s -label after".
ATTACK_FLAGS ?=
bench-attack:
	./bench/attack/run.sh $(ATTACK_FLAGS)

# Fuzzing: every fuzz target for FUZZTIME each, with its executions per
# second (hack/fuzz.sh; FUZZ_OUT=file.md keeps the table, FUZZ_FRESH=1 starts
# from the seed corpus). Add new targets to FUZZ_TARGETS as package:Func.
FUZZTIME ?= 30s
FUZZ_TARGETS ?= \
	pkg/proxy/httpx:FuzzReadRequest \
	pkg/proxy/httpx:FuzzChunkedBody \
	pkg/proxy/hcm:FuzzH2Request \
	pkg/proxy/router:FuzzVirtualHost \
	pkg/proxy/xdsclient:FuzzDeltaResponseDecode \
	pkg/proxy/listener:FuzzClientHello \
	pkg/proxy/filters/jwtauthn:FuzzJWT \
	pkg/gateway:FuzzDecodeAndBind \
	pkg/resource:FuzzFastYAMLEqualsYAMLv2 \
	pkg/translate:FuzzYAMLToXDS
fuzz:
	./hack/fuzz.sh -t $(FUZZTIME) $(if $(FUZZ_OUT),-o $(FUZZ_OUT)) $(FUZZ_TARGETS)

fmt:
	gofmt -w $$(git ls-files '*.go')

# gofmt, go vet and staticcheck (built once into ~/.cache/portico).
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	./hack/staticcheck.sh

clean:
	rm -rf $(BIN)

# The topology page's JavaScript bundle (pkg/topology/ui/dist), rebuilt
# with npm + esbuild from package.json and package-lock.json. The bundle is
# committed, so `make build` needs no npm; TOPOLOGY_UI_FLAGS=--check only
# verifies that the committed bundle is what the sources build to.
topology-ui:
	./hack/topology-ui.sh $(TOPOLOGY_UI_FLAGS)
