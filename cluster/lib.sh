# Shared by the test-cluster scripts: names, and running a command on a node.
CLUSTER=${CLUSTER:-cellgate-cluster}
say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# node_container I: the host container that is node I (its hostname inside is nodeI).
node_container() { printf '%s-node%s' "$CLUSTER" "$1"; }
# on I CMD...: runs a shell command on node I as root.
on() { local node=$1; shift; docker exec "$(node_container "$node")" bash -c "$*"; }
