"""jupyter_kernel_test samples for cellgate's R kernel (kernelspec `ir`, images/r/driver.R).

Layout: see the docstring of tests/compat/conformance.py. Everything KernelTests can check
is given; history comes from the kernel runner. The display functions are IRdisplay's
(`display`, `display_html`, `publish_mimebundle`, `clear_output`, ...), attached by the driver
as "cellgate" on the search path (called without the `IRdisplay::` prefix), plus
`update_display`. `?topic` and help() send help pages to the frontend's pager.
"""

language_name = "R"
file_extension = ".r"

code_hello_world = "cat('hello, world\\n')"
code_stderr = "message('oops')"
code_generate_error = "stop('cellgate conformance')"

code_execute_result = [
    {"code": "6 * 7", "result": "[1] 42"},
    {"code": "1:3", "result": "[1] 1 2 3"},
    {"code": "c('é', 'b')", "result": '[1] "é" "b"'},
]
code_display_data = [
    {"code": "display_html('<b>hi</b>')", "mime": "text/html"},
    {"code": "publish_mimebundle(list(`text/markdown` = '**hi**', `text/plain` = 'hi'))",
     "mime": "text/markdown"},
    {"code": "plot(1:3)", "mime": "image/png"},
]
code_page_something = "?cat"
code_clear_output = "cat('soon gone\\n'); clear_output(); cat('stays\\n')"
code_inspect_sample = "paste"

completion_samples = [
    {"text": "zi", "matches": {"zip"}},
    {"text": "searchpa", "matches": {"searchpaths"}},
    {"text": "x <- paste", "matches": {"paste", "paste0"}},
]
completion_cursor_samples = [
    # 'é' is two UTF-8 bytes and '😀' four, each one code point.
    {"text": "é <- 1; 😀 <- 2; pas", "cursor_pos": 19, "cursor_start": 16, "cursor_end": 19,
     "matches": {"paste", "paste0"}},
    {"text": "'😀é'; zi(1)", "cursor_pos": 8, "cursor_start": 6, "cursor_end": 8,
     "matches": {"zip"}},
]

complete_code_samples = ["1", "cat('hello, world')", "f <- function(x) {\n  x * 2\n}"]
incomplete_code_samples = ["cat('hello", "f <- function(x) {", "c(1, 2,"]
invalid_code_samples = ["1 +* 2", "x <- )"]

code_history_pattern = "6 ?*"
supported_history_operations = ("tail", "range", "search")

code_update_display = (
    "display('first', display_id = 'progress')\n"
    "update_display('second', display_id = 'progress')\n"
    "update_display(list(`text/plain` = 'third', `text/html` = '<i>third</i>'), "
    "display_id = 'progress')"
)
code_stdin = "answer <- readline('cellgate? ')\ncat('got', answer, '\\n')"
