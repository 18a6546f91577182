## cellgate's input(): asks the notebook's frontend for the answer, since the kernel has no
## terminal. input (PROMPT) evaluates the answer in the caller's workspace, as Octave's own
## input() does; input (PROMPT, "s") returns it as a string.
function answer = input (prompt, option)
  if (nargin < 1)
    prompt = "";
  endif
  text = __cellgate_driver__ ("input", prompt);
  if (nargin > 1 && ischar (option) && strcmp (option, "s"))
    answer = text;
  elseif (isempty (strtrim (text)))
    answer = [];
  else
    answer = evalin ("caller", text);
  endif
endfunction
