#!/usr/bin/env bash
# `just bench`: builds in release mode and runs every scenario against sora-server and its
# baselines (pgbench, nginx, a bare WebSocket server) in one run; prints one table and writes it
# with the raw figures under target/bench/. See docs/performance.md.
#
#   bash bench/run.sh            # the full run (about 7 minutes)
#   bash bench/run.sh --smoke    # a few seconds per scenario, no budgets judged (CI)
#   bash bench/run.sh --only create,webhook
#   bash bench/run.sh --smoke --debug   # debug builds (what CI has built already); smoke only
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust; BENCH_PG_URL overrides) with
# pgbench, and nginx: a full run installs them from Debian's packages when missing and we are
# root; a smoke run installs nothing and skips a missing baseline.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*" >&2; }

install_pkg() {
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; } \
      || step "could not install $* (a smoke run skips that baseline; a full run fails)"
  fi
}

# A smoke run installs nothing: a missing baseline tool is a remark in its table.
smoke=0
for a in "$@"; do [ "$a" = "--smoke" ] && smoke=1; done
if [ "$smoke" -eq 0 ]; then
  command -v pgbench >/dev/null 2>&1 || install_pkg postgresql-client
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || install_pkg nginx-light
fi

# PostgreSQL is usually running on these machines; start it if it is down.
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    step "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  fi
fi

# 10,000 WebSocket clients and as many server sockets: raise the open-file limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# `--debug` (ours, not sora-bench's): use the dev profile, for smoke runs on a CI that has built it.
profile=release
args=()
for a in "$@"; do
  if [ "$a" = "--debug" ]; then profile=debug; else args+=("$a"); fi
done
cargo_profile=(--release)
[ "$profile" = debug ] && cargo_profile=()

# One package per command, as everyone builds them (one command for both would unify their
# features and build every dependency a third time).
step "cargo build ${cargo_profile[*]} -p sora-server; cargo build ${cargo_profile[*]} -p sora-bench"
cargo build "${cargo_profile[@]}" -p sora-server
cargo build "${cargo_profile[@]}" -p sora-bench

export PATH="$PATH:/usr/sbin"
exec "target/$profile/sora-bench" run --server-bin "target/$profile/sora-server" --repo . --out target/bench ${args[@]+"${args[@]}"}
