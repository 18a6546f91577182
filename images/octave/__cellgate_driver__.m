## cellgate Octave driver: the long-lived Octave process behind one Octave kernel.
##
## launch.sh starts Octave with the forwarder (forward.pl) beside it: fd 4 carries the driver's
## frames to the forwarder, fd 8 the forwarder's replies, fd 5 is the runner's stderr, and the
## user's fds 1 and 2 are FIFOs that the forwarder reads and passes on as output while cells
## run (docs/driver-protocol.md describes the frames). Fd 0 is the interpreter's prompt input,
## and fd 9 keeps a copy of the stdout FIFO, since fd 1 is pointed elsewhere at times. The
## driver asks the forwarder for each command instead of reading the runner's pipe itself, for
## the reason below.
##
## Octave cannot catch an interrupt: it unwinds every function call up to the interpreter's
## prompt. The driver therefore runs under the prompt of an interactive Octave, and the prompt's
## input, kept supplied by the forwarder, is a call of this function, which resumes the driver
## after every interrupt. Whatever the interrupt cut short is repaired then: the driver puts its
## reply stream back in step, and the forwarder answers the request the driver was working on
## (`error` and `done` for a cell). An interrupt that arrives while the driver waits for a
## command only takes effect when the command arrives, and the forwarder then hands the command
## out again.
##
## The prompt's input must stay on fd 0, where a prompt reading end-of-file would end Octave, so
## the user's code cannot be given /dev/null there; system.m gives it to the commands a cell
## runs instead.
##
## Cells are evaluated in the base workspace, once they are known to parse (parse_problem), so
## that a cell with a syntax error runs nothing. Octave prints `x = 3` for statements without a
## semicolon itself, as MATLAB users expect; only the value a cell's last line shows is sent as
## its `result` (run_code). Figures a cell leaves open are sent as PNG images and closed.

function varargout = __cellgate_driver__ (request, varargin)
  ## The driver's functions and state must survive `clear all` in a cell.
  mlock ();
  if (nargin > 0)
    ## A service for the functions that stand in for Octave's own (input.m, system.m).
    switch (request)
      case "input"
        varargout{1} = request_input (varargin{:});
      case "interrupts"
        varargout{1} = interrupts_seen ();
      case "display"
        rich_output (varargin{:});
      case "clear_output"
        fflush (stdout);
        fflush (stderr);
        send_json ("clear_output", struct ("wait", logical (varargin{1})));
      case "page"
        add_page (varargin{1});
      otherwise
        error ("__cellgate_driver__: unknown request %s", request);
    endswitch
    return;
  endif
  if (numel (dbstack ()) > 1)
    ## A prompt inside a cell (the debugger's) has read the line meant for the interpreter's
    ## prompt. Leaving the debugger unwinds the cell like an interrupt, which the driver survives.
    if (isdebugmode ())
      dbquit ("all");
    endif
    return;
  endif
  state = store ();
  unwind_protect
    if (isempty (state) || ! state.started)
      start ();
    else
      recover ();
    endif
    serve ();
  unwind_protect_cleanup
    ## Only an interrupt, or a failure of the driver itself, ends serve(). The prompt is about to
    ## print a newline and read its next line, and the newline must not reach the user's output.
    after_interrupt ();
  end_unwind_protect
endfunction

## The driver's state, kept in a persistent variable: store () returns it, store (s) replaces it.
function result = store (new_state)
  persistent state;
  if (nargin > 0)
    state = new_state;
  endif
  result = state;
endfunction

function value = DRIVER_VERSION ()
  value = "0.1.0";
endfunction

## ---------------------------------------------------------------------------------------------
## Start and recovery.

## Sets the driver up and says so. An interrupt may cut this short too; it then starts over,
## with its replies put back in step first.
function start ()
  s = store ();
  interrupted = ! isempty (s);
  if (! interrupted)
    s = struct ();
    s.started = false;
    s.in_cell = false;
    s.cell_count = 0;
    s.resyncs = 0;
    s.driver_file = [mfilename("fullpath") ".m"];
    store (s);
  endif
  open_channels ();
  if (interrupted)
    resync ();
  endif
  setup_session ();
  send_json ("ready", struct (
    "implementation", "cellgate-octave",
    "implementation_version", DRIVER_VERSION (),
    "language_info", struct (
      "name", "octave",
      "version", OCTAVE_VERSION (),
      "mimetype", "text/x-octave",
      "file_extension", ".m",
      "pygments_lexer", "octave",
      "codemirror_mode", "octave"),
    "banner", sprintf ("GNU Octave %s\ncellgate Octave driver %s", OCTAVE_VERSION (),
                       DRIVER_VERSION ())));
  s = store ();
  s.started = true;
  store (s);
endfunction

## Opens the driver's channels. Octave's file ids are its own, so they are opened on
## /dev/fd/N rather than taken over; the same is done again whenever a cell has closed them
## (`fclose all`).
function open_channels ()
  s = store ();
  s.frames = reopen (s, "frames", "/dev/fd/4", "w");
  s.replies = reopen (s, "replies", "/dev/fd/8", "r");
  s.diagnostics = reopen (s, "diagnostics", "/dev/fd/5", "a");
  ## Fd 1 writes to /dev/null while the prompt writes, and the user's FIFO at all other times.
  s.null_out = reopen (s, "null_out", "/dev/null", "w");
  s.user_out = reopen (s, "user_out", "/dev/fd/9", "w");
  store (s);
  if (any ([s.frames, s.replies, s.null_out, s.user_out] < 0))
    diagnose ("the driver's descriptors are not set up; was it started by launch.sh?");
    quit (2, "force");
  endif
endfunction

## Writes a line for the runner's log, on the runner's stderr.
function diagnose (message)
  s = store ();
  if (isfield (s, "diagnostics") && is_open (s.diagnostics))
    fprintf (s.diagnostics, "cellgate-octave: %s\n", message);
    fflush (s.diagnostics);
  endif
endfunction

function fid = reopen (s, name, path, mode)
  if (isfield (s, name) && is_open (s.(name)))
    fid = s.(name);
  else
    fid = fopen (path, mode);
  endif
endfunction

function open = is_open (fid)
  open = fid >= 0 && ! isempty (fopen (fid));
endfunction

## Sets things up the way they must be after every interrupt: stdout to the user's FIFO, the
## reply stream in step with the frames; then lets the forwarder answer for the request that was
## cut short.
function recover ()
  open_channels ();
  s = store ();
  ## What the prompt printed after the interrupt is still buffered: it goes to /dev/null first.
  fflush (stdout);
  dup2 (s.user_out, 1);
  s.in_cell = false;
  store (s);
  resync ();
  close_all_figures ();
  ## An interrupted cell may leave the driver's variables behind in the user's workspace.
  try
    evalin ("base", "clear __cellgate_ans__ __cellgate_value__");
  catch
  end_try_catch
  send_frame ("forwarder_interrupted", "");
endfunction

## The interrupt may have come between a frame and its reply, or in the middle of a reply: the
## replies are skipped up to the one that answers a token never used before.
function resync ()
  s = store ();
  s.resyncs += 1;
  store (s);
  token = sprintf ("resync-%d-%d-%d", getpid (), s.resyncs, round (rand () * 1e9));
  write_frame ("forwarder_sync", token);
  skip_replies_until (token);
endfunction

function after_interrupt ()
  fflush (stdout);
  fflush (stderr);
  s = store ();
  if (isstruct (s) && isfield (s, "null_out") && is_open (s.null_out))
    dup2 (s.null_out, 1);
  endif
endfunction

## Reads replies until one ends with `token`.
function skip_replies_until (token)
  s = store ();
  window = "";
  while (true)
    [byte, count] = fread (s.replies, 1, "uint8=>char");
    if (count == 0)
      lost_forwarder ();
    endif
    window = [window, byte];
    if (numel (window) > numel (token))
      window = window(end - numel (token) + 1:end);
    endif
    if (strcmp (window, token))
      return;
    endif
  endwhile
endfunction

function setup_session ()
  ## Paging would hold output back, and the prompt only serves to resume the driver.
  more ("off");
  PS1 ("");
  PS2 ("");
  ## Without a display only gnuplot can draw; figures are drawn off screen and printed to PNG.
  warning ("off", "Octave:gnuplot-graphics");
  warning ("off", "Octave:shadowed-function");
  warning ("off", "print:nogs");
  if (any (strcmp (available_graphics_toolkits (), "gnuplot")))
    graphics_toolkit ("gnuplot");
  endif
  ## A visible figure is drawn by gnuplot on its screen terminal, which without a display is
  ## text on stdout. Figures therefore stay invisible even when created with "visible" "on",
  ## and one made visible later is drawn on the `unknown` terminal, which draws nothing.
  set (0, "defaultfigurevisible", "off");
  set (0, "defaultfigurecreatefcn", @(figure, varargin) set (figure, "visible", "off"));
  setenv ("GNUTERM", "unknown");
  ## The variable only served to find the driver; the user's environment is the runner's.
  unsetenv ("CELLGATE_DRIVER_DIR");
endfunction

## ---------------------------------------------------------------------------------------------
## Frames.

function write_frame (kind, body)
  s = store ();
  fwrite (s.frames, [sprintf("%s %d\n", kind, numel (body)), body], "uint8");
  if (fflush (s.frames) != 0)
    lost_forwarder ();
  endif
endfunction

## Reads one reply frame of the forwarder: the header a byte at a time, since nothing may be
## read beyond the frame.
function [kind, body] = read_reply ()
  s = store ();
  header = blanks (0);
  while (true)
    [byte, count] = fread (s.replies, 1, "uint8=>char");
    if (count == 0)
      lost_forwarder ();
    endif
    if (byte == "\n")
      break;
    endif
    header(end + 1) = byte;
  endwhile
  parts = strsplit (header, " ");
  kind = parts{1};
  body_length = str2double (parts{2});
  body = blanks (0);
  if (body_length > 0)
    [body, count] = fread (s.replies, [1, body_length], "uint8=>char");
    if (count != body_length)
      lost_forwarder ();
    endif
  endif
endfunction

## Sends one frame and waits until the forwarder has passed it on to the runner.
function send_frame (kind, body)
  write_frame (kind, body);
  read_reply ();
endfunction

function send_json (kind, payload)
  send_frame (kind, jsonencode (payload));
endfunction

function log_message (text)
  send_frame ("log", text);
endfunction

function lost_forwarder ()
  ## The forwarder only goes away with the runner: nobody is left to report to.
  diagnose ("the forwarder has gone away");
  quit (0, "force");
endfunction

## How many SIGINTs the process group has received so far, as the forwarder counted them.
function count = interrupts_seen ()
  write_frame ("forwarder_sync", "");
  [~, body] = read_reply ();
  count = str2double (body);
endfunction

## The next command from the runner, taken from the forwarder. The forwarder wakes the driver
## up when a SIGINT arrives meanwhile, so that the interrupt takes effect.
function [kind, body] = next_command ()
  do
    write_frame ("forwarder_next", "");
    [kind, body] = read_reply ();
  until (! strcmp (kind, "forwarder_wakeup"))
  write_frame ("forwarder_taken", "");
endfunction

## ---------------------------------------------------------------------------------------------
## The main loop.

function serve ()
  while (true)
    [kind, body] = next_command ();
    try
      dispatch (kind, body);
    catch problem
      ## A bug in the driver must not end the kernel.
      log_message (sprintf ("driver error handling %s: %s", kind, problem.message));
    end_try_catch
  endwhile
endfunction

function dispatch (kind, body)
  switch (kind)
    case "execute"
      execute (body);
    case "complete"
      answer ("complete_reply", @complete, body,
              struct ("matches", {{}}, "cursor_start", 0, "cursor_end", 0,
                      "metadata", struct ()));
    case "is_complete"
      answer ("is_complete_reply", @is_complete, body, struct ("status", "unknown"));
    case "inspect"
      answer ("inspect_reply", @inspect, body,
              struct ("found", false, "data", struct (), "metadata", struct ()));
    case "shutdown"
      close_all_figures ();
      quit (0, "force");
    case {"input_reply", "input_abort"}
      ## The answer to an input() that was interrupted before the answer came.
    otherwise
      log_message (sprintf ("ignored unknown command %s", kind));
  endswitch
endfunction

function answer (reply_kind, compute, body, fallback)
  try
    reply = compute (jsondecode (body));
  catch problem
    log_message (sprintf ("%s failed: %s", reply_kind, problem.message));
    reply = fallback;
  end_try_catch
  send_json (reply_kind, reply);
endfunction

## ---------------------------------------------------------------------------------------------
## Running cells.

function execute (code)
  s = store ();
  s.cell_count += 1;
  s.in_cell = true;
  s.payloads = {};
  store (s);
  define_helpers ();
  [problem, result] = run_code (code);
  fflush (stdout);
  fflush (stderr);
  ## A cell may have closed the driver's files (`fclose all`).
  open_channels ();
  figure_problem = send_figures ();
  if (isempty (problem))
    problem = figure_problem;
  endif
  if (! isempty (problem))
    send_json ("error", problem);
  elseif (! isempty (result))
    data = struct ();
    data.("text/plain") = result;
    send_json ("result", struct ("data", data, "metadata", struct ()));
  endif
  s = store ();
  s.in_cell = false;
  done = struct ("status", "ok");
  if (! isempty (problem))
    done.status = "error";
  endif
  if (! isempty (s.payloads))
    done.payload = s.payloads;
  endif
  s.payloads = {};
  store (s);
  send_json ("done", done);
endfunction

## Runs a cell in the base workspace; returns the error event's payload, or [] when it ran
## through, and the cell's result: what Octave would display for the last line (`ans = 3`,
## `x = ...`) when that line is one statement that shows a value, else "".
function [payload, result] = run_code (code)
  payload = [];
  result = "";
  ## Octave's parser only knows "\n" as a line end.
  code = strrep (strrep (code, "\r\n", "\n"), "\r", "\n");
  payload = parse_problem (code);
  if (! isempty (payload))
    return;
  endif
  [head, last] = split_last_statement (code);
  try
    if (isempty (last))
      evalin ("base", code);
      return;
    endif
    if (! isempty (strtrim (head)))
      evalin ("base", head);
    endif
  catch problem
    payload = error_payload (problem);
    return;
  end_try_catch
  ## The last line runs with its display turned off (a semicolon), so that its output still
  ## streams and stderr stays stderr; then the value it would have displayed is displayed
  ## under evalc, which has no side effects for a variable.
  [~, ~, code_end] = strip_strings_and_comments (last);
  quiet = [last(1:code_end) ";"];
  [kind, name] = statement_kind (last);
  saved_ans = false;
  try
    switch (kind)
      case "assignment"
        evalin ("base", quiet);
      case "expression"
        ## A value the expression yields becomes `ans`; the user's `ans` is kept meanwhile.
        saved_ans = base_value ("exist ('ans', 'var')") == 1;
        if (saved_ans)
          evalin ("base", "__cellgate_ans__ = ans; clear ans");
        endif
        evalin ("base", quiet);
        name = "ans";
      case "variable"
      otherwise
        evalin ("base", last);
        name = "";
    endswitch
  catch problem
    payload = error_payload (problem);
    name = "";
  end_try_catch
  if (saved_ans)
    if (base_value ("exist ('ans', 'var')") != 1)
      evalin ("base", "ans = __cellgate_ans__;");
      name = "";
    endif
    evalin ("base", "clear __cellgate_ans__");
  endif
  if (! isempty (name) && base_value (sprintf ("exist ('%s', 'var')", name)) == 1)
    text = base_value (sprintf ("evalc ('%s')", name));
    ## Octave displays a value as `x = 3`, or `x =` and the value below after a blank line.
    result = regexprep (regexprep (text, '^\n+', ""), '\s+$', "");
  endif
endfunction

## Octave's eval parses and runs code one line (one statement list) at a time, so a syntax
## error in a later line is only found once the lines before it have run; the last line also
## runs apart from the rest (run_code). A cell is therefore parsed whole first, as a script
## file, which runs nothing and defines nothing, and one that does not parse does not run.
## Returns the error event's payload for a parse error, else [].
function payload = parse_problem (code)
  payload = [];
  if (isempty (strtrim (code)))
    return;
  endif
  file = [tempname() ".m"];
  fid = fopen (file, "w");
  if (fid < 0)
    log_message (sprintf ("cannot check cells before running them: %s", file));
    return;
  endif
  ## A first line of code makes the file a script, not a function file, even when the cell
  ## begins with a function definition; the line numbers of errors are one more than the cell's.
  fputs (fid, ["1;\n" code]);
  fclose (fid);
  saved_warnings = warning ();
  unwind_protect
    ## What the parser warns about (an unterminated block comment) is said again when the
    ## cell runs.
    warning ("off", "all");
    try
      __parse_file__ (file);
    catch problem
      payload = parse_error_payload (problem, file, numel (strsplit (code, "\n")));
    end_try_catch
  unwind_protect_cleanup
    warning (saved_warnings);
    unlink (file);
  end_unwind_protect
endfunction

## The error event's payload for a parse error of parse_problem's file, said of the cell of
## `line_count` lines (`parse error near line 2:`), or [] when the error is not a parse error,
## which the cell itself will meet or not when it runs.
function payload = parse_error_payload (problem, file, line_count)
  payload = [];
  found = regexp (problem.message, '^parse error near line (\d+) of file ([^\n]*)',
                  "tokens", "once");
  if (isempty (found) || ! strcmp (found{2}, file))
    log_message (sprintf ("cannot check cells before running them: %s", problem.message));
    return;
  endif
  ## Input that ends too soon is reported at the line after the last.
  line = min (max (str2double (found{1}) - 1, 1), line_count);
  header_end = regexp (problem.message, '\n', "once");
  if (isempty (header_end))
    header_end = numel (problem.message) + 1;
  endif
  message = [sprintf("parse error near line %d:", line), problem.message(header_end:end)];
  message = regexprep (message, '\s+$', "");
  payload = error_payload (struct ("identifier", problem.identifier, "message", message,
                                   "stack", struct ("file", {}, "name", {}, "line", {},
                                                    "column", {})));
endfunction

## The value of `expression` evaluated in the base workspace. evalin () with an expression
## would leave its value in the user's `ans`; an assignment to a variable of the driver's, read
## back by name and cleared, leaves the workspace as it was.
function value = base_value (expression)
  evalin ("base", sprintf ("__cellgate_value__ = %s;", expression));
  value = evalin ("base", "__cellgate_value__");
  evalin ("base", "clear __cellgate_value__");
endfunction

## What a simple statement is: an "assignment" to the variable `name` (`x = ...`, `x(2) = ...`,
## `s.a = ...`), a "variable" shown by naming it, an "expression", or "other" (an assignment to
## several variables, which Octave shows one by one).
function [kind, name] = statement_kind (line)
  name = "";
  [stripped, ~] = strip_strings_and_comments (line);
  do
    previous = stripped;
    ## Each bracketed group, nested ones too, becomes one "@", which no name contains.
    stripped = regexprep (stripped, '\([^][(){}]*\)|\[[^][(){}]*\]|\{[^][(){}]*\}', "@");
  until (strcmp (stripped, previous))
  stripped = strtrim (stripped);
  if (! isempty (regexp (stripped, '(?<![=<>~!])=(?!=)', "once")))
    target = regexp (stripped, '^([A-Za-z_]\w*)(@|\.[A-Za-z_]\w*)*\s*=(?!=)', "tokens", "once");
    if (isempty (target))
      kind = "other";
    else
      kind = "assignment";
      name = target{1};
    endif
  elseif (! isempty (regexp (stripped, '^[A-Za-z_]\w*$', "once"))
          && base_value (sprintf ("exist ('%s', 'var')", stripped)) == 1)
    kind = "variable";
    name = stripped;
  else
    kind = "expression";
  endif
endfunction

## Splits a cell into the code before its last line and that line, when the last line is one
## simple statement on its own (no `;` or `,` at its top level, no block keyword, not
## continued from the line before); otherwise `last` is "".
function [head, last] = split_last_statement (code)
  head = code;
  last = "";
  lines = strsplit (code, "\n");
  index = numel (lines);
  while (index > 0)
    [stripped, open_string] = strip_strings_and_comments (lines{index});
    if (open_string)
      return;
    endif
    ## A line of comments is blank; one that only holds a string is not.
    if (! isempty (regexp (lines{index}, '^\s*[^\s%#]', "once")))
      break;
    endif
    index -= 1;
  endwhile
  if (index == 0)
    return;
  endif
  line = stripped;
  do
    previous = line;
    line = regexprep (line, '\([^][(){}]*\)|\[[^][(){}]*\]|\{[^][(){}]*\}', " ");
  until (strcmp (line, previous))
  words = regexp (line, '(?<![\w.])[A-Za-z_]\w*', "match");
  keywords = {"if", "elseif", "else", "for", "parfor", "while", "switch", "case", ...
              "otherwise", "try", "catch", "do", "until", "function", "unwind_protect", ...
              "unwind_protect_cleanup", "classdef", "end", "endif", "endfor", "endwhile", ...
              "endswitch", "end_try_catch", "endfunction", "end_unwind_protect", "break", ...
              "continue", "return", "global", "persistent"};
  if (any (ismember (line, ";,")) || any (ismember (words, keywords)))
    return;
  endif
  candidate_head = strjoin (lines(1:index - 1), "\n");
  candidate = lines{index};
  head_state = is_complete (struct ("code", candidate_head));
  line_state = is_complete (struct ("code", candidate));
  if (! strcmp (head_state.status, "complete") || ! strcmp (line_state.status, "complete"))
    return;
  endif
  head = candidate_head;
  last = candidate;
endfunction

## ---------------------------------------------------------------------------------------------
## Rich output: the functions cells call, defined in the base workspace as command-line
## functions before every cell (`clear all` removes them) unless a function of that name
## exists. Octave has none of its own; `display` is its name for showing a value.

function define_helpers ()
  persistent sources;
  if (isempty (sources))
    ## Each helper passes its arguments on to the driver, which is locked in memory.
    sources = struct ();
    sources.display_data = {"function display_data (varargin)", ...
      "  __cellgate_driver__ ('display', 'display', varargin{:});"};
    sources.update_display = {"function update_display (display_id, varargin)", ...
      ["  __cellgate_driver__ ('display', 'update_display', varargin{:}, ", ...
       "'display_id', display_id);"]};
    types = struct ("display_html", "text/html", "display_markdown", "text/markdown", ...
                    "display_svg", "image/svg+xml", "display_latex", "text/latex");
    for name = fieldnames (types)'
      sources.(name{1}) = {sprintf("function %s (text, varargin)", name{1}), ...
        sprintf("  __cellgate_driver__ ('display', 'display', '%s', text, varargin{:});", ...
                types.(name{1}))};
    endfor
    sources.clear_output = {"function clear_output (wait)", ...
      "  __cellgate_driver__ ('clear_output', nargin > 0 && wait);"};
    sources.page = {"function page (text)", "  __cellgate_driver__ ('page', text);"};
  endif
  for name = fieldnames (sources)'
    if (! exist (name{1}))
      evalin ("base", strjoin ([sources.(name{1}), {"endfunction"}], "\n"));
    endif
  endfor
endfunction

## Sends a display (`kind` "display" or "update_display"). The arguments are MIME type and
## content pairs (`"text/html", "<b>hi</b>"`), a value first shown as Octave displays it, and
## `"display_id", ID` for a display that update_display () replaces later.
function rich_output (kind, varargin)
  data = struct ();
  display_id = "";
  arguments = varargin;
  if (! isempty (arguments) && ! (ischar (arguments{1}) && any (arguments{1} == "/")
                                   && numel (arguments) > 1))
    if (ischar (arguments{1}))
      data.("text/plain") = arguments{1};
    else
      data.("text/plain") = strtrim (evalc ("disp (arguments{1})"));
    endif
    arguments(1) = [];
  endif
  if (mod (numel (arguments), 2) != 0)
    error ("Octave:invalid-fun-call", "%s: MIME types and contents come in pairs", kind);
  endif
  for i = 1:2:numel (arguments)
    key = arguments{i};
    value = arguments{i + 1};
    if (! ischar (key))
      error ("Octave:invalid-fun-call", "%s: a MIME type must be a string", kind);
    elseif (strcmp (key, "display_id"))
      display_id = value;
    elseif (ischar (value))
      data.(key) = value;
    else
      data.(key) = strtrim (evalc ("disp (value)"));
    endif
  endfor
  if (isempty (fieldnames (data)))
    error ("Octave:invalid-fun-call", "%s: nothing to show", kind);
  endif
  output = struct ("data", data, "metadata", struct ());
  if (! isempty (display_id))
    output.transient = struct ("display_id", char (display_id));
  elseif (strcmp (kind, "update_display"))
    error ("Octave:invalid-fun-call", "update_display: a display id is needed");
  endif
  fflush (stdout);
  fflush (stderr);
  send_json (kind, output);
endfunction

## Shows text in the frontend's pager: an execute_reply payload of the running cell.
function add_page (text)
  s = store ();
  if (! isfield (s, "in_cell") || ! s.in_cell)
    printf ("%s\n", text);
    return;
  endif
  data = struct ();
  data.("text/plain") = text;
  s.payloads{end + 1} = struct ("source", "page", "data", data, "start", 0);
  store (s);
endfunction

function payload = error_payload (problem)
  s = store ();
  ename = problem.identifier;
  if (isempty (ename))
    ename = "error";
  endif
  message = problem.message;
  traceback = strsplit (["error: " message], "\n");
  frames = {};
  for frame = problem.stack(:)'
    ## The driver's own frames are not the user's business.
    if (strcmp (frame.file, s.driver_file) || strncmp (frame.name, "__cellgate_driver__", 19))
      continue;
    endif
    if (frame.line > 0)
      frames{end + 1} = sprintf ("    %s at line %d column %d", frame.name, frame.line,
                                 frame.column);
    else
      frames{end + 1} = sprintf ("    %s", frame.name);
    endif
  endfor
  if (! isempty (frames))
    traceback = [traceback, {"error: called from"}, frames];
  endif
  payload = struct ("ename", ename, "evalue", message, "traceback", {traceback});
endfunction

## ---------------------------------------------------------------------------------------------
## Figures.

## Sends every figure that is open as a PNG image and closes it. Figures are closed after
## every cell, so those that are open were drawn by the cell. Returns an error payload if
## drawing one failed, else [].
function payload = send_figures ()
  payload = [];
  ## The root's children are its figures; allchild() includes those with hidden handles.
  figures = sort (allchild (0));
  if (isempty (figures))
    return;
  endif
  for handle = figures(:)'
    try
      position = getpixelposition (handle);
      file = [tempname() ".png"];
      print (handle, "-dpngcairo", file, sprintf ("-S%d,%d", round (position(3)),
                                                  round (position(4))));
      fid = fopen (file, "r");
      bytes = fread (fid, Inf, "uint8=>uint8");
      fclose (fid);
      unlink (file);
      ## MIME types are not valid names in struct(), but dynamic field names may be anything.
      data = struct ();
      data.("image/png") = matlab.net.base64encode (bytes');
      data.("text/plain") = "<plot>";
      send_json ("display", struct ("data", data, "metadata", struct ()));
    catch problem
      if (isempty (payload))
        payload = error_payload (problem);
      endif
    end_try_catch
  endfor
  close_all_figures ();
endfunction

function close_all_figures ()
  try
    close ("all", "hidden");
  catch
  end_try_catch
endfunction

## ---------------------------------------------------------------------------------------------
## input(): asks the frontend.

function text = request_input (prompt)
  s = store ();
  if (! isfield (s, "in_cell") || ! s.in_cell)
    error ("Octave:no-input", "input: no frontend is waiting for input");
  endif
  fflush (stdout);
  fflush (stderr);
  send_json ("input_request", struct ("prompt", prompt, "password", false));
  while (true)
    [kind, body] = next_command ();
    switch (kind)
      case "input_reply"
        text = body;
        return;
      case "input_abort"
        error ("Octave:no-input", "input: the frontend has no stdin");
      case "execute"
        log_message ("ignored an execute command while a cell waits for input");
      otherwise
        dispatch (kind, body);
    endswitch
  endwhile
endfunction

## ---------------------------------------------------------------------------------------------
## Completion, completeness and inspection.

## Octave's strings are UTF-8 bytes, the protocol's cursor counts code points: the byte offset
## of code point `cursor`.
function offset = byte_offset (code, cursor)
  starts = find (bitand (uint8 (code), 192) != 128);
  if (cursor >= numel (starts))
    offset = numel (code);
  else
    offset = starts(cursor + 1) - 1;
  endif
endfunction

function count = code_points (text)
  count = sum (bitand (uint8 (text), 192) != 128);
endfunction

function cursor = clamp_cursor (request, code)
  cursor = code_points (code);
  if (isfield (request, "cursor_pos") && isnumeric (request.cursor_pos)
      && isscalar (request.cursor_pos) && request.cursor_pos >= 0
      && request.cursor_pos <= cursor)
    cursor = request.cursor_pos;
  endif
endfunction

function reply = complete (request)
  code = request_code (request);
  cursor = clamp_cursor (request, code);
  before = code(1:byte_offset (code, cursor));
  token = regexp (before, '[A-Za-z_][A-Za-z0-9_.]*$', "match", "once");
  matches = {};
  if (! isempty (token))
    found = base_value (sprintf ("completion_matches ('%s')", token));
    matches = unique (cellstr (found))';
    matches = matches(! cellfun (@isempty, matches));
  endif
  reply = struct ("matches", {matches}, "cursor_start", cursor - code_points (token),
                  "cursor_end", cursor, "metadata", struct ());
endfunction

function code = request_code (request)
  code = "";
  if (isfield (request, "code") && ischar (request.code))
    code = request.code;
  endif
endfunction

## Octave's parser cannot be asked whether input is complete, so blocks, brackets, strings and
## continuation lines are counted instead, the way a console decides whether to read on.
function reply = is_complete (request)
  code = strrep (request_code (request), "\r", "");
  if (isempty (strtrim (code)))
    reply = struct ("status", "complete");
    return;
  endif
  depth = 0;
  brackets = 0;
  continued = false;
  lines = strsplit (code, "\n");
  for i = 1:numel (lines)
    [line, open_string] = strip_strings_and_comments (lines{i});
    if (open_string)
      reply = struct ("status", "invalid");
      return;
    endif
    continued = ! isempty (regexp (line, '(\.\.\.|\\)\s*$', "once"));
    brackets += sum (ismember (line, "([{")) - sum (ismember (line, ")]}"));
    ## `end` inside brackets is an index, not the end of a block.
    do
      previous = line;
      line = regexprep (line, '\([^][(){}]*\)|\[[^][(){}]*\]|\{[^][(){}]*\}', " ");
    until (strcmp (line, previous))
    words = regexp (line, '(?<![\w.])[A-Za-z_]\w*', "match");
    depth += sum (ismember (words, {"if", "for", "parfor", "while", "switch", "try", "do", ...
                                    "function", "unwind_protect", "classdef", "methods", ...
                                    "properties", "events", "enumeration"}));
    depth -= sum (ismember (words, {"end", "endif", "endfor", "endparfor", "endwhile", ...
                                    "endswitch", "end_try_catch", "until", "endfunction", ...
                                    "end_unwind_protect", "endclassdef", "endmethods", ...
                                    "endproperties", "endevents", "endenumeration"}));
  endfor
  if (brackets < 0)
    reply = struct ("status", "invalid");
  elseif (depth > 0 || brackets > 0 || continued)
    last = lines{end};
    indent = regexp (last, '^\s*', "match", "once");
    if (depth > 0)
      indent = [indent "  "];
    endif
    reply = struct ("status", "incomplete", "indent", indent);
  else
    reply = struct ("status", "complete");
  endif
endfunction

## The line without string literals and comments, for counting keywords and brackets. An
## apostrophe is a transpose after a name, a closing bracket, a number or another quote.
function [result, open_string, code_end] = strip_strings_and_comments (line)
  result = blanks (0);
  open_string = false;
  i = 1;
  n = numel (line);
  ## Where the code ends and a comment begins.
  code_end = n;
  while (i <= n)
    c = line(i);
    if (c == "%" || c == "#")
      code_end = i - 1;
      break;
    elseif (c == '"' || (c == "'" && ! is_transpose (line, i)))
      closing = i + 1;
      while (closing <= n)
        if (line(closing) == c)
          if (closing < n && line(closing + 1) == c)
            closing += 2;
            continue;
          endif
          break;
        elseif (c == '"' && line(closing) == "\\")
          closing += 1;
        endif
        closing += 1;
      endwhile
      if (closing > n)
        open_string = true;
        return;
      endif
      i = closing + 1;
      continue;
    endif
    result(end + 1) = c;
    i += 1;
  endwhile
endfunction

function transpose = is_transpose (line, i)
  transpose = i > 1 && ! isempty (regexp (line(i - 1), '[\w.)\]}''"]', "once"));
endfunction

function reply = inspect (request)
  code = request_code (request);
  cursor = clamp_cursor (request, code);
  offset = byte_offset (code, cursor);
  left = regexp (code(1:offset), '[A-Za-z_][A-Za-z0-9_.]*$', "match", "once");
  right = regexp (code(offset + 1:end), '^[A-Za-z0-9_]*', "match", "once");
  name = [left right];
  reply = struct ("found", false, "data", struct (), "metadata", struct ());
  if (isempty (name))
    return;
  endif
  text = "";
  if (base_value (sprintf ("exist ('%s', 'var')", name)) == 1)
    text = base_value (sprintf ("evalc ('display (%s)')", name));
  elseif (any (exist (name) == [2, 3, 5, 103]))
    text = evalc (sprintf ("help ('%s')", name));
  endif
  if (! isempty (strtrim (text)))
    data = struct ();
    data.("text/plain") = strtrim (text);
    reply = struct ("found", true, "data", data, "metadata", struct ());
  endif
endfunction
