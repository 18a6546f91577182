## cellgate's keyboard(): a notebook has no terminal for the debugger's prompt to read from.
function keyboard (varargin)
  error ("Octave:no-debugger", "keyboard: the debugger cannot be used in a notebook");
endfunction
