#!/usr/bin/perl
# cellgate output forwarder: the small process that owns a single-threaded driver's event pipe.
#
# R and Octave run one thing at a time, so while a cell runs nobody in the driver process could
# read the pipes its user output goes to; output would only appear when the cell ends, and a
# cell printing more than a pipe holds would block for ever. This process does the reading
# instead. launch.sh starts it next to the driver with these descriptors:
#
#   4  the runner's event pipe; this process is the only one that writes to it
#   6  the reading end of the FIFO behind the user's fd 1, forwarded as `stdout` frames
#   7  the reading end of the FIFO behind the user's fd 2, forwarded as `stderr` frames
#   8  the reading end of the driver's own frames (`ready`, `result`, `done`, ...)
#   9  the writing end of the acknowledgements the driver waits for
#   2  diagnostics (the runner's stderr)
#
# The driver writes each of its frames whole to fd 8 and then waits for one byte on fd 9. When
# a frame has arrived completely, this process first forwards everything that is already in the
# two output FIFOs, then the frame, then the acknowledgement. While the driver waits it writes
# nothing, so everything it (or a child it waited for) printed before an event is in the FIFOs
# at that moment: output always reaches the runner before the event that followed it, `done`
# comes after all of a cell's output, and because only this process writes to fd 4, frames
# never interleave. Between the driver's frames, output is forwarded within milliseconds of its
# arrival.
#
# The acknowledgement is a line holding the number of SIGINTs this process has seen. The runner
# sends SIGINT to the whole process group, so this count is a witness of interrupts that the
# driver itself never saw: R's system(), like C's, ignores SIGINT while it waits for its child.
# A frame of the kind `forwarder_sync` only asks for that count and is not passed on.
#
# Only perl-base is needed, which every Debian system has (it is an Essential package); a POSIX
# shell could neither wait on several descriptors at once nor pass NUL bytes through.

use strict;
use warnings;
use Errno qw(EAGAIN EINTR EWOULDBLOCK EPIPE);
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);
use POSIX ();

# The runner interrupts a cell by sending SIGINT to the whole process group; that is meant for
# the driver and the cell's child processes, so this process only counts it. A closed event pipe
# must show up as EPIPE, handled below, rather than kill the process without a word.
my $interrupts = 0;
$SIG{INT} = sub { $interrupts++ };
$SIG{PIPE} = 'IGNORE';

use constant {
    EVENTS        => 4,
    STDOUT_READER => 6,
    STDERR_READER => 7,
    DRIVER_FRAMES => 8,
    ACKS          => 9,
};
# How much is read at once, which also bounds the size of one output frame.
use constant READ_CHUNK => 65536;
# The most output forwarded ahead of one driver frame, per stream: a background process that
# never stops writing must not hold the driver's frame back for ever.
use constant DRAIN_LIMIT => 4 * 1024 * 1024;
# The longest frame header the protocol allows, newline included.
use constant MAX_HEADER_LEN => 64;
# How long output is held while more of it may follow, and for how many rounds at most.
use constant LINGER_SECONDS => 0.002;
use constant LINGER_ROUNDS => 10;
# How often, when nothing happens, the forwarder checks that the driver still runs; the driver
# normally ends this process by closing fd 8, but a background child of a cell may still hold
# that pipe open.
use constant IDLE_CHECK_SECONDS => 2;

my $driver_pid = getppid();

sub diagnose {
    my ($message) = @_;
    print STDERR "cellgate forwarder: $message\n";
}

# Writes all of $data to a blocking descriptor. The runner going away ends the forwarder, and
# with it, once the driver notices the missing acknowledgement, the kernel.
sub write_all {
    my ($fd, $data) = @_;
    my $offset = 0;
    my $length = length $data;
    while ($offset < $length) {
        my $written = POSIX::write($fd, substr($data, $offset), $length - $offset);
        if (!defined $written) {
            next if $! == EINTR;
            diagnose("cannot write to fd $fd: $!") unless $! == EPIPE;
            POSIX::_exit(0);
        }
        $offset += $written;
    }
}

sub send_frame {
    my ($kind, $body) = @_;
    write_all(EVENTS, "$kind " . length($body) . "\n" . $body);
}

# Output is gathered for a moment before it is sent: R and Octave write a printed line in many
# small pieces, and one frame per piece would mean one Jupyter message per piece. Output from
# one stream is held while more keeps arriving within LINGER_SECONDS, for at most LINGER_ROUNDS
# rounds, and never beyond READ_CHUNK bytes; output from the other stream sends what is held
# first, so the two streams keep their relative order as far as it can be known.
my $held = '';
my $held_fd = STDOUT_READER;
my $linger_rounds = 0;

sub stream_kind {
    my ($fd) = @_;
    return $fd == STDOUT_READER ? 'stdout' : 'stderr';
}

sub send_held {
    send_frame(stream_kind($held_fd), $held) if length $held;
    $held = '';
    $linger_rounds = 0;
}

# Reads what output FIFO $fd holds now, up to $limit bytes, into the held output. Returns the
# number of bytes read.
sub take_output {
    my ($fd, $limit) = @_;
    send_held() if $fd != $held_fd;
    $held_fd = $fd;
    my $total = 0;
    while ($total < $limit) {
        my $count = POSIX::read($fd, my $chunk, READ_CHUNK);
        if (!defined $count) {
            last if $! == EAGAIN || $! == EWOULDBLOCK;
            next if $! == EINTR;
            diagnose("cannot read fd $fd: $!");
            last;
        }
        # The FIFO's writers include the driver's own fds 1 and 2, so end-of-file only comes
        # when the driver is gone.
        last if $count == 0;
        $held .= $chunk;
        $total += $count;
        send_held() if length $held >= READ_CHUNK;
    }
    return $total;
}

# Sends everything the output FIFOs hold, ahead of one of the driver's frames.
sub drain_output {
    take_output(STDOUT_READER, DRAIN_LIMIT);
    take_output(STDERR_READER, DRAIN_LIMIT);
    send_held();
}

# The next complete frame at the start of $$pending, removed from it, or undef.
sub next_frame {
    my ($pending) = @_;
    my $newline = index(substr($$pending, 0, MAX_HEADER_LEN), "\n");
    if ($newline < 0) {
        if (length $$pending >= MAX_HEADER_LEN) {
            diagnose('the driver wrote a frame header longer than ' . MAX_HEADER_LEN . ' bytes');
            POSIX::_exit(1);
        }
        return undef;
    }
    my $header = substr($$pending, 0, $newline);
    if ($header !~ /\A[a-z0-9_]+ ([0-9]+)\z/) {
        diagnose("the driver wrote a malformed frame header: $header");
        POSIX::_exit(1);
    }
    my $end = $newline + 1 + $1;
    return undef if length $$pending < $end;
    return substr($$pending, 0, $end, '');
}

# Output is read without blocking, so that draining stops where the FIFO is empty. The handles
# are kept for the life of the process, since dropping one would close its descriptor.
my @output_handles;
for my $fd (STDOUT_READER, STDERR_READER) {
    open(my $handle, '<&=', $fd) or die "cellgate forwarder: fd $fd is not open: $!\n";
    my $flags = fcntl($handle, F_GETFL, 0) or die "cellgate forwarder: fcntl: $!\n";
    fcntl($handle, F_SETFL, $flags | O_NONBLOCK) or die "cellgate forwarder: fcntl: $!\n";
    push @output_handles, $handle;
}

my $watched = '';
vec($watched, $_, 1) = 1 for (STDOUT_READER, STDERR_READER, DRIVER_FRAMES);
my $pending = '';

while (1) {
    my $ready = $watched;
    my $count = select($ready, undef, undef, length $held ? LINGER_SECONDS : IDLE_CHECK_SECONDS);
    if ($count < 0) {
        next if $! == EINTR;
        diagnose("select failed: $!");
        POSIX::_exit(1);
    }
    if ($count == 0) {
        if (length $held) {
            send_held();
        } elsif (getppid() != $driver_pid) {
            POSIX::_exit(0);
        }
        next;
    }
    take_output(STDOUT_READER, READ_CHUNK) if vec($ready, STDOUT_READER, 1);
    take_output(STDERR_READER, READ_CHUNK) if vec($ready, STDERR_READER, 1);
    send_held() if length $held && ++$linger_rounds >= LINGER_ROUNDS;
    next unless vec($ready, DRIVER_FRAMES, 1);

    my $got = POSIX::read(DRIVER_FRAMES, my $chunk, READ_CHUNK);
    if (!defined $got) {
        next if $! == EINTR || $! == EAGAIN;
        diagnose("cannot read the driver's frames: $!");
        POSIX::_exit(1);
    }
    if ($got == 0) {
        # The driver has exited; pass on what it printed last.
        drain_output();
        POSIX::_exit(0);
    }
    $pending .= $chunk;
    while (defined(my $frame = next_frame(\$pending))) {
        if ($frame ne "forwarder_sync 0\n") {
            drain_output();
            write_all(EVENTS, $frame);
        }
        write_all(ACKS, "$interrupts\n");
    }
}
