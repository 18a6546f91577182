#!/usr/bin/env bash
# `make deploy`: turns this Docker host into a swarm manager (when it is not one) and deploys
# the cellgate stack. Idempotent: every step checks before it acts.
#
# Environment: ADVERTISE_ADDR, WORKERS (wait for N Ready workers), WORKERS_TIMEOUT (s, 600),
# JOIN="host ..." (join these hosts as workers over SSH first), SSH_USER (root),
# PUBLISH_MODE (ingress or host; detected: host when the kernel has no IPVS),
# TLS_CERT/TLS_KEY (else self-signed), VOLUME (/mnt/cellgate), PORT (443), RUNNERS,
# EDGE=nginx (also deploy swarm-nginx.yml), NGINX_PORT (8443), DEPLOY_TIMEOUT (s, 300),
# SKIP_BUILD=1 (use the images as they are), SKIP_CARGO=1 (use target/release as it is).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/swarm/lib.sh"
cd "$root"

# 1. Docker must answer.
if ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && [ -r /etc/debian_version ] && command -v apt-get >/dev/null; then
        if ! command -v dockerd >/dev/null; then
            say "installing docker.io (Debian package)"
            apt-get update -qq && apt-get install -y -qq docker.io >/dev/null
        fi
        say "starting the Docker daemon"
        systemctl start docker 2>/dev/null || service docker start 2>/dev/null \
            || (nohup dockerd >/var/log/dockerd.log 2>&1 &)
        for _ in $(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
    fi
    docker info >/dev/null 2>&1 || die "Docker does not answer. Install Docker (Debian: apt-get install docker.io), start it, and make sure this user may use it (root, or the docker group); then run make again."
fi
say "Docker answers: server $(docker version --format '{{.Server.Version}}')"

# 2. A swarm, with this node as a manager.
state=$(docker info --format '{{.Swarm.LocalNodeState}}')
if [ "$state" != active ]; then
    addr=${ADVERTISE_ADDR:-$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')}
    addr=${addr:-$(hostname -I 2>/dev/null | awk '{print $1}')}
    [ -n "$addr" ] || die "cannot detect this host's address: set ADVERTISE_ADDR"
    say "initialising a swarm advertised on $addr"
    docker swarm init --advertise-addr "$addr" >/dev/null
elif [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" != true ]; then
    die "this node is a swarm worker: run make on a manager"
else
    say "swarm already active, this node is a manager"
fi
manager_addr=$(docker info --format '{{.Swarm.NodeAddr}}')
if [ -n "${JOIN:-}" ]; then
    join_token=$(docker swarm join-token -q worker)
    for host in $JOIN; do
        if [ "$(on_node "$host" "docker info --format '{{.Swarm.LocalNodeState}}'")" = active ]; then
            say "$host is in a swarm already"
        else
            say "$host: joining the swarm as a worker (over ssh)"
            on_node "$host" "docker swarm join --token $join_token $manager_addr:2377" >/dev/null \
                || die "$host could not join the swarm (ssh ${SSH_USER:-root}@$host, then docker swarm join)"
        fi
    done
else
    say "to add a worker, run on it: $(docker swarm join-token worker | grep 'docker swarm join'), or make JOIN=\"HOST ...\""
fi
if [ "${WORKERS:-0}" -gt 0 ]; then
    deadline=$(( $(date +%s) + ${WORKERS_TIMEOUT:-600} ))
    while :; do
        ready=$(docker node ls --filter role=worker --format '{{.Status}}' | grep -c '^Ready$' || true)
        [ "$ready" -ge "$WORKERS" ] && break
        [ "$(date +%s)" -lt "$deadline" ] || die "only $ready of $WORKERS workers are Ready after ${WORKERS_TIMEOUT:-600}s (docker node ls)"
        say "waiting for workers: $ready of $WORKERS Ready"
        sleep 5
    done
    say "$ready workers Ready"
fi
workers=$(docker node ls --filter role=worker --format '{{.Status}}' | grep -c '^Ready$' || true)

# 3. Secrets (kept across deploys; `make down` leaves them).
secret() { # secret NAME: reads the value on stdin when the secret is absent
    if docker secret inspect "$1" >/dev/null 2>&1; then
        cat >/dev/null; say "secret $1 exists"
    else
        docker secret create "$1" - >/dev/null; say "secret $1 created"
    fi
}
docker secret inspect cellgate_token >/dev/null 2>&1 || mkdir -p "$root/target/swarm"
if ! docker secret inspect cellgate_token >/dev/null 2>&1; then
    openssl rand -hex 24 >"$root/target/swarm/token"
    chmod 600 "$root/target/swarm/token"
fi
[ -f "$root/target/swarm/token" ] && secret cellgate_token <"$root/target/swarm/token"
openssl rand -hex 32 | secret cellgate_runner_secret
if ! docker secret inspect cellgate_tls_cert >/dev/null 2>&1; then
    if [ -n "${TLS_CERT:-}" ]; then
        cert=$TLS_CERT key=${TLS_KEY:?TLS_KEY must come with TLS_CERT}
    else
        mkdir -p "$root/target/swarm"
        cert=$root/target/swarm/tls.crt key=$root/target/swarm/tls.key
        say "making a self-signed TLS certificate for $(hostname)"
        openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=$(hostname)" \
            -addext "subjectAltName=DNS:$(hostname),DNS:localhost,IP:127.0.0.1" \
            -keyout "$key" -out "$cert" 2>/dev/null
    fi
    docker secret rm cellgate_tls_key >/dev/null 2>&1 || true
    secret cellgate_tls_cert <"$cert"
    secret cellgate_tls_key <"$key"
else
    say "secret cellgate_tls_cert exists"
fi

# 4. Binaries and images.
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    # SKIP_CARGO=1: the binaries are built already (tests/swarm.rs runs inside `cargo test`,
    # which holds the build directory's lock).
    if [ "${SKIP_CARGO:-0}" != 1 ]; then
        say "building the release binaries"
        cargo build --release --workspace --bins --quiet
    fi
    say "building the language images"
    "$root/images/build.sh"
    say "building the service images"
    "$root/swarm/build-images.sh"
fi

# 5. Multi-node: a registry in the swarm, so workers can pull the images.
export IMAGE_PREFIX=cellgate/ LANGUAGE_IMAGE_PREFIX=cellgate/
if [ "$workers" -gt 0 ]; then
    "$root/swarm/registry.sh" "$manager_addr"
    registry=$manager_addr:${REGISTRY_PORT:-5000}
    export IMAGE_PREFIX=$registry/cellgate/ RUNNER_ROLE=${RUNNER_ROLE:-worker}
    export LANGUAGE_IMAGE_PREFIX=$IMAGE_PREFIX PULL_IMAGES=true RUNNER_START_PERIOD=${RUNNER_START_PERIOD:-15m}
else
    export RUNNER_ROLE=${RUNNER_ROLE:-manager}
fi

# 6. The stack.
export VOLUME=${VOLUME:-/mnt/cellgate} PORT=${PORT:-443}
# The routing mesh needs IPVS; without it (detected here) ports are published in host mode:
# each gateway answers on the node it runs on, one per node, and clients (or the nginx edge,
# or a DNS name with every gateway node's address) reach them there. On a single node the
# mesh adds nothing, so it is host mode there too.
managers=$(docker node ls --filter role=manager -q | wc -l)
if [ "$workers" -eq 0 ] && [ "$managers" -eq 1 ]; then
    export PUBLISH_MODE=${PUBLISH_MODE:-host} GATEWAYS=${GATEWAYS:-1}
fi
export PUBLISH_MODE=${PUBLISH_MODE:-$(publish_mode_here)}
if [ "$PUBLISH_MODE" = host ]; then
    [ "$workers" -eq 0 ] || say "no IPVS in this kernel (no routing mesh): gateway ports are published on the nodes that run a gateway"
    # Host mode: one gateway per node, on any node, so two gateways are on two nodes.
    export GATEWAYS_PER_NODE=1 GATEWAY_CONSTRAINT=${GATEWAY_CONSTRAINT:-node.platform.os == linux}
fi
# A host-mode port is held by the running task: a replacement can only start after it stops.
if [ "${PUBLISH_MODE:-ingress}" = host ]; then
    export GATEWAY_UPDATE_ORDER=${GATEWAY_UPDATE_ORDER:-stop-first}
fi
export RUNNERS=${RUNNERS:-$(( workers > 0 ? workers : 1 ))}
export RUNNERS_PER_NODE=${RUNNERS_PER_NODE:-$(( workers > 0 ? 1 : 8 ))}
if ! mountpoint -q "$VOLUME" 2>/dev/null; then
    say "$VOLUME is not a mount: using it as a local directory (run make gluster for a shared volume)"
fi
mkdir -p "$VOLUME"
files=(-c swarm-stack.yml)
[ "${EDGE:-}" = nginx ] && files+=(-c swarm-nginx.yml)
say "deploying stack $STACK (${RUNNERS} runners on ${RUNNER_ROLE} nodes, volume $VOLUME, port $PORT)"
docker stack deploy "${files[@]}" --prune "$STACK" >/dev/null

# 7. Wait for every replica and the gateway's health.
"$root/swarm/wait.sh"
token=$(cat "$root/target/swarm/token" 2>/dev/null || echo '<token from docker secret cellgate_token>')
if [ "$PUBLISH_MODE" = host ] && [ "$workers" -gt 0 ]; then
    for address in $(gateway_addresses); do say "cellgate is up: https://$address:${PORT}/?token=$token"; done
else
    say "cellgate is up: https://$(hostname):${PORT}/?token=$token"
fi
