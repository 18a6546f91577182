"""jupyter_kernel_test samples for cellgate's Octave kernel (images/octave/__cellgate_driver__.m).

Layout: see the docstring of tests/compat/conformance.py. Everything KernelTests can check
is given; history comes from the kernel runner. A cell's result is what Octave displays for
its last line when that line is one statement that shows a value (`ans = 42`); other output is
stdout, as Octave prints it. Octave has no display API of its own; the driver defines
`display_data`, `display_html` (and `_markdown`, `_svg`, `_latex`), `update_display`,
`clear_output` and `page` (the pager) in every session. Figures a cell leaves open arrive as
PNG images.
"""

language_name = "octave"
file_extension = ".m"

code_hello_world = "disp('hello, world')"
code_stderr = "fdisp(stderr, 'oops')"
code_generate_error = "error('cellgate:conformance', 'cellgate conformance')"

code_execute_result = [
    {"code": "6 * 7", "result": "ans = 42"},
    {"code": "x = [1 2 3]", "result": "x =\n\n   1   2   3"},
    {"code": "s = 'é';\n[s s]", "result": "ans = éé"},
]
code_display_data = [
    {"code": "display_html('<b>hi</b>')", "mime": "text/html"},
    {"code": "display_data('text/markdown', '**hi**', 'text/plain', 'hi')",
     "mime": "text/markdown"},
    {"code": "plot(1:3);", "mime": "image/png"},
]
code_page_something = "page(evalc('help sin'))"
code_clear_output = "disp('soon gone'); clear_output(true); disp('stays')"
code_inspect_sample = "sin"

completion_samples = [
    {"text": "cumpro", "matches": {"cumprod"}},
    {"text": "x = strspl", "matches": {"strsplit"}},
]
completion_cursor_samples = [
    # 'é' is two UTF-8 bytes and '😀' four, each one code point.
    {"text": "s = '😀é'; cumpro", "cursor_pos": 16, "cursor_start": 10, "cursor_end": 16,
     "matches": {"cumprod"}},
    {"text": "'😀é'; strspl(s)", "cursor_pos": 12, "cursor_start": 6, "cursor_end": 12,
     "matches": {"strsplit"}},
]

complete_code_samples = ["1", "disp('hello, world')", "for i = 1:3\n  disp(i)\nend"]
incomplete_code_samples = ["for i = 1:3", "x = [1 2", "function y = f(x)\n  y = x;"]
invalid_code_samples = ["x = 1)", "disp('open"]

code_history_pattern = "6 ?*"
supported_history_operations = ("tail", "range", "search")

code_update_display = (
    "display_data('first', 'display_id', 'progress')\n"
    "update_display('progress', 'second')\n"
    "update_display('progress', 'text/plain', 'third', 'text/html', '<i>third</i>')"
)
code_stdin = "answer = input('cellgate? ', 's');\ndisp(['got ' answer])"
