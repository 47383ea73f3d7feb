# storegate — the two commands are `make run` and `make test`.
GO        ?= go
BIN       := $(CURDIR)/bin
TOOLS_MOD := tools/etcd
GOTESTFLAGS ?=

.PHONY: run test bench build tools check policy-test clean

## run: start the gateway on its embedded default (in-process etcd, dev CA, example policies)
run: build tools
	$(BIN)/gateway dev --dir .storegate-dev --policies policies

## build: the gateway binary
build:
	$(GO) build -o $(BIN)/gateway ./cmd/gateway

## tools: etcd (with grpc-proxy) and etcdctl v3.7.3, built from their modules into bin/
tools: $(BIN)/etcd $(BIN)/etcdctl

$(BIN)/etcdctl: $(TOOLS_MOD)/go.mod $(TOOLS_MOD)/go.sum
	cd $(TOOLS_MOD) && $(GO) build -o $(BIN)/etcdctl go.etcd.io/etcd/etcdctl/v3

$(BIN)/etcd: $(TOOLS_MOD)/go.mod $(TOOLS_MOD)/go.sum $(TOOLS_MOD)/cmd/etcd/main.go
	cd $(TOOLS_MOD) && $(GO) build -o $(BIN)/etcd ./cmd/etcd

## test: every test — OPA policy tests, unit tests and end-to-end tests, with the race detector
test: tools policy-test
	$(GO) test -race -count=1 -timeout 30m $(GOTESTFLAGS) ./...

## policy-test: the shipped policies' _test.rego, run by OPA's test runner
policy-test:
	$(GO) run ./cmd/gateway policy test --dir policies

## bench: etcd Range/Put direct vs storegate vs etcd grpc-proxy, and policy evaluation cost
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

clean:
	rm -rf $(BIN) .storegate-dev
