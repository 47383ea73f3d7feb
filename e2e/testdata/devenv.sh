#!/usr/bin/env bash
# devenv.sh DIR: sources each environment file `gateway dev` wrote into DIR
# and runs etcdctl and consul with no TLS flags at all, as web and as admin.
# It prints PASS at the end, or FAIL and what failed.
set -u
dir=$1
fail() { echo "FAIL: $*"; exit 1; }

if env | grep -q -E '^(ETCDCTL|CONSUL)_'; then fail "the environment was not clean"; fi

source "$dir/web.env"
etcdctl put /app/devenv from-web >/dev/null || fail "web: etcdctl put /app/devenv"
got=$(etcdctl get /app/devenv --print-value-only) || fail "web: etcdctl get /app/devenv"
[ "$got" = from-web ] || fail "web: etcdctl get /app/devenv gave '$got'"
if out=$(etcdctl put /other/devenv from-web 2>&1); then fail "web: etcdctl put /other/devenv succeeded"; fi
grep -q "etcdserver: permission denied" <<<"$out" || fail "web: etcdctl put /other/devenv: $out"
consul kv put app/devenv from-web >/dev/null || fail "web: consul kv put app/devenv"
got=$(consul kv get app/devenv) || fail "web: consul kv get app/devenv"
[ "$got" = from-web ] || fail "web: consul kv get app/devenv gave '$got'"
if out=$(consul kv put other/devenv from-web 2>&1); then fail "web: consul kv put other/devenv succeeded"; fi
grep -q "403 (Permission denied" <<<"$out" || fail "web: consul kv put other/devenv: $out"

source "$dir/admin.env"
etcdctl put /other/devenv from-admin >/dev/null || fail "admin: etcdctl put /other/devenv"
etcdctl member list >/dev/null || fail "admin: etcdctl member list"
consul kv put other/devenv from-admin >/dev/null || fail "admin: consul kv put other/devenv"
echo PASS
