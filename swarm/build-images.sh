#!/usr/bin/env bash
# Builds the service images of the swarm stack: cellgate/gateway, cellgate/runner,
# cellgate/nginx and (for multi-node swarms) cellgate/registry. The gateway and runner take the
# host-built release binaries from a staging folder (target/docker-stage), so the images hold
# no Rust toolchain; run `make build` first.
#
# Environment: IMAGE_PREFIX (default cellgate/), IMAGE_TAG (default latest).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${IMAGE_PREFIX:-cellgate/}
tag=${IMAGE_TAG:-latest}
stage="$root/target/docker-stage"

say() { printf '==> %s\n' "$*"; }

for binary in cellgate-gateway cellgate-runner; do
    if [ ! -x "$root/target/release/$binary" ]; then
        echo "target/release/$binary is missing: run \`make build\` first" >&2
        exit 1
    fi
done

build() { # build NAME CONTEXT
    say "building ${prefix}$1:${tag}"
    docker build --quiet --tag "${prefix}$1:${tag}" --file "$root/images/$1/Dockerfile" "$2" >/dev/null
}

for service in gateway runner; do
    rm -rf "${stage:?}/$service"
    mkdir -p "$stage/$service"
    cp "$root/target/release/cellgate-$service" "$root/swarm/cellgate-entrypoint" "$stage/$service/"
    build "$service" "$stage/$service"
done

rm -rf "${stage:?}/nginx"
mkdir -p "$stage/nginx"
cp "$root/nginx/cellgate.conf" "$root/nginx/follow-upstreams.sh" "$stage/nginx/"
build nginx "$stage/nginx"

"$root/images/build.sh" registry
