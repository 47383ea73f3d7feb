# storegate — the two commands are `make run` and `make test`.
GO        ?= go
BIN       := $(CURDIR)/bin
TOOLS_MOD := tools/etcd
CONSUL_MOD := tools/consul
SPIRE_MOD := tools/spire
HELM_MOD  := tools/helm
SPIRE_LDFLAGS := -X github.com/spiffe/spire/pkg/common/version.gittag=1.13.3
GOTESTFLAGS ?=

.PHONY: run test bench build tools consul spire helm check policy-test plugins clang clean fuzz haproxy openssl soak deploy-test

PLUGIN_BIN := $(BIN)/plugins
GO_PLUGINS := schema namespace encrypt registration
# clang for wasm32-wasi, from Debian's packages (installed when missing).
CLANG_PKGS := clang lld wasi-libc libclang-rt-14-dev-wasm32

## run: start the gateway on its embedded default (in-process etcd, dev CA, example policies and plugins)
run: build tools plugins
	$(BIN)/gateway dev --dir .storegate-dev --policies policies

## build: the gateway binary
build:
	$(GO) build -o $(BIN)/gateway ./cmd/gateway

## tools: etcd (with grpc-proxy) and etcdctl v3.7.3, and Consul 1.14.11, built from their modules into bin/
tools: $(BIN)/etcd $(BIN)/etcdctl $(BIN)/consul

$(BIN)/etcdctl: $(TOOLS_MOD)/go.mod $(TOOLS_MOD)/go.sum
	cd $(TOOLS_MOD) && $(GO) build -o $(BIN)/etcdctl go.etcd.io/etcd/etcdctl/v3

$(BIN)/etcd: $(TOOLS_MOD)/go.mod $(TOOLS_MOD)/go.sum $(TOOLS_MOD)/cmd/etcd/main.go
	cd $(TOOLS_MOD) && $(GO) build -o $(BIN)/etcd ./cmd/etcd

## consul: the Consul 1.14.11 agent and CLI (for the Consul front; ~6 min and ~9 CPU-min the first time)
consul: $(BIN)/consul

$(BIN)/consul: $(CONSUL_MOD)/go.mod $(CONSUL_MOD)/go.sum
	cd $(CONSUL_MOD) && $(GO) build -o $(BIN)/consul github.com/hashicorp/consul

## plugins: the example WebAssembly plugins (Go, GOOS=wasip1; C, clang + wasi-libc) into bin/plugins
plugins: $(addprefix $(PLUGIN_BIN)/,$(addsuffix .wasm,$(GO_PLUGINS))) $(PLUGIN_BIN)/limits.wasm

$(PLUGIN_BIN)/%.wasm: plugins/examples/%/*.go plugins/examples/go.mod plugins/sdk/*.go plugins/sdk/go.mod
	cd plugins/examples && GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -o $@ ./$*

$(PLUGIN_BIN)/limits.wasm: plugins/examples/limits/limits.c plugins/sdk/c/storegate.h | clang
	@mkdir -p $(PLUGIN_BIN)
	clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wl,--strip-debug -I plugins/sdk/c -o $@ plugins/examples/limits/limits.c

## clang: install clang, lld and wasi-libc from Debian's packages if clang cannot build for wasm32-wasi
clang:
	@echo 'int main(void){return 0;}' | clang --target=wasm32-wasi -x c -o /dev/null - 2>/dev/null || \
		{ echo "installing $(CLANG_PKGS) (apt-get)"; export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q $(CLANG_PKGS) >/dev/null || \
		  { apt-get update -q >/dev/null && apt-get install -y -q $(CLANG_PKGS) >/dev/null; }; }

## haproxy: HAProxy from Debian's package (the L4 balancer the fleet tests put in front of the gateways), installed when missing
haproxy:
	@command -v haproxy >/dev/null 2>&1 || test -x /usr/sbin/haproxy || \
		{ echo "installing haproxy (apt-get)"; export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q haproxy >/dev/null || \
		  { apt-get update -q >/dev/null && apt-get install -y -q haproxy >/dev/null; }; }

## openssl: the openssl CLI from Debian's package (the key-format tests make keys with it), installed when missing
openssl:
	@command -v openssl >/dev/null 2>&1 || \
		{ echo "installing openssl (apt-get)"; export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q openssl >/dev/null || \
		  { apt-get update -q >/dev/null && apt-get install -y -q openssl >/dev/null; }; }

## helm: the Helm v4.3.2 CLI, built from its module into bin/ (for the chart's tests)
helm: $(BIN)/helm

$(BIN)/helm: $(HELM_MOD)/go.mod $(HELM_MOD)/go.sum
	cd $(HELM_MOD) && $(GO) build -o $(BIN)/helm helm.sh/helm/v4/cmd/helm

## spire: the SPIRE 1.13.3 server and agent, for the SPIFFE tests (~20 CPU-min the first time)
spire: $(BIN)/spire-server $(BIN)/spire-agent

# spire-server's sqlite3 datastore needs cgo: without it SPIRE builds, then refuses sqlite3 at run time.
$(BIN)/spire-server: $(SPIRE_MOD)/go.mod $(SPIRE_MOD)/go.sum
	cd $(SPIRE_MOD) && CGO_ENABLED=1 $(GO) build -ldflags '$(SPIRE_LDFLAGS)' -o $(BIN)/spire-server github.com/spiffe/spire/cmd/spire-server

$(BIN)/spire-agent: $(SPIRE_MOD)/go.mod $(SPIRE_MOD)/go.sum
	cd $(SPIRE_MOD) && $(GO) build -ldflags '$(SPIRE_LDFLAGS)' -o $(BIN)/spire-agent github.com/spiffe/spire/cmd/spire-agent

## test: every test — OPA policy tests, unit tests and end-to-end tests, with the race detector, and each fuzz target briefly (20,000 inputs: a count, not a time, since a time limit that expires while an input is being minimized fails the run)
test: tools spire plugins haproxy openssl policy-test
	$(GO) test -race -count=1 -timeout 30m $(GOTESTFLAGS) ./...
	$(MAKE) deploy-test
	$(MAKE) fuzz FUZZTIME=20000x
	cd plugins/sdk && $(GO) test -count=1 ./...
	cd plugins/examples && $(GO) test -count=1 ./...

## deploy-test: the Helm chart (helm lint and template per value set, every object decoded strictly into its k8s.io/api type), the Grafana dashboard and the Prometheus alerts (real parsers, every metric and label checked against a live gateway's /metrics)
deploy-test: helm build tools consul plugins
	cd deploy/helm && $(GO) test -race -count=1 ./...
	cd deploy/monitoring && $(GO) test -count=1 ./...

## policy-test: the shipped policies' _test.rego, run by OPA's test runner
policy-test:
	$(GO) run ./cmd/gateway policy test --dir policies

## bench: etcd Range/Put direct vs storegate vs etcd grpc-proxy, tracing cost (off / 1% / 100% over OTLP), Consul KV, and policy evaluation cost
bench: build tools plugins
	$(GO) test -run '^$$' -bench 'BenchmarkAuthorize$$' -benchmem ./policy/
	$(GO) test -run '^$$' -bench 'BenchmarkAuthorizeLatency' -benchtime 1x ./policy/
	$(GO) run ./bench

## soak: mixed load (both stores, watches, leases, locks, sessions, plugins) through two gateways behind HAProxy for 10 minutes (or STOREGATE_SOAK, a Go duration); fails if a gateway's heap, goroutines or open fds grow past the bounds stated in e2e/soak (make test runs it for 60s)
soak: tools consul plugins haproxy
	STOREGATE_SOAK=$${STOREGATE_SOAK:-10m} $(GO) test -count=1 -timeout 60m -v -run '^TestSoak$$' ./e2e/soak/

## fuzz: each fuzz target for $(FUZZTIME) (default 60s), one after the other (KeyRange, unknown etcd fields, policy globs, plugin results)
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzKeyRangePrefix$$' -fuzztime $(FUZZTIME) ./gate/
	$(GO) test -run '^$$' -fuzz '^FuzzKeyRangeOverlaps$$' -fuzztime $(FUZZTIME) ./gate/
	$(GO) test -run '^$$' -fuzz '^FuzzUnknownFields$$' -fuzztime $(FUZZTIME) ./proxy/etcd/
	$(GO) test -run '^$$' -fuzz '^FuzzGlob$$' -fuzztime $(FUZZTIME) ./policy/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeResult$$' -fuzztime $(FUZZTIME) ./plugins/

## check: formatting, vet and tidy modules (fails if anything would change)
check:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1)
	$(GO) vet ./...
	$(GO) mod tidy -diff
	cd $(TOOLS_MOD) && $(GO) mod tidy -diff
	cd $(CONSUL_MOD) && $(GO) mod tidy -diff
	cd $(SPIRE_MOD) && $(GO) mod tidy -diff
	cd $(HELM_MOD) && $(GO) mod tidy -diff
	cd deploy/helm && $(GO) mod tidy -diff && $(GO) vet ./...
	cd deploy/monitoring && $(GO) mod tidy -diff && $(GO) vet ./...
	cd plugins/sdk && $(GO) mod tidy -diff && $(GO) vet ./... && GOOS=wasip1 GOARCH=wasm $(GO) vet ./...
	cd plugins/examples && $(GO) mod tidy -diff && GOOS=wasip1 GOARCH=wasm $(GO) vet ./...

clean:
	rm -rf $(BIN) .storegate-dev
