## cellgate's system(): Octave's own, except for two things.
##
## The command reads /dev/null: Octave's own fd 0 is the driver's prompt input (see
## __cellgate_driver__.m), which a command must not consume. The command goes on lines of its
## own, so that a trailing comment cannot swallow the redirection.
##
## An interrupt stops the cell. Like C's system(), Octave's ignores SIGINT while it waits for the
## command, so an interrupt only ends the command and the cell would go on as if it had failed.
## The forwarder counts the SIGINTs the kernel receives; if one arrived during the command, it
## is raised again here.
function varargout = system (varargin)
  if (nargin > 0 && ischar (varargin{1}))
    varargin{1} = sprintf ("(\n%s\n) </dev/null", varargin{1});
  endif
  before = __cellgate_driver__ ("interrupts");
  [varargout{1:max (nargout, 1)}] = builtin ("system", varargin{:});
  if (__cellgate_driver__ ("interrupts") > before)
    kill (getpid (), 2);
    ## Octave handles signals on a thread of its own: the interrupt takes effect within moments,
    ## and pause() is where it is noticed.
    for i = 1:100
      pause (0.01);
    endfor
  endif
endfunction
