#!/bin/sh
# Launcher of the cellgate R driver (driver.R): sets up its file descriptors, starts the output
# forwarder (forward.pl), then replaces itself with R.
#
# R cannot redirect its own file descriptors, so this script does it before R starts, with the
# layout every cellgate launcher uses: the runner's command pipe moves to fd 3, its stderr
# (driver diagnostics) to fd 5, the user's fd 0 becomes /dev/null and fds 1 and 2 become two
# FIFOs, so that output of child processes is captured too.
#
# R runs one thing at a time and could not read those FIFOs while a cell runs, so a separate
# process, forward.pl, reads them and owns the runner's event pipe. R's fd 4 is therefore not the
# event pipe itself but a FIFO to the forwarder, which passes R's frames on in order with the
# output, and R's fd 8 carries the forwarder's replies (forward.pl explains both). Every FIFO
# end is first opened for reading and writing (`<>`), which never blocks; R's own ends are then
# reopened in one direction, so that R sees end-of-file or EPIPE when the forwarder is gone. The
# FIFOs are unlinked before R starts: the open descriptors keep them alive.
set -eu

here=$(cd -- "$(dirname -- "$0")" && pwd)
for program in Rscript perl; do
    if ! command -v "$program" >/dev/null 2>&1; then
        echo "cellgate: $program was not found on PATH" >&2
        exit 127
    fi
done

# Without a locale R escapes every non-ASCII character it prints (`<U+00E9>`).
if [ -z "${LC_ALL-}${LC_CTYPE-}${LANG-}" ]; then
    LANG=C.UTF-8
    export LANG
fi

# An interrupt while the kernel starts must not end this script. A trapped signal, unlike an
# ignored one, is reset by exec, so R and the cell's child processes get the default action.
trap ':' INT

fifos=$(mktemp -d "${TMPDIR:-/tmp}/cellgate-r.XXXXXXXX")
trap 'rm -rf -- "$fifos"' EXIT
mkfifo -m 600 "$fifos/stdout" "$fifos/stderr" "$fifos/frames" "$fifos/replies"

exec 3<&0 4<>"$fifos/frames" 5<>"$fifos/replies" 6<>"$fifos/stdout" 7<>"$fifos/stderr"

# The forwarder starts with SIGINT ignored, so that an interrupt cannot end it before it has
# installed its own handler.
(
    trap '' INT
    exec perl -- "$here/forward.pl" </dev/null 3<&-
) &

exec 4>"$fifos/frames" 8<"$fifos/replies" 5>&2 6<&- 7<&-
exec </dev/null 1<>"$fifos/stdout" 2<>"$fifos/stderr"
rm -rf -- "$fifos"
trap - EXIT
# Rscript reads a script file line by line and parses everything read so far after each line,
# which takes half a second for the driver's one long expression; source() parses it in one go.
exec Rscript --no-save --no-restore -e 'source(commandArgs(trailingOnly = TRUE)[1L])' \
    "$here/driver.R"
