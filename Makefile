# storegate — the two commands are `make run` and `make test`.
GO        ?= go
BIN       := $(CURDIR)/bin
TOOLS_MOD := tools/etcd
CONSUL_MOD := tools/consul
GOTESTFLAGS ?=

.PHONY: run test bench build tools consul check policy-test clean

## run: start the gateway on its embedded default (in-process etcd, dev CA, example policies)
run: build tools
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

## test: every test — OPA policy tests, unit tests and end-to-end tests, with the race detector
test: tools policy-test
	$(GO) test -race -count=1 -timeout 30m $(GOTESTFLAGS) ./...

## policy-test: the shipped policies' _test.rego, run by OPA's test runner
policy-test:
	$(GO) run ./cmd/gateway policy test --dir policies

## bench: etcd Range/Put direct vs storegate vs etcd grpc-proxy, tracing cost (off / 1% / 100% over OTLP), Consul KV, and policy evaluation cost
bench: build tools
	$(GO) test -run '^$$' -bench 'BenchmarkAuthorize$$' -benchmem ./policy/
	$(GO) test -run '^$$' -bench 'BenchmarkAuthorizeLatency' -benchtime 1x ./policy/
	$(GO) run ./bench

## check: formatting, vet and tidy modules (fails if anything would change)
check:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1)
	$(GO) vet ./...
	$(GO) mod tidy -diff
	cd $(TOOLS_MOD) && $(GO) mod tidy -diff
	cd $(CONSUL_MOD) && $(GO) mod tidy -diff

clean:
	rm -rf $(BIN) .storegate-dev
