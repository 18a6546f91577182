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
# output; R's fd 8 carries the forwarder's acknowledgements (see forward.pl for why). Every FIFO
# end is first opened read-write (`<>`), which never blocks; the ends each process keeps are then
# opened one-way, so that either process sees end-of-file or EPIPE when the other is gone. The
# FIFOs are unlinked before R starts: the open descriptors keep them alive.
set -eu

here=$(dirname -- "$0")
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
mkfifo -m 600 "$fifos/stdout" "$fifos/stderr" "$fifos/frames" "$fifos/acks"

exec 3<&0 5>&2 6<>"$fifos/stdout" 7<>"$fifos/stderr" 8<>"$fifos/frames" 9<>"$fifos/acks"

# The forwarder's ends are opened here, before it is started, so that the FIFOs can be unlinked
# without waiting for it. They are passed on fd 2 (the runner's stderr is safe on fd 5) and fd 4,
# since a background command's fd 0 is always /dev/null. The forwarder starts with SIGINT ignored,
# so that an interrupt cannot end it before it has installed its own handler.
exec 2<"$fifos/frames" 4>"$fifos/acks"
(
    trap '' INT
    exec perl -- "$here/forward.pl" 8<&2 9>&4 4>&1 2>&5 3<&- 5>&- </dev/null >/dev/null
) &
exec 2>&5

# R keeps the writing end of the frames on fd 4 and the reading end of the acknowledgements on
# fd 8, and nothing else of the forwarder's.
exec 4>"$fifos/frames" 8<"$fifos/acks" 9>&- 6<&- 7<&-
exec </dev/null 1<>"$fifos/stdout" 2<>"$fifos/stderr"
rm -rf -- "$fifos"
trap - EXIT
# Rscript reads a script file line by line and parses everything read so far after each line,
# which takes half a second for the driver's one long expression; source() parses it in one go.
exec Rscript --no-save --no-restore -e 'source(commandArgs(trailingOnly = TRUE)[1L])' \
    "$here/driver.R"
