#!/usr/bin/env bash
# Installs and starts what the test suite needs, reusing whatever is already there. On Debian
# as root it installs the packages (Docker, GlusterFS, nginx, Chromium, Node.js, ...), the
# Python packages of the Jupyter client tests, starts dockerd when no engine answers, and
# builds the language and registry images. Elsewhere it only says what is missing; the tests
# that need it then fail with the reason (or skip knowingly, see tests/support/prerequisite.rs).
#
# Usage: tests/prerequisites.sh        (`make test` runs it first)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }
can_install=false
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && can_install=true

# Debian packages, by the command or file that shows each one is there.
declare -A wanted=(
    [make]=make [node]=nodejs [python3]=python3 [nginx]=nginx-light [openssl]=openssl
    [curl]=curl [flock]=util-linux [setpriv]=util-linux [/usr/bin/chromium]=chromium
    [/usr/bin/chromedriver]=chromium-driver [docker]=docker.io [dockerd]=docker.io
    [mmdebstrap]=mmdebstrap [glusterd]=glusterfs-server [mount.glusterfs]=glusterfs-client
)
missing=()
for probe in "${!wanted[@]}"; do
    if [[ $probe == /* ]]; then [ -x "$probe" ] && continue; else command -v "$probe" >/dev/null && continue; fi
    [[ " ${missing[*]} " == *" ${wanted[$probe]} "* ]] || missing+=("${wanted[$probe]}")
done
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ((${#missing[@]})); then
    if $can_install; then
        say "installing ${missing[*]} from Debian"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        say "missing (install as root, or the tests that need them fail): ${missing[*]}"
    fi
fi

# Python: the plots of the Python kernel, and the real Jupyter clients the compatibility tests
# drive (jupyter_server, jupyter_kernel_test, nbclient, papermill, JupyterLab), at the
# versions the requirement files pin.
requirements=(matplotlib numpy pandas)
for file in tests/compat/requirements*.txt; do
    [ -f "$file" ] && requirements+=(-r "$file")
done
if python3 -m pip install --disable-pip-version-check --dry-run "${requirements[@]}" 2>/dev/null \
    | grep -q '^Would install'; then
    say "installing the Python packages of the tests: ${requirements[*]}"
    python3 -m pip install --quiet --disable-pip-version-check "${requirements[@]}" 2>/dev/null \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${requirements[@]}"
fi

# Docker: started here when no engine answers and this user may start one.
if command -v docker >/dev/null && ! docker info >/dev/null 2>&1 && $can_install && command -v dockerd >/dev/null; then
    say "starting dockerd (its log: /var/log/cellgate-dockerd.log)"
    setsid nohup dockerd >/var/log/cellgate-dockerd.log 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { tail -20 /var/log/cellgate-dockerd.log; exit 1; }
fi
if docker info >/dev/null 2>&1; then
    say "the language and registry images (images/build.sh; Docker's cache keeps what is built)"
    images/build.sh
else
    say "no Docker engine answers: the Docker, swarm and Jupyter conformance tests will fail"
fi
