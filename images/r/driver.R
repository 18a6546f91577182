# cellgate R driver: the long-lived R process behind one R kernel.
#
# launch.sh starts it with the runner's command pipe on fd 3, a FIFO to the output forwarder
# (forward.pl) on fd 4, the runner's stderr on fd 5 and the forwarder's replies on fd 8.
# The user's fd 0 is /dev/null and fds 1 and 2 are FIFOs that the forwarder reads and passes on
# as `stdout` and `stderr` frames while cells run (docs/driver-protocol.md describes the frames).
#
# Cells run in the global environment, one top-level expression after the other, the way the R
# console runs them: a visible value is printed, and the value of the last expression becomes the
# cell's `result`. Plots are drawn on PNG devices and sent as `display` events.
#
# The whole driver runs with interrupts suspended; only the user's code runs with them allowed.
# A SIGINT therefore interrupts a cell but can never cut the driver's own work in half, and one
# that arrives while the driver is idle is discarded before the next cell starts.

suspendInterrupts(local({

DRIVER_VERSION <- "0.1.0"

# Descriptors set up by launch.sh.
FD_COMMANDS <- 3L
FD_FRAMES <- 4L
FD_DIAGNOSTICS <- 5L
FD_REPLIES <- 8L

# The longest frame header the protocol allows, newline included.
MAX_HEADER_LEN <- 64L
# How much is read from the command pipe at once.
READ_CHUNK <- 65536L
# Frames go to the forwarder in pieces no larger than PIPE_BUF. The kernel writes such a piece
# atomically, so a signal arriving during a write can never leave half a piece in the pipe.
WRITE_PIECE <- 4096L
# How often a pending readline() looks for an interrupt while it waits for the user's answer.
INPUT_POLL_SECONDS <- 0.05

driver <- environment()

# -------------------------------------------------------------------------------------------
# Channels.

open_channels <- function() {
  # fifo() connections read and write with plain system calls, without a buffer of their own,
  # so nothing is ever read ahead of the frame being parsed.
  driver$commands <- fifo(sprintf("/dev/fd/%d", FD_COMMANDS), open = "rb", blocking = TRUE)
  driver$frames <- fifo(sprintf("/dev/fd/%d", FD_FRAMES), open = "wb", blocking = TRUE)
  driver$replies <- fifo(sprintf("/dev/fd/%d", FD_REPLIES), open = "rb", blocking = TRUE)
  driver$diagnostics <- tryCatch(
    # raw: it is a pipe, and R warns (at exit, on the user's stderr) when it has to find out.
    file(sprintf("/dev/fd/%d", FD_DIAGNOSTICS), open = "a", raw = TRUE),
    error = function(e) NULL
  )
  # A second, non-blocking view of the command pipe, so that a readline() waiting for the
  # user's answer can still notice an interrupt.
  driver$commands_polled <- NULL
  driver$input_buffer <- raw(0)
}

diagnose <- function(message) {
  if (is.null(diagnostics)) return(invisible())
  try(silent = TRUE, {
    cat("cellgate-r: ", message, "\n", sep = "", file = diagnostics)
    flush(diagnostics)
  })
}

# Sends one frame and waits until the forwarder has passed it on to the runner. The forwarder's
# reply holds the number of SIGINTs it has seen (see forward.pl), which is returned.
send_frame <- function(kind, body = raw(0)) {
  suspendInterrupts({
    data <- c(charToRaw(sprintf("%s %d\n", kind, length(body))), body)
    count <- tryCatch({
      for (start in seq.int(1L, length(data), by = WRITE_PIECE)) {
        writeBin(data[start:min(length(data), start + WRITE_PIECE - 1L)], frames)
      }
      reply <- read_reply()
      as.numeric(strsplit(rawToChar(reply$body), " ", fixed = TRUE)[[1L]][1L])
    }, error = function(e) NULL, warning = function(w) NULL)
    if (is.null(count)) {
      # The forwarder only goes away with the runner's event pipe: nobody is left to report to.
      diagnose("the output forwarder has gone away")
      exit_driver(0L, run_last = FALSE)
    }
  })
  count
}

# Reads the forwarder's reply frame; the header a byte at a time, since it is short and nothing
# may be read beyond the frame.
read_reply <- function() {
  header <- raw(0)
  repeat {
    byte <- readBin(replies, "raw", 1L)
    if (length(byte) == 0L) stop("the forwarder has closed its replies")
    if (byte == as.raw(10L)) break
    header <- c(header, byte)
  }
  parts <- strsplit(rawToChar(header), " ", fixed = TRUE)[[1L]]
  size <- as.integer(parts[2L])
  body <- raw(0)
  while (length(body) < size) {
    chunk <- readBin(replies, "raw", size - length(body))
    if (length(chunk) == 0L) stop("the forwarder has closed its replies")
    body <- c(body, chunk)
  }
  list(kind = parts[1L], body = body)
}

# How many SIGINTs the process group has received so far, as the forwarder counted them.
interrupts_seen <- function() send_frame("forwarder_sync")

send_json <- function(kind, payload) {
  invisible(send_frame(kind, charToRaw(to_json(payload))))
}

log_message <- function(text) {
  invisible(send_frame("log", charToRaw(enc2utf8(text))))
}

# The next complete frame in the input buffer as list(kind, body), or NULL.
next_buffered_frame <- function() {
  buffer <- input_buffer
  head_len <- min(length(buffer), MAX_HEADER_LEN)
  newline <- match(as.raw(10L), buffer[seq_len(head_len)])
  if (is.na(newline)) {
    if (length(buffer) >= MAX_HEADER_LEN) protocol_error("a frame header is too long")
    return(NULL)
  }
  header <- rawToChar(buffer[seq_len(newline - 1L)])
  parts <- regmatches(header, regexec("^([a-z0-9_]+) ([0-9]{1,12})$", header))[[1L]]
  if (length(parts) != 3L) protocol_error(sprintf("malformed frame header %s", deparse(header)))
  end <- newline + as.numeric(parts[3L])
  if (length(buffer) < end) return(NULL)
  body <- if (end > newline) buffer[(newline + 1L):end] else raw(0)
  driver$input_buffer <- if (end < length(buffer)) buffer[(end + 1L):length(buffer)] else raw(0)
  list(kind = parts[2L], body = body)
}

protocol_error <- function(message) {
  diagnose(message)
  exit_driver(2L, run_last = FALSE)
}

# Blocks until the next command arrives; NULL when the runner has closed the pipe.
receive <- function() {
  repeat {
    frame <- next_buffered_frame()
    if (!is.null(frame)) return(frame)
    chunk <- readBin(commands, "raw", READ_CHUNK)
    if (length(chunk) == 0L) return(NULL)
    driver$input_buffer <- c(input_buffer, chunk)
  }
}

# The next command if one is complete now; NULL if not; FALSE when the pipe is closed.
poll_command <- function() {
  if (is.null(commands_polled)) {
    driver$commands_polled <- fifo(sprintf("/dev/fd/%d", FD_COMMANDS), open = "rb",
                                   blocking = FALSE)
  }
  repeat {
    frame <- next_buffered_frame()
    if (!is.null(frame)) return(frame)
    # An empty non-blocking pipe is reported as an error, end-of-file as no bytes.
    chunk <- tryCatch(readBin(commands_polled, "raw", READ_CHUNK),
                      error = function(e) NULL, warning = function(w) NULL)
    if (is.null(chunk)) return(NULL)
    if (length(chunk) == 0L) return(FALSE)
    driver$input_buffer <- c(input_buffer, chunk)
  }
}

exit_driver <- function(status, run_last = TRUE) {
  try(silent = TRUE, close_plot_devices())
  original_quit(save = "no", status = status, runLast = run_last)
}

# -------------------------------------------------------------------------------------------
# JSON, just enough for the protocol's bodies.

json_string <- function(text) {
  if (length(text) == 0L) return(character(0))
  text <- enc2utf8(as.character(text))
  bad <- !validUTF8(text)
  if (any(bad)) text[bad] <- iconv(text[bad], "UTF-8", "UTF-8", sub = "?")
  text <- gsub("\\", "\\\\", text, fixed = TRUE)
  text <- gsub("\"", "\\\"", text, fixed = TRUE)
  text <- gsub("\n", "\\n", text, fixed = TRUE)
  text <- gsub("\r", "\\r", text, fixed = TRUE)
  text <- gsub("\t", "\\t", text, fixed = TRUE)
  if (any(grepl("[\001-\037\177]", text, perl = TRUE))) {
    for (code in c(1:31, 127)) {
      char <- intToUtf8(code)
      text <- gsub(char, sprintf("\\u%04x", code), text, fixed = TRUE)
    }
  }
  paste0("\"", text, "\"")
}

# Lists become objects when named and arrays when not; a vector becomes an array when it does
# not have exactly one element or is wrapped in I(). NA becomes null.
to_json <- function(value) {
  if (is.null(value)) return("null")
  if (is.list(value)) {
    parts <- vapply(value, to_json, "")
    names <- names(value)
    if (is.null(names)) return(paste0("[", paste(parts, collapse = ","), "]"))
    if (length(value) == 0L) return("{}")
    return(paste0("{", paste0(json_string(names), ":", parts, collapse = ","), "}"))
  }
  items <- if (is.character(value) || is.factor(value)) {
    json_string(as.character(value))
  } else if (is.logical(value)) {
    ifelse(value, "true", "false")
  } else if (is.numeric(value)) {
    ifelse(is.finite(value), format(value, digits = 15, scientific = FALSE, trim = TRUE), "null")
  } else {
    json_string(as.character(value))
  }
  items[is.na(value)] <- "null"
  if (length(value) == 1L && !inherits(value, "AsIs")) return(items)
  paste0("[", paste(items, collapse = ","), "]")
}

JSON_TOKEN <- paste0(
  "\"(?:[^\"\\\\]|\\\\.)*\"",
  "|-?[0-9]+(?:\\.[0-9]+)?(?:[eE][-+]?[0-9]+)?",
  "|true|false|null|[][{}:,]"
)

# Parses a JSON text into lists (objects are named lists) and length-one vectors.
from_json <- function(text) {
  tokens <- regmatches(text, gregexpr(JSON_TOKEN, text, perl = TRUE))[[1L]]
  position <- 1L
  parse_value <- function() {
    if (position > length(tokens)) stop("unexpected end of JSON")
    token <- tokens[position]
    position <<- position + 1L
    first <- substr(token, 1L, 1L)
    if (first == "{") {
      result <- list()
      if (tokens[position] == "}") {
        position <<- position + 1L
        return(result)
      }
      repeat {
        key <- parse_value()
        if (tokens[position] != ":") stop("malformed JSON object")
        position <<- position + 1L
        value <- parse_value()
        result[key] <- list(value)
        separator <- tokens[position]
        position <<- position + 1L
        if (separator == "}") return(result)
        if (separator != ",") stop("malformed JSON object")
      }
    }
    if (first == "[") {
      result <- list()
      if (tokens[position] == "]") {
        position <<- position + 1L
        return(result)
      }
      repeat {
        result[[length(result) + 1L]] <- parse_value()
        separator <- tokens[position]
        position <<- position + 1L
        if (separator == "]") return(result)
        if (separator != ",") stop("malformed JSON array")
      }
    }
    if (first == "\"") return(json_unescape(substr(token, 2L, nchar(token) - 1L)))
    if (token == "true") return(TRUE)
    if (token == "false") return(FALSE)
    if (token == "null") return(NULL)
    as.numeric(token)
  }
  parse_value()
}

JSON_ESCAPE <- paste0(
  "\\\\u[dD][89abAB][0-9a-fA-F]{2}\\\\u[dD][c-fC-F][0-9a-fA-F]{2}",
  "|\\\\u[0-9a-fA-F]{4}|\\\\."
)
SIMPLE_ESCAPES <- c(b = "\b", f = "\f", n = "\n", r = "\r", t = "\t")

json_unescape <- function(text) {
  if (!grepl("\\", text, fixed = TRUE)) {
    Encoding(text) <- "UTF-8"
    return(text)
  }
  pieces <- regmatches(text, gregexpr(JSON_ESCAPE, text, perl = TRUE), invert = NA)[[1L]]
  # With invert = NA the pieces alternate: plain text, escape, plain text, ...
  escapes <- seq(2L, length(pieces), by = 2L)
  pieces[escapes] <- vapply(pieces[escapes], function(escape) {
    kind <- substr(escape, 2L, 2L)
    if (kind != "u") {
      replacement <- SIMPLE_ESCAPES[kind]
      return(if (is.na(replacement)) kind else unname(replacement))
    }
    high <- strtoi(substr(escape, 3L, 6L), 16L)
    if (nchar(escape) == 12L) {
      low <- strtoi(substr(escape, 9L, 12L), 16L)
      return(intToUtf8(0x10000 + (high - 0xD800) * 1024 + (low - 0xDC00)))
    }
    # A lone surrogate cannot be represented in UTF-8.
    if (high >= 0xD800 && high <= 0xDFFF) return("\uFFFD")
    intToUtf8(high)
  }, "")
  result <- paste(pieces, collapse = "")
  Encoding(result) <- "UTF-8"
  result
}

BASE64_ALPHABET <- charToRaw(
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)

base64_encode <- function(bytes) {
  count <- length(bytes)
  if (count == 0L) return("")
  padding <- (3L - count %% 3L) %% 3L
  values <- matrix(as.integer(c(bytes, raw(padding))), nrow = 3L)
  groups <- values[1L, ] * 65536L + values[2L, ] * 256L + values[3L, ]
  indices <- rbind(groups %/% 262144L, (groups %/% 4096L) %% 64L,
                   (groups %/% 64L) %% 64L, groups %% 64L) + 1L
  encoded <- BASE64_ALPHABET[indices]
  if (padding > 0L) {
    encoded[(length(encoded) - padding + 1L):length(encoded)] <- charToRaw("=")
  }
  rawToChar(encoded)
}

# -------------------------------------------------------------------------------------------
# Plots.
#
# Every device R opens by default during a cell is a PNG device writing one file per page into
# the session's temporary directory. A page file is complete once the device has moved on to
# the next page, so pages are sent as soon as that happens (after the top-level expression that
# moved on) and the last page of every device when the cell ends and its devices are closed.
# A plot therefore never outlives its cell, as with IRkernel: a new cell starts a new plot.

plot_dir <- file.path(tempdir(), "cellgate-plots")
dir.create(plot_dir, showWarnings = FALSE, recursive = TRUE)
plot_devices <- integer(0)
plot_device_count <- 0L
plots_sent <- character(0)

# The device function R calls whenever something is drawn and no device is open. The size
# follows IRkernel's options, so notebooks written for it keep their figure sizes.
open_plot_device <- function(...) {
  driver$plot_device_count <- plot_device_count + 1L
  pattern <- file.path(plot_dir, sprintf("cell%06d-device%04d-page%%05d.png",
                                         cell_count, plot_device_count))
  grDevices::png(
    pattern,
    width = getOption("repr.plot.width", 7),
    height = getOption("repr.plot.height", 7),
    res = getOption("repr.plot.res", 120),
    units = "in",
    type = if (isTRUE(capabilities("cairo"))) "cairo" else getOption("bitmapType")
  )
  driver$plot_devices <- c(plot_devices, grDevices::dev.cur())
  invisible()
}

cell_plot_files <- function() {
  sort(list.files(plot_dir, pattern = sprintf("^cell%06d-", cell_count), full.names = TRUE))
}

send_plot <- function(path) {
  size <- file.size(path)
  if (!is.na(size) && size > 0) {
    bytes <- readBin(path, "raw", size)
    send_json("display", list(
      data = list(`image/png` = base64_encode(bytes), `text/plain` = "<plot>"),
      metadata = structure(list(), names = character(0))
    ))
  }
  unlink(path)
  driver$plots_sent <- c(plots_sent, path)
}

# Sends the pages of this cell's plots that are complete: all but the last of each device.
send_finished_plots <- function() {
  if (length(plot_devices) == 0L) return(invisible())
  files <- setdiff(cell_plot_files(), plots_sent)
  if (length(files) == 0L) return(invisible())
  device_of <- sub("-page[0-9]+\\.png$", "", basename(files))
  last_page <- !duplicated(device_of, fromLast = TRUE)
  for (path in files[!last_page]) send_plot(path)
}

close_plot_devices <- function() {
  open <- grDevices::dev.list()
  for (device in plot_devices) {
    index <- match(device, open)
    if (!is.na(index) && names(open)[index] == "png") grDevices::dev.off(device)
  }
  driver$plot_devices <- integer(0)
}

send_all_plots <- function() {
  close_plot_devices()
  for (path in setdiff(cell_plot_files(), plots_sent)) send_plot(path)
  driver$plots_sent <- character(0)
}

# -------------------------------------------------------------------------------------------
# Running cells.

cell_count <- 0L
# The call stack of the last error and the function of each frame, taken where the error was
# signalled.
last_calls <- NULL
last_frames <- NULL
# The name of the condition that q() signals to end a cell.
QUIT_CONDITION <- "cellgate_quit"

# Runs `thunk` as the user's code: interrupts allowed, warnings reported as they happen.
# Returns list(kind = "value" | "error" | "interrupt" | "quit", ...).
run_user <- function(thunk) {
  driver$last_calls <- NULL
  driver$last_frames <- NULL
  tryCatch(
    withCallingHandlers(
      list(kind = "value", value = allowInterrupts({
        value <- withVisible(thunk())
        # An interrupt that R only noted while it was busy (system2() waiting for the child
        # the interrupt killed, for one) is pending now; it must stop this cell, not a later
        # step of the driver.
        Sys.sleep(0)
        value
      })),
      warning = on_warning,
      error = record_calls
    ),
    error = function(e) list(kind = "error", condition = e, calls = last_calls,
                             frames = last_frames),
    interrupt = function(i) list(kind = "interrupt"),
    cellgate_quit = function(q) list(kind = "quit", status = q$status)
  )
}

# Reports a warning on stderr the moment it is signalled, as R does with options(warn = 1);
# R's default of deferring warnings to the end of the top-level call never happens here, since
# the whole driver is one top-level call.
on_warning <- function(w) {
  level <- getOption("warn", 0L)
  # With warn >= 2 R turns the warning into an error, which the cell then reports.
  if (is.numeric(level) && level >= 2) return()
  if (!is.numeric(level) || level >= 0) {
    call <- condition_call(w)
    message <- conditionMessage(w)
    # The layout of R's own warnings, including where it breaks a long line.
    text <- if (is.null(call)) {
      sprintf("Warning: %s\n", message)
    } else {
      call_text <- deparse1(call, collapse = " ")
      long <- 18L + nchar(call_text, "width") + nchar(message, "width") > 75L
      sprintf("Warning in %s :%s %s\n", call_text, if (long) "\n " else "", message)
    }
    cat(text, file = stderr())
  }
  invokeRestart("muffleWarning")
}

record_calls <- function(e) {
  driver$last_calls <- sys.calls()
  driver$last_frames <- lapply(seq_along(last_calls), sys.function)
}

# The user's calls at the time of the error: those after the driver's eval() and before the
# error handling machinery.
user_calls <- function(calls, functions) {
  if (is.null(calls)) return(list())
  start <- NA_integer_
  for (index in seq_along(functions)) {
    if (identical(functions[[index]], evaluate_in_global)) {
      start <- index + 1L
      break
    }
  }
  if (is.na(start)) return(list())
  # eval() appears twice in the stack: the closure and the evaluation it starts.
  while (start <= length(calls) &&
         (identical(functions[[start]], base::eval) ||
          identical(calls[[start]], calls[[start - 1L]]))) {
    start <- start + 1L
  }
  end <- length(calls)
  for (index in seq_len(end)) {
    if (index >= start && (identical(functions[[index]], base::.handleSimpleError) ||
                           identical(functions[[index]], record_calls))) {
      end <- index - 1L
      break
    }
  }
  if (end < start) list() else calls[start:end]
}

evaluate_in_global <- function(expression) eval(expression, globalenv())

# The call a condition names, or NULL when it is the driver's own eval(): a warning() or stop()
# typed at the top level of a cell names no call in the R console either.
condition_call <- function(condition) {
  call <- conditionCall(condition)
  if (identical(call, quote(eval(expression, globalenv())))) NULL else call
}

# Prints a value the way the R console does: S4 objects with show(), others with print(),
# called from the global environment so that methods defined there are found.
print_value <- function(value) {
  if (isS4(value)) methods::show(value) else print(value)
}
environment(print_value) <- globalenv()

error_payload <- function(condition, calls) {
  message <- conditionMessage(condition)
  call <- condition_call(condition)
  # The layout of R's own error messages, including where it breaks a long line.
  first <- if (is.null(call)) {
    sprintf("Error: %s", message)
  } else {
    call_text <- deparse1(call, collapse = " ")
    first_line <- sub("\n.*", "", message)
    long <- nchar(call_text, "width") + nchar(first_line, "width") + 12L > 75L
    sprintf("Error in %s : %s%s", call_text, if (long) "\n  " else "", message)
  }
  traceback <- strsplit(first, "\n", fixed = TRUE)[[1L]]
  if (length(calls) > 0L) {
    lines <- vapply(calls, function(call) {
      text <- deparse1(call, collapse = " ")
      if (nchar(text) > 120L) paste0(substr(text, 1L, 117L), "...") else text
    }, "")
    traceback <- c(traceback, "Traceback:", sprintf("%d. %s", seq_along(lines), lines))
  }
  list(
    ename = class(condition)[1L],
    evalue = message,
    traceback = I(traceback)
  )
}

INTERRUPT_PAYLOAD <- list(
  ename = "KeyboardInterrupt",
  evalue = "the cell was interrupted",
  traceback = I("KeyboardInterrupt: the cell was interrupted")
)

# Runs one cell; returns "ok" or "error". Output events are sent in the order they happen:
# printed values and user output as the cell runs, then the remaining plots, then the result
# or the error.
run_cell <- function(code) {
  # R's parser only knows "\n" as a line end.
  code <- gsub("\r\n?", "\n", code, perl = TRUE)
  lines <- strsplit(code, "\n", fixed = TRUE)[[1L]]
  source_file <- srcfilecopy(sprintf("<cell %d>", cell_count), lines)
  expressions <- tryCatch(parse(text = code, keep.source = TRUE, srcfile = source_file),
                          error = function(e) e)
  if (inherits(expressions, "error")) {
    message <- strsplit(conditionMessage(expressions), "\n", fixed = TRUE)[[1L]]
    send_json("error", list(
      ename = "ParseError",
      evalue = message[1L],
      traceback = I(c(paste("Error:", message[1L]), message[-1L]))
    ))
    return("error")
  }

  outcome <- NULL
  result_text <- NULL
  count <- length(expressions)
  for (index in seq_len(count)) {
    expression <- expressions[[index]]
    outcome <- run_user(function() evaluate_in_global(expression))
    if (outcome$kind == "value" && outcome$value$visible) {
      value <- outcome$value$value
      if (index < count) {
        outcome <- run_user(function() print_value(value))
      } else {
        printed <- NULL
        outcome <- run_user(function() {
          printed <<- utils::capture.output(print_value(value))
        })
        if (outcome$kind == "value" && length(printed) > 0L) {
          result_text <- paste(printed, collapse = "\n")
        }
      }
    }
    send_finished_plots()
    if (outcome$kind != "value") break
  }
  send_all_plots()

  kind <- if (is.null(outcome)) "value" else outcome$kind
  if (kind == "error") {
    send_json("error", error_payload(outcome$condition,
                                     user_calls(outcome$calls, outcome$frames)))
    return("error")
  }
  if (kind == "interrupt") {
    send_json("error", INTERRUPT_PAYLOAD)
    return("error")
  }
  if (kind == "quit") {
    status <- suppressWarnings(as.integer(outcome$status))
    if (!is.na(status) && status != 0L) {
      send_json("error", list(ename = "Quit", evalue = sprintf("quit(status = %d)", status),
                              traceback = I(sprintf("The cell called quit(status = %d).",
                                                    status))))
      return("error")
    }
    return("ok")
  }
  if (!is.null(result_text)) {
    send_json("result", list(data = list(`text/plain` = result_text),
                             metadata = structure(list(), names = character(0))))
  }
  "ok"
}

execute <- function(code) {
  driver$cell_count <- cell_count + 1L
  driver$cell_running <- TRUE
  status <- tryCatch(run_cell(code), error = function(e) {
    # A failure of the driver itself: the user should still see that the cell did not finish.
    log_message(sprintf("driver error running a cell: %s", conditionMessage(e)))
    send_json("error", list(ename = "DriverError", evalue = conditionMessage(e),
                            traceback = I(conditionMessage(e))))
    "error"
  })
  driver$cell_running <- FALSE
  # A cell may have redirected R's output with sink(); the frames do not depend on it, but
  # everything it printed must be in the FIFOs before `done`.
  try(silent = TRUE, {
    flush(stdout())
    flush(stderr())
  })
  done <- list(status = status)
  if (length(cell_payloads)) done$payload <- cell_payloads
  driver$cell_payloads <- list()
  send_json("done", done)
}

# R's system(), like C's, ignores SIGINT while it waits for its child: an interrupt kills the
# child, and the cell would go on as if the command had just failed. The forwarder's count of
# SIGINTs before and after every system() and system2() call tells whether one arrived meanwhile.
stop_if_interrupted <- function(before) {
  if (cell_running && interrupts_seen() > before) {
    stop(structure(class = c("interrupt", "condition"), list(message = "", call = NULL)))
  }
  invisible()
}

# A function of the base package that stops the cell when an interrupt arrived while it ran. It
# has the original's arguments, so that args() and completion still show them.
checking_interrupts <- function(original) {
  checked <- function() NULL
  formals(checked) <- formals(original)
  body(checked) <- substitute({
    before <- COUNT()
    call <- sys.call()
    call[[1L]] <- ORIGINAL
    value <- withVisible(eval(call, parent.frame()))
    CHECK(before)
    if (value$visible) value$value else invisible(value$value)
  }, list(ORIGINAL = original, COUNT = interrupts_seen, CHECK = stop_if_interrupted))
  environment(checked) <- baseenv()
  checked
}

# -------------------------------------------------------------------------------------------
# Rich output: the functions cells call, attached to the search path as "cellgate". Their
# names and arguments follow IRdisplay's, so notebooks written for IRkernel mostly work as
# they are (without the `IRdisplay::` prefix).

EMPTY_OBJECT <- structure(list(), names = character(0))
# The execute_reply payloads of the running cell (help pages for the pager).
cell_payloads <- list()

is_mime_bundle <- function(value) {
  is.list(value) && length(value) > 0L && !is.null(names(value)) &&
    all(grepl("^[[:alnum:]._+-]+/[[:alnum:]._+-]+$", names(value)))
}

# What `value` looks like as a MIME bundle: a list named by MIME types is one already; with
# `mime`, the value's text is shown as that type; anything else as R prints it.
mime_bundle <- function(value, mime = NULL) {
  if (!is.null(mime)) {
    return(stats::setNames(list(paste(as.character(value), collapse = "\n")), mime))
  }
  if (is_mime_bundle(value)) {
    return(lapply(value, function(item) {
      if (is.list(item)) item else paste(as.character(item), collapse = "\n")
    }))
  }
  list(`text/plain` = paste(utils::capture.output(print_value(value)), collapse = "\n"))
}

send_display <- function(kind, data, metadata, display_id) {
  output <- list(data = data, metadata = if (length(metadata)) metadata else EMPTY_OBJECT)
  if (!is.null(display_id)) output$transient <- list(display_id = as.character(display_id))
  try(silent = TRUE, flush(stdout()))
  send_json(kind, output)
  invisible()
}

display_functions <- list(
  publish_mimebundle = function(data, metadata = NULL, display_id = NULL) {
    send_display("display", mime_bundle(data), metadata, display_id)
  },
  display = function(obj, mime = NULL, display_id = NULL, metadata = NULL) {
    send_display("display", mime_bundle(obj, mime), metadata, display_id)
  },
  update_display = function(obj, display_id, mime = NULL, metadata = NULL) {
    send_display("update_display", mime_bundle(obj, mime), metadata, display_id)
  },
  display_html = function(data, display_id = NULL) {
    send_display("display", mime_bundle(data, "text/html"), NULL, display_id)
  },
  display_markdown = function(data, display_id = NULL) {
    send_display("display", mime_bundle(data, "text/markdown"), NULL, display_id)
  },
  display_latex = function(data, display_id = NULL) {
    send_display("display", mime_bundle(data, "text/latex"), NULL, display_id)
  },
  display_javascript = function(data, display_id = NULL) {
    send_display("display", mime_bundle(data, "application/javascript"), NULL, display_id)
  },
  display_svg = function(data, display_id = NULL) {
    send_display("display", mime_bundle(data, "image/svg+xml"), NULL, display_id)
  },
  display_png = function(data = NULL, file = NULL, display_id = NULL) {
    if (is.null(data)) data <- readBin(file, "raw", file.size(file))
    send_display("display", list(`image/png` = base64_encode(data)), NULL, display_id)
  },
  # IRdisplay waits for new output by default, and so does this.
  clear_output = function(wait = TRUE) {
    try(silent = TRUE, flush(stdout()))
    send_json("clear_output", list(wait = isTRUE(wait)))
    invisible()
  }
)
for (name in names(display_functions)) environment(display_functions[[name]]) <- driver

add_page <- function(text) {
  if (!cell_running) {
    cat(text, "\n", sep = "")
    return(invisible())
  }
  page <- list(source = "page", data = list(`text/plain` = text), start = 0L)
  driver$cell_payloads[[length(cell_payloads) + 1L]] <- page
  invisible()
}

# The pager that `?topic`, help() and utils::page() call: during a cell the page goes to the
# frontend's pager, as an execute_reply payload.
show_pages <- function(files, header, title, delete.file) {
  text <- unlist(lapply(files, readLines, warn = FALSE, encoding = "UTF-8"))
  if (isTRUE(delete.file)) unlink(files)
  # Help text marks emphasis with backspaces, which a notebook would show literally.
  add_page(gsub(".\b", "", paste(text, collapse = "\n"), perl = TRUE))
}

# -------------------------------------------------------------------------------------------
# input: readline() asks the frontend.

cell_running <- FALSE

request_input <- function(prompt, password = FALSE) {
  if (!cell_running) return("")
  suspendInterrupts({
    try(silent = TRUE, flush(stdout()))
    send_json("input_request", list(prompt = as.character(prompt), password = password))
  })
  repeat {
    command <- suspendInterrupts(poll_command())
    if (is.null(command)) {
      # Waiting here, rather than in a blocking read, lets an interrupt stop the cell.
      Sys.sleep(INPUT_POLL_SECONDS)
      next
    }
    if (isFALSE(command)) exit_driver(0L)
    if (command$kind == "input_reply") {
      text <- rawToChar(command$body)
      Encoding(text) <- "UTF-8"
      return(text)
    }
    if (command$kind == "input_abort") stop("no input is available: the frontend has no stdin")
    suspendInterrupts(dispatch(command, waiting_for_input = TRUE))
  }
}

# -------------------------------------------------------------------------------------------
# Completion, completeness and inspection.

complete <- function(request) {
  code <- as.character(request$code %||% "")
  cursor <- clamp_cursor(request$cursor_pos, code)
  before <- substr(code, 1L, cursor)
  line <- sub(".*\n", "", before)
  utils:::.assignLinebuffer(line)
  utils:::.assignEnd(nchar(line))
  token <- utils:::.guessTokenFromLine()
  utils:::.completeToken()
  matches <- utils:::.retrieveCompletions()
  list(
    matches = I(as.character(matches)),
    cursor_start = cursor - nchar(token),
    cursor_end = cursor,
    metadata = structure(list(), names = character(0))
  )
}

clamp_cursor <- function(cursor, code) {
  length <- nchar(code)
  if (!is.numeric(cursor) || length(cursor) != 1L || is.na(cursor) || cursor < 0 ||
      cursor > length) {
    return(length)
  }
  as.integer(cursor)
}

`%||%` <- function(value, default) if (is.null(value)) default else value

# The parser's messages are translated, so the phrases that mark unfinished input are learnt
# from the parser itself rather than written down in English.
parse_problem <- function(text) {
  message <- tryCatch({
    parse(text = text, keep.source = FALSE)
    ""
  }, error = conditionMessage)
  sub("\n.*", "", sub("^<text>:[0-9]+:[0-9]+: ", "", message))
}
INCOMPLETE_PROBLEMS <- c(parse_problem("("), parse_problem("'"))

is_complete <- function(request) {
  code <- as.character(request$code %||% "")
  if (!nzchar(trimws(code))) return(list(status = "complete"))
  problem <- parse_problem(code)
  if (!nzchar(problem)) return(list(status = "complete"))
  if (!(problem %in% INCOMPLETE_PROBLEMS)) return(list(status = "invalid"))
  lines <- strsplit(code, "\n", fixed = TRUE)[[1L]]
  last <- utils::tail(lines[nzchar(trimws(lines))], 1L)
  indent <- sub("^([ \t]*).*$", "\\1", last)
  if (grepl("[{(]\\s*$", last)) indent <- paste0(indent, "  ")
  list(status = "incomplete", indent = indent)
}

NOT_FOUND <- list(found = FALSE, data = structure(list(), names = character(0)),
                  metadata = structure(list(), names = character(0)))

inspect <- function(request) {
  code <- as.character(request$code %||% "")
  cursor <- clamp_cursor(request$cursor_pos, code)
  detail <- request$detail_level %||% 0
  for (name in names_at(code, cursor)) {
    text <- describe(name, detail)
    if (!is.null(text)) {
      return(list(found = TRUE, data = list(`text/plain` = text),
                  metadata = structure(list(), names = character(0))))
    }
  }
  NOT_FOUND
}

NAME_CHARS <- "[A-Za-z0-9._:]"

# The name under the cursor, then the function whose call the cursor is in.
names_at <- function(code, cursor) {
  before <- substr(code, 1L, cursor)
  after <- substr(code, cursor + 1L, nchar(code))
  left <- regmatches(before, regexpr(paste0(NAME_CHARS, "*$"), before))
  right <- regmatches(after, regexpr(paste0("^", NAME_CHARS, "*"), after))
  found <- character(0)
  name <- paste0(left, right)
  if (nzchar(name)) found <- name
  callee <- regmatches(before, regexpr(paste0(NAME_CHARS, "+(?=\\([^()]*$)"), before,
                                       perl = TRUE))
  if (length(callee) == 1L && nzchar(callee)) found <- c(found, callee)
  unique(found)
}

describe <- function(name, detail) {
  object <- tryCatch({
    expression <- str2lang(name)
    if (!is.symbol(expression) && !(is.call(expression) &&
                                     as.character(expression[[1L]]) %in% c("::", ":::"))) {
      stop("not a name")
    }
    eval(expression, globalenv())
  }, error = function(e) NULL)
  topic <- sub("^.*:::?", "", name)
  help_text <- help_page(name, topic)
  if (is.null(object) && is.null(help_text)) return(NULL)
  parts <- character(0)
  if (is.function(object)) {
    signature <- tryCatch(
      sub("NULL$", "", paste(deparse(args(object)), collapse = "\n")),
      error = function(e) ""
    )
    if (nzchar(trimws(signature))) parts <- c(parts, paste0(topic, " <- ", trimws(signature)))
    if (detail > 0 || is.null(help_text)) {
      source <- tryCatch(utils::capture.output(print(object)), error = function(e) character(0))
      parts <- c(parts, paste(source, collapse = "\n"))
    }
  } else if (!is.null(object)) {
    summary <- tryCatch(utils::capture.output(utils::str(object)),
                        error = function(e) character(0))
    parts <- c(parts, sprintf("Class: %s", paste(class(object), collapse = ", ")),
               paste(summary, collapse = "\n"))
  }
  if (!is.null(help_text)) parts <- c(parts, help_text)
  paste(parts, collapse = "\n\n")
}

help_page <- function(name, topic) {
  package <- if (grepl("::", name, fixed = TRUE)) sub("::.*$", "", name) else NULL
  tryCatch({
    # help() quotes its arguments; do.call hands it the values.
    found <- do.call(utils::help, list(topic, package = package, help_type = "text"))
    if (length(found) == 0L) return(NULL)
    rd <- utils:::.getHelpFile(found[[1L]])
    text <- utils::capture.output(tools::Rd2txt(rd, options = list(underline_titles = FALSE)))
    # Rd2txt marks emphasis with backspaces, which a notebook would show literally.
    paste(gsub("_\b", "", text, fixed = TRUE), collapse = "\n")
  }, error = function(e) NULL, warning = function(w) NULL)
}

# -------------------------------------------------------------------------------------------
# The main loop.

EMPTY_COMPLETION <- list(matches = I(character(0)), cursor_start = 0L, cursor_end = 0L,
                         metadata = structure(list(), names = character(0)))

answer <- function(reply_kind, compute, body, fallback) {
  reply <- tryCatch({
    text <- rawToChar(body)
    Encoding(text) <- "UTF-8"
    compute(from_json(text))
  }, error = function(e) {
    log_message(sprintf("%s failed: %s", reply_kind, conditionMessage(e)))
    fallback
  })
  send_json(reply_kind, reply)
}

dispatch <- function(command, waiting_for_input = FALSE) {
  kind <- command$kind
  if (kind == "execute") {
    if (waiting_for_input) {
      log_message("ignored an execute command while a cell waits for input")
      return(invisible())
    }
    code <- rawToChar(command$body)
    Encoding(code) <- "UTF-8"
    execute(code)
  } else if (kind == "complete") {
    answer("complete_reply", complete, command$body, EMPTY_COMPLETION)
  } else if (kind == "is_complete") {
    answer("is_complete_reply", is_complete, command$body, list(status = "unknown"))
  } else if (kind == "inspect") {
    answer("inspect_reply", inspect, command$body, NOT_FOUND)
  } else if (kind == "shutdown") {
    exit_driver(0L)
  } else if (kind %in% c("input_reply", "input_abort")) {
    # The answer to a readline() that was interrupted before the answer came.
  } else {
    log_message(sprintf("ignored unknown command %s", kind))
  }
  invisible()
}

# Replaces a function of the base package for every caller, as IRkernel does for readline().
replace_base_function <- function(name, replacement) {
  for (environment in list(baseenv(), .BaseNamespaceEnv)) {
    locked <- bindingIsLocked(name, environment)
    if (locked) unlockBinding(name, environment)
    assign(name, replacement, envir = environment)
    if (locked) lockBinding(name, environment)
  }
}

setup_session <- function() {
  driver$original_quit <- base::quit
  # readline() asks the frontend instead of returning "" as it does without a console.
  replace_base_function("readline", function(prompt = "") request_input(prompt))
  # q() ends the cell instead of the kernel, which only the runner may stop.
  user_quit <- function(save = "default", status = 0, runLast = TRUE) {
    condition <- structure(class = c(QUIT_CONDITION, "condition"),
                           list(message = "quit", call = NULL, status = status))
    signalCondition(condition)
    invisible()
  }
  environment(user_quit) <- driver
  replace_base_function("quit", user_quit)
  replace_base_function("q", user_quit)
  for (name in c("system", "system2")) {
    replace_base_function(name, checking_interrupts(get(name, envir = baseenv())))
  }

  options(
    device = open_plot_device,
    # Functions defined in cells keep their source, comments included, as in the R console.
    keep.source = TRUE,
    # Help is shown as text; there is no browser to open.
    help_type = "text",
    # A pager would wait for a keypress that never comes; the frontend has one of its own.
    pager = show_pages
  )
  attach(list2env(display_functions), name = "cellgate", warn.conflicts = FALSE)
  # Completions of function arguments and of installed packages, as in the R console.
  utils::rc.settings(ipck = TRUE)
}

serve <- function() {
  open_channels()
  setup_session()
  version <- paste(R.version$major, R.version$minor, sep = ".")
  send_json("ready", list(
    implementation = "cellgate-r",
    implementation_version = DRIVER_VERSION,
    language_info = list(
      name = "R",
      version = version,
      mimetype = "text/x-r-source",
      file_extension = ".r",
      pygments_lexer = "r",
      codemirror_mode = "r"
    ),
    banner = sprintf("%s\ncellgate R driver %s", R.version.string, DRIVER_VERSION)
  ))
  repeat {
    command <- receive()
    if (is.null(command)) exit_driver(0L)
    # A SIGINT that arrived while the driver waited is pending: discard it, or it would stop
    # the next cell as soon as that cell begins.
    tryCatch(allowInterrupts(Sys.sleep(0)), interrupt = function(i) NULL)
    tryCatch(dispatch(command), error = function(e) {
      # A bug in the driver must not end the kernel.
      try(log_message(sprintf("driver error handling %s: %s", command$kind,
                              conditionMessage(e))))
    }, interrupt = function(i) NULL)
  }
}

serve()

}, envir = new.env(parent = baseenv())))
