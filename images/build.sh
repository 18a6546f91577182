#!/usr/bin/env bash
# Builds cellgate's images: one per language, each with its driver, and the registry that
# multi-node swarms pull them from, all on debian:bookworm-slim.
# When that base image is neither present nor pullable (a host without access to a registry),
# it is made locally: mmdebstrap builds a minimal Debian from the host's apt sources and
# `docker import` turns it into the image. Docker's layer cache reuses what is already built.
#
# Usage: images/build.sh [language...]     (default: every folder here with a Dockerfile)
# Environment: IMAGE_PREFIX (default cellgate/), IMAGE_TAG (default latest).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=debian:bookworm-slim
prefix=${IMAGE_PREFIX:-cellgate/}
tag=${IMAGE_TAG:-latest}

say() { printf '==> %s\n' "$*"; }

ensure_base() {
    if docker image inspect "$base" >/dev/null 2>&1; then
        return
    fi
    say "pulling $base"
    if timeout 120 docker pull "$base" >/dev/null 2>&1; then
        return
    fi
    say "$base cannot be pulled here: building it locally with mmdebstrap"
    if ! command -v mmdebstrap >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            apt-get install -y -qq mmdebstrap >/dev/null
        else
            echo "mmdebstrap is needed to build $base (apt-get install mmdebstrap)" >&2
            exit 1
        fi
    fi
    mmdebstrap --quiet --variant=minbase bookworm - \
        | docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' \
            - "$base" >/dev/null
}

ensure_base
if [ "$#" -gt 0 ]; then
    languages=("$@")
else
    languages=()
    for dockerfile in "$here"/*/Dockerfile; do
        name=$(basename "$(dirname "$dockerfile")")
        # The gateway, runner and nginx images need staged binaries or configs:
        # swarm/build-images.sh builds them.
        case "$name" in gateway | runner | nginx | common) continue ;; esac
        languages+=("$name")
    done
fi
for language in "${languages[@]}"; do
    if [ ! -f "$here/$language/Dockerfile" ]; then
        echo "no image named $language (no $here/$language/Dockerfile)" >&2
        exit 1
    fi
    say "building ${prefix}${language}:${tag}"
    # The context is images/ itself, so language images can share files from images/common;
    # the registry's is its own folder.
    context=$here
    [ "$language" = registry ] && context=$here/registry
    docker build --quiet --tag "${prefix}${language}:${tag}" \
        --file "$here/$language/Dockerfile" "$context" >/dev/null
    [ "$language" = registry ] && continue
    version=$(docker run --rm --network none --entrypoint cat "${prefix}${language}:${tag}" \
        /opt/cellgate/language-version 2>/dev/null || echo "unknown version")
    say "${prefix}${language}:${tag}: ${version}"
done
