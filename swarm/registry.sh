#!/usr/bin/env bash
# The swarm's image registry, for swarms with workers (swarm/deploy.sh runs it with the
# manager's address). It works with and without the routing mesh, and no operator edits any
# node's daemon.json:
#   - the registry serves TLS with a certificate for ADDRESS signed by the stack's own CA
#     (target/swarm/ca.crt, made once), and publishes port REGISTRY_PORT (5000) in host mode on
#     this manager, where its storage is;
#   - every Ready node trusts that CA for ADDRESS:PORT only: /etc/docker/certs.d/ADDRESS:PORT/
#     ca.crt, written here on this node and over SSH on the others (as `make gluster` reaches
#     them), which the engine reads at each pull;
#   - the cellgate/* images of this engine are pushed to it once; workers pull them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/swarm/lib.sh"
address=${1:?usage: swarm/registry.sh MANAGER_ADDRESS}
registry=$address:${REGISTRY_PORT:-5000}
dir=$root/target/swarm
mkdir -p "$dir"
registry_stack=${STACK}-registry

remove_registry() {
    if docker stack ls --format '{{.Name}}' | grep -qx "$registry_stack"; then
        docker stack rm "$registry_stack" >/dev/null
        for _ in $(seq 30); do
            docker service inspect "${registry_stack}_registry" >/dev/null 2>&1 || break
            sleep 1
        done
    fi
    docker secret rm cellgate_registry_cert cellgate_registry_key >/dev/null 2>&1 || true
}

# 1. The stack's CA and the registry's certificate for this address.
if [ ! -f "$dir/ca.crt" ] || [ ! -f "$dir/ca.key" ]; then
    say "making the stack's certificate authority (target/swarm/ca.crt)"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=cellgate stack CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    chmod 600 "$dir/ca.key"
    rm -f "$dir/registry.crt"
fi
if [ ! -f "$dir/registry.crt" ] || [ "$(cat "$dir/registry.address" 2>/dev/null)" != "$registry" ]; then
    say "making the registry's TLS certificate for $registry"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$address" \
        -keyout "$dir/registry.key" -out "$dir/registry.csr" 2>/dev/null
    openssl x509 -req -in "$dir/registry.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 825 -out "$dir/registry.crt" \
        -extfile <(printf 'subjectAltName=IP:%s,DNS:%s\n' "$address" "$(hostname)") 2>/dev/null
    chmod 600 "$dir/registry.key"
    printf '%s\n' "$registry" >"$dir/registry.address"
    # A running registry holds the old certificate's secrets: replace both.
    remove_registry
fi
docker secret inspect cellgate_registry_cert >/dev/null 2>&1 \
    || docker secret create cellgate_registry_cert "$dir/registry.crt" >/dev/null
docker secret inspect cellgate_registry_key >/dev/null 2>&1 \
    || docker secret create cellgate_registry_key "$dir/registry.key" >/dev/null

# 2. Every node trusts the CA for this registry.
trust="/etc/docker/certs.d/$registry"
mkdir -p "$trust" && cp "$dir/ca.crt" "$trust/ca.crt"
self=$(docker info --format '{{.Swarm.NodeID}}')
for node in $(docker node ls --format '{{.ID}}'); do
    [ "$node" = "$self" ] && continue
    host=$(docker node inspect --format '{{.Description.Hostname}}' "$node")
    if [ "$(docker node inspect --format '{{.Status.State}}' "$node")" != ready ]; then
        say "$host is not Ready: it gets the registry's CA at the next make"
        continue
    fi
    say "$host: trusting the registry $registry (its CA into $trust)"
    on_node "$host" "mkdir -p '$trust' && cat >'$trust/ca.crt'" <"$dir/ca.crt" \
        || die "cannot reach $host over ssh to install the registry's CA. Either give this node an SSH key it accepts (ssh-copy-id ${SSH_USER:-root}@$host), or copy target/swarm/ca.crt to $trust/ca.crt on $host by hand; then run make again"
done

# 3. The registry, on this node, and the images in it.
say "deploying the registry on this node ($registry, TLS)"
REGISTRY_NODE=$self docker stack deploy -c "$root/swarm-registry.yml" "$registry_stack" >/dev/null
for _ in $(seq 60); do
    curl -fsS --cacert "$dir/ca.crt" "https://$registry/v2/" >/dev/null 2>&1 && break
    sleep 2
done
curl -fsS --cacert "$dir/ca.crt" "https://$registry/v2/" >/dev/null \
    || die "the registry does not answer at https://$registry/v2/ (docker service ps ${registry_stack}_registry)"
tag=${IMAGE_TAG:-latest}
for image in $(docker images --format '{{.Repository}}' | grep '^cellgate/' | grep -vx -e cellgate/registry -e cellgate/cluster-node | sort -u); do
    say "pushing $image to $registry"
    docker tag "$image:$tag" "$registry/$image:$tag"
    docker push --quiet "$registry/$image:$tag" >/dev/null
done
