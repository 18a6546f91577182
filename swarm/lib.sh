# Shared helpers of the swarm scripts.
say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
STACK=${STACK:-cellgate}

# on_node HOST CMD: runs a shell command on another node as SSH_USER (root), key-based, as
# `make gluster` does.
on_node() {
    local host=$1; shift
    ssh -o BatchMode=yes -o ConnectTimeout=10 "${SSH_USER:-root}@$host" "$@"
}

# The swarm's routing mesh needs IPVS in the kernel: without it ingress ports refuse
# connections and service VIPs do not route. Prints ingress when it is there, host otherwise.
publish_mode_here() {
    if [ -e /proc/net/ip_vs ] || { modprobe -q ip_vs 2>/dev/null && [ -e /proc/net/ip_vs ]; }; then
        echo ingress
    else
        echo host
    fi
}

# node_address NODE: the address other nodes reach a swarm node at.
node_address() {
    local addr
    addr=$(docker node inspect --format '{{.Status.Addr}}' "$1")
    # A manager may report 0.0.0.0 here; its manager address is the one it advertised.
    if [ "$addr" = 0.0.0.0 ] || [ -z "$addr" ]; then
        addr=$(docker node inspect --format '{{.ManagerStatus.Addr}}' "$1")
        addr=${addr%:*}
    fi
    printf '%s\n' "$addr"
}

# gateway_addresses: where clients reach the gateways. With host-mode publishing, the address
# of each node running a gateway task; through the routing mesh, this node.
gateway_addresses() {
    local mode
    mode=$(docker service inspect "${STACK}_gateway" \
        --format '{{range .Endpoint.Ports}}{{.PublishMode}}{{end}}' 2>/dev/null || true)
    if [ "$mode" = host ]; then
        docker service ps "${STACK}_gateway" --filter desired-state=running --format '{{.Node}}' \
            | sort -u | while read -r node; do node_address "$node"; done
    else
        echo 127.0.0.1
    fi
}
