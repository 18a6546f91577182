#!/usr/bin/env bash
# The whole test suite, what `make test` runs: the prerequisites (tests/prerequisites.sh
# installs and starts them on a fresh Debian machine as root), formatting and lints, then every
# unit and end-to-end test. As root it also makes a GlusterFS test volume for the jobs and
# swarm tests (removed again however the tests end) and turns on the swarm end-to-end test,
# which deploys the stack from the release binaries on this Docker engine, and the cluster
# test, which deploys it on three Docker hosts it starts as containers.
#
# Usage: tests/suite.sh [cargo test arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n==> %s\n' "$*"; }

tests/prerequisites.sh

say "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

if [ "$(id -u)" = 0 ] && command -v glusterd >/dev/null && command -v mount.glusterfs >/dev/null \
    && [ -z "${CELLGATE_GLUSTER_MOUNTS:-}" ]; then
    gluster_dir=${TMPDIR:-/tmp}/cellgate-test-gluster
    gluster/test-volume.sh down "$gluster_dir"
    trap 'gluster/test-volume.sh down "$gluster_dir"' EXIT
    say "a GlusterFS test volume"
    mounts=$(gluster/test-volume.sh up "$gluster_dir")
    export "${mounts?}"
    say "$mounts"
fi

if [ "$(id -u)" = 0 ] && docker info >/dev/null 2>&1; then
    [ -n "${CELLGATE_SWARM_TESTS:-}" ] || export CELLGATE_SWARM_TESTS=1
    [ -n "${CELLGATE_CLUSTER_TESTS:-}" ] || export CELLGATE_CLUSTER_TESTS=1
    # Test clusters an interrupted run left behind (the test removes its own however it fails).
    for cluster in $(docker ps -a --filter label=org.cellgate.cluster \
        --format '{{.Label "org.cellgate.cluster"}}' | grep '^cellgate-test-' | sort -u); do
        CLUSTER=$cluster cluster/down.sh
    done
fi
if [ "${CELLGATE_SWARM_TESTS:-}" = 1 ] || [ "${CELLGATE_CLUSTER_TESTS:-}" = 1 ]; then
    # `make deploy` inside the swarm and cluster tests cannot run cargo itself.
    say "release binaries for the swarm and cluster tests"
    cargo build --release --workspace --bins
fi

say "toolchain: $(cargo --version), $(python3 --version), node $(node --version 2>/dev/null || echo none)"
say "cargo test"
cargo test --workspace --lib --bins --tests --no-fail-fast "$@"
