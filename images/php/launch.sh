#!/bin/sh
# Launcher of the cellgate PHP driver (driver.php): sets up its file descriptors, then replaces
# itself with PHP.
#
# PHP cannot redirect its own file descriptors, so this script does it before PHP starts. The
# layout is the one every cellgate launcher uses. The runner's command pipe moves to fd 3, its
# event pipe to fd 4 and its stderr (driver diagnostics) to fd 5. The user's fd 0 becomes
# /dev/null and fds 1 and 2 become two FIFOs whose reading ends the driver gets as fds 6 and 7;
# it forwards what arrives there as output events, so output of child processes is captured
# too. Every FIFO end is opened read-write (`<>`), which never blocks, and the FIFOs are
# unlinked before PHP starts: the open descriptors keep them alive and nothing is left behind
# in the temporary directory.
set -eu

here=$(dirname -- "$0")
if ! command -v php >/dev/null 2>&1; then
    echo "cellgate: php was not found on PATH" >&2
    exit 127
fi

fifos=$(mktemp -d "${TMPDIR:-/tmp}/cellgate-php.XXXXXXXX")
trap 'rm -rf -- "$fifos"' EXIT
mkfifo -m 600 "$fifos/stdout" "$fifos/stderr"

exec 3<&0 4>&1 5>&2 6<>"$fifos/stdout" 7<>"$fifos/stderr"
exec </dev/null 1<>"$fifos/stdout" 2<>"$fifos/stderr"
rm -rf -- "$fifos"
trap - EXIT
exec php "$here/driver.php"
