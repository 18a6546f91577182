#!/usr/bin/perl
# cellgate forwarder: the small process that owns a single-threaded driver's event pipe.
#
# R and Octave run one thing at a time, so while a cell runs nobody in the driver process could
# read the pipes its user output goes to; output would only appear when the cell ends, and a
# cell printing more than a pipe holds would block for ever. This process does that reading
# instead. The kernel's launch.sh starts it next to the driver, in the same process group, with
# these descriptors:
#
#   0  the runner's command pipe, in command mode (see below); /dev/null otherwise
#   1  the runner's event pipe: only this process writes to it
#   2  diagnostics (the runner's stderr)
#   4  the driver's own frames (`ready`, `result`, `done`, ...)
#   5  replies to the driver
#   6  the FIFO behind the user's fd 1, forwarded as `stdout` frames
#   7  the FIFO behind the user's fd 2, forwarded as `stderr` frames
#   8  in command mode, the driver's interpreter input (see below)
#
# The driver writes each of its frames whole to fd 4 and waits for the reply frame on fd 5.
# When one of its frames has arrived completely, this process first forwards everything that is
# already in the two output FIFOs, then the frame, then the reply. While the driver waits it
# writes nothing, so everything it (or a child it waited for) printed before an event is in the
# FIFOs at that moment: output reaches the runner before the event that followed it, `done`
# comes after all of a cell's output, and since only this process writes to fd 1, frames never
# interleave. Between the driver's frames, output is forwarded within milliseconds.
#
# The reply to an ordinary frame is `ack` with the number of SIGINTs this process has seen.
# The runner sends SIGINT to the whole process group, so the count witnesses interrupts the
# driver itself never saw: R's system(), like C's, ignores SIGINT while it waits for its child.
# Frames whose kind starts with `forwarder_` are requests to this process and are not passed
# on:
#
#   forwarder_sync BODY    replies `ack` with the SIGINT count, followed by a space and BODY
#                          if BODY is not empty
#   forwarder_next         replies with the next command from the runner (command mode)
#   forwarder_taken        the driver has read the command completely and starts on it; this
#                          one has no reply, since frames are handled in order anyway
#   forwarder_interrupted  the driver was interrupted and has recovered (see below)
#
# A SIGINT that arrives while the driver waits for a command is answered with a
# `forwarder_wakeup` reply: Octave only acts on an interrupt once a blocking read returns, and
# a cell waiting in input() must stop at once.
#
# Command mode (`--commands LINE`) is for Octave, whose interrupts cannot be caught: an
# interrupt unwinds every function call up to the interpreter's prompt, which the driver runs
# under, and the prompt then reads LINE (fd 8 keeps it supplied) to call the driver again. The
# interrupt may land while the driver reads a frame, and what it had read is lost then; so the
# driver reads commands from this process, one request at a time, and after an interrupt asks
# again. This process keeps each command until the driver has taken it, knows which request
# the driver was answering, and answers in the driver's place when the driver reports that it
# was interrupted: `error` and `done` for a cell, an empty reply for the other requests.
# Replies that nothing waits for any more are dropped, so the runner never sees two answers.

use strict;
use warnings;
use Errno qw(EAGAIN EINTR EWOULDBLOCK EPIPE);
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK O_RDONLY O_WRONLY);
use POSIX ();

use constant {
    COMMANDS_IN   => 0,
    EVENTS        => 1,
    DRIVER_FRAMES => 4,
    REPLIES       => 5,
    STDOUT_READER => 6,
    STDERR_READER => 7,
    PROMPT_INPUT  => 8,
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
# How often, when nothing happens, the forwarder checks that the driver still runs. The driver
# normally ends this process by closing fd 4, but a background child of a cell may hold it.
use constant IDLE_CHECK_SECONDS => 2;
use constant INPUT_CHECK_SECONDS => 0.1;
# What the driver's replacement answers look like, by request.
my %FALLBACK_REPLY = (
    complete    => ['complete_reply', '{"matches":[],"cursor_start":0,"cursor_end":0,"metadata":{}}'],
    is_complete => ['is_complete_reply', '{"status":"unknown"}'],
    inspect     => ['inspect_reply', '{"found":false,"data":{},"metadata":{}}'],
);
my %REPLY_TO = (
    done              => 'execute',
    complete_reply    => 'complete',
    is_complete_reply => 'is_complete',
    inspect_reply     => 'inspect',
);

# The runner interrupts a cell by sending SIGINT to the whole process group; that is meant for
# the driver and the cell's child processes, so this process only counts it. A closed pipe must
# show up as EPIPE, handled below, rather than kill the process without a word.
my $interrupts = 0;
$SIG{INT} = sub { $interrupts++ };
$SIG{PIPE} = 'IGNORE';

my $command_mode = 0;
my $prompt_line = '';
if (@ARGV >= 2 && $ARGV[0] eq '--commands') {
    $command_mode = 1;
    $prompt_line = "$ARGV[1]\n" x 256;
}

my $driver_pid = getppid();

sub diagnose {
    my ($message) = @_;
    print STDERR "cellgate forwarder: $message\n";
}

# Writes all of $data to a blocking descriptor. A pipe that is gone means the runner or the
# driver is gone, and with it the reason to go on.
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

sub encode_frame {
    my ($kind, $body) = @_;
    return "$kind " . length($body) . "\n" . $body;
}

sub send_event {
    my ($kind, $body) = @_;
    write_all(EVENTS, encode_frame($kind, $body));
}

sub reply {
    my ($kind, $body) = @_;
    write_all(REPLIES, encode_frame($kind, $body));
}

# Splits the frame at the start of $$buffer off it: (kind, body), or () when it is incomplete.
# A malformed header ends the process, since the stream cannot be put back in step.
sub next_frame {
    my ($buffer, $source) = @_;
    my $newline = index(substr($$buffer, 0, MAX_HEADER_LEN), "\n");
    if ($newline < 0) {
        if (length $$buffer >= MAX_HEADER_LEN) {
            diagnose("$source sent a frame header longer than " . MAX_HEADER_LEN . ' bytes');
            POSIX::_exit(2);
        }
        return ();
    }
    my $header = substr($$buffer, 0, $newline);
    if ($header !~ /\A([a-z0-9_]+) ([0-9]+)\z/) {
        diagnose("$source sent a malformed frame header: $header");
        POSIX::_exit(2);
    }
    my ($kind, $length) = ($1, $2);
    my $end = $newline + 1 + $length;
    return () if length $$buffer < $end;
    my $body = substr($$buffer, $newline + 1, $length);
    substr($$buffer, 0, $end, '');
    return ($kind, $body);
}

# ---------------------------------------------------------------------------------------------
# User output.
#
# Output is gathered for a moment before it is sent: R and Octave write a printed line in many
# small pieces, and one frame per piece would mean one Jupyter message per piece. Output from
# one stream is held while more keeps arriving within LINGER_SECONDS, for at most LINGER_ROUNDS
# rounds, and never beyond READ_CHUNK bytes; output from the other stream sends what is held
# first, so the two streams keep their relative order as far as it can be known.

my $held = '';
my $held_fd = STDOUT_READER;
my $linger_rounds = 0;

sub send_held {
    send_event($held_fd == STDOUT_READER ? 'stdout' : 'stderr', $held) if length $held;
    $held = '';
    $linger_rounds = 0;
}

# Reads what output FIFO $fd holds now, up to $limit bytes, into the held output.
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
        # The FIFO is open for writing in this process too, so this does not happen.
        last if $count == 0;
        $held .= $chunk;
        $total += $count;
        send_held() if length $held >= READ_CHUNK;
    }
}

# Sends everything the output FIFOs hold, ahead of an event.
sub drain_output {
    take_output(STDOUT_READER, DRAIN_LIMIT);
    take_output(STDERR_READER, DRAIN_LIMIT);
    send_held();
}

# ---------------------------------------------------------------------------------------------
# Commands, in command mode.

# Frames from the runner that the driver has not taken yet, oldest first, as [kind, body].
my @commands;
my $runner_buffer = '';
my $runner_closed = 0;
# Whether the driver waits for the next command.
my $driver_waits = 0;
# The SIGINTs the driver has been woken up for.
my $interrupts_handled = 0;
# The requests the driver has taken and not answered yet: a cell, and perhaps a request it
# answers while the cell waits for input.
my @answering;

sub read_commands {
    my $count = POSIX::read(COMMANDS_IN, my $chunk, READ_CHUNK);
    if (!defined $count) {
        return if $! == EINTR || $! == EAGAIN;
        diagnose("cannot read the runner's commands: $!");
        $count = 0;
    }
    if ($count == 0) {
        # The runner has closed the pipe: the driver is told to shut down once it asks.
        $runner_closed = 1;
        push @commands, ['shutdown', ''];
        return;
    }
    $runner_buffer .= $chunk;
    while (my ($kind, $body) = next_frame(\$runner_buffer, 'the runner')) {
        push @commands, [$kind, $body];
    }
}

sub hand_out_command {
    return unless $driver_waits && @commands;
    $driver_waits = 0;
    reply(@{ $commands[0] });
}

sub wake_driver_for_interrupt {
    return if $interrupts == $interrupts_handled;
    $interrupts_handled = $interrupts;
    return unless $driver_waits;
    $driver_waits = 0;
    reply('forwarder_wakeup', '');
}

# Answers for the driver whatever it was answering when an interrupt stopped it.
sub answer_for_interrupted_driver {
    drain_output();
    while (my $request = pop @answering) {
        if ($request eq 'execute') {
            send_event('error', '{"ename":"KeyboardInterrupt","evalue":"the cell was interrupted",'
                . '"traceback":["KeyboardInterrupt: the cell was interrupted"]}');
            send_event('done', '{"status":"error"}');
        } elsif (my $fallback = $FALLBACK_REPLY{$request}) {
            send_event(@$fallback);
        }
    }
}

# Handles a request of the driver to this process; false if the frame is an ordinary event.
sub handle_request {
    my ($kind, $body) = @_;
    return 0 unless $kind =~ /\Aforwarder_/;
    if ($kind eq 'forwarder_sync') {
        reply('ack', length $body ? "$interrupts $body" : $interrupts);
    } elsif ($kind eq 'forwarder_next') {
        $driver_waits = 1;
        hand_out_command();
    } elsif ($kind eq 'forwarder_taken') {
        my $command = shift @commands;
        my $request = $command ? $command->[0] : '';
        push @answering, $request if $request eq 'execute' || $FALLBACK_REPLY{$request};
    } elsif ($kind eq 'forwarder_interrupted') {
        # A command handed out but not taken is handed out again on the next request.
        answer_for_interrupted_driver();
        reply('ack', $interrupts);
    } else {
        diagnose("ignored the unknown request $kind");
        reply('ack', $interrupts);
    }
    return 1;
}

my $ready_sent = 0;

# Passes one of the driver's events on; in command mode an answer to a request nobody waits
# for any more is dropped.
sub forward_event {
    my ($kind, $body) = @_;
    # A driver interrupted while it started may announce itself twice.
    if ($kind eq 'ready') {
        return if $ready_sent;
        $ready_sent = 1;
    }
    if ($command_mode && (my $request = $REPLY_TO{$kind})) {
        my ($index) = grep { $answering[$_] eq $request } reverse 0 .. $#answering;
        if (!defined $index) {
            diagnose("dropped a $kind that answers no request");
            return;
        }
        splice @answering, $index, 1;
    }
    drain_output();
    send_event($kind, $body);
}

# ---------------------------------------------------------------------------------------------
# Descriptors.

# The launcher opens every FIFO end for reading and writing, so that no open blocks. The driver's
# frames and the replies are narrowed to one direction here, so that each side sees end-of-file
# when the other side is gone.
sub narrow {
    my ($fd, $mode) = @_;
    my $narrowed = POSIX::open("/proc/self/fd/$fd", $mode);
    if (!defined $narrowed) {
        diagnose("cannot reopen fd $fd: $!");
        return;
    }
    POSIX::dup2($narrowed, $fd);
    POSIX::close($narrowed);
}
narrow(DRIVER_FRAMES, O_RDONLY);
narrow(REPLIES, O_WRONLY);

# Output and the interpreter's input are used without blocking: draining stops where a FIFO is
# empty, and the input is topped up whenever there is room. The handles are kept for the life of
# the process, since dropping one would close its descriptor.
my @nonblocking_handles;
for my $fd (STDOUT_READER, STDERR_READER, $command_mode ? (PROMPT_INPUT) : ()) {
    open(my $handle, '+<&=', $fd) or die "cellgate forwarder: fd $fd is not open: $!\n";
    my $flags = fcntl($handle, F_GETFL, 0) or die "cellgate forwarder: fcntl: $!\n";
    fcntl($handle, F_SETFL, $flags | O_NONBLOCK) or die "cellgate forwarder: fcntl: $!\n";
    push @nonblocking_handles, $handle;
}

# The interpreter's input is the same line over and over; a write that only partly fits is
# continued from where it stopped, so that no line is ever cut.
my $prompt_offset = 0;
my $prompt_input_open = $command_mode;

sub top_up_prompt_input {
    while (1) {
        my $rest = length($prompt_line) - $prompt_offset;
        my $written = POSIX::write(PROMPT_INPUT, substr($prompt_line, $prompt_offset), $rest);
        if (!defined $written) {
            return if $! == EAGAIN || $! == EWOULDBLOCK;
            next if $! == EINTR;
            diagnose("cannot write the interpreter's input: $!");
            $prompt_input_open = 0;
            return;
        }
        $prompt_offset = ($prompt_offset + $written) % length($prompt_line);
    }
}

# ---------------------------------------------------------------------------------------------
# The main loop.

my $driver_buffer = '';
top_up_prompt_input() if $prompt_input_open;

while (1) {
    wake_driver_for_interrupt() if $command_mode;
    my ($readable, $writable) = ('', '');
    vec($readable, $_, 1) = 1 for (STDOUT_READER, STDERR_READER, DRIVER_FRAMES);
    vec($readable, COMMANDS_IN, 1) = 1 if $command_mode && !$runner_closed;
    vec($writable, PROMPT_INPUT, 1) = 1 if $prompt_input_open;
    # A SIGINT that lands just before select() is only seen when select() returns, so a cell
    # waiting for input is looked at often.
    my $timeout = length $held ? LINGER_SECONDS
                : ($driver_waits && @answering) ? INPUT_CHECK_SECONDS : IDLE_CHECK_SECONDS;
    my $count = select($readable, $writable, undef, $timeout);
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
    top_up_prompt_input() if $prompt_input_open && vec($writable, PROMPT_INPUT, 1);
    take_output(STDOUT_READER, READ_CHUNK) if vec($readable, STDOUT_READER, 1);
    take_output(STDERR_READER, READ_CHUNK) if vec($readable, STDERR_READER, 1);
    send_held() if length $held && ++$linger_rounds >= LINGER_ROUNDS;
    if ($command_mode && vec($readable, COMMANDS_IN, 1)) {
        read_commands();
        hand_out_command();
    }
    next unless vec($readable, DRIVER_FRAMES, 1);

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
    $driver_buffer .= $chunk;
    while (my ($kind, $body) = next_frame(\$driver_buffer, 'the driver')) {
        next if handle_request($kind, $body);
        forward_event($kind, $body);
        reply('ack', $interrupts);
    }
}
