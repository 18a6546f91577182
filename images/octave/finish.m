## Octave runs finish.m when a cell calls exit or quit. Only the runner may end the kernel, so
## the cell fails instead; the driver itself leaves with quit ("force"), which skips this file.
error ("Octave:quit", "exit and quit cannot end the kernel; restart it instead");
