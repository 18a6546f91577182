"""jupyter_kernel_test samples for cellgate's Python 3 kernel (images/python/driver.py).

Layout: see the docstring of tests/compat/conformance.py. Everything KernelTests can check
is given; history comes from the kernel runner, which answers history requests from the cells
it ran.
"""

language_name = "python"
file_extension = ".py"

code_hello_world = "print('hello, world')"
code_stderr = "import sys; print('test', file=sys.stderr)"
code_generate_error = "raise ValueError('cellgate conformance')"

code_execute_result = [
    {"code": "1+2+3", "result": "6"},
    {"code": "[n*n for n in range(4)]", "result": "[0, 1, 4, 9]"},
    {"code": "'é' * 2", "result": "'éé'"},
]
code_display_data = [
    {"code": "display({'text/html': '<b>hi</b>', 'text/plain': 'hi'}, raw=True)",
     "mime": "text/html"},
    {"code": "class Rich:\n    def _repr_markdown_(self):\n        return '**rich**'\n"
             "display(Rich())", "mime": "text/markdown"},
    {"code": "display(42)", "mime": "text/plain"},
]
code_page_something = "zip?"
code_clear_output = "print('soon gone'); clear_output(wait=True); print('stays')"
code_inspect_sample = "zip"

completion_samples = [
    {"text": "zi", "matches": {"zip"}},
    {"text": "str.isdig", "matches": {"str.isdigit"}},
    {"text": "import json.de", "matches": {"json.decoder"}},
]
completion_cursor_samples = [
    # 'é' is one code point (two UTF-8 bytes), '😀' one code point (two UTF-16 units).
    {"text": "é = 1\n😀x = 2\nprint(zi", "cursor_pos": 21, "cursor_start": 19,
     "cursor_end": 21, "matches": {"zip"}},
    {"text": "'😀é', zi + 1", "cursor_pos": 8, "cursor_start": 6, "cursor_end": 8,
     "matches": {"zip"}},
]

complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2", "for i in range(3):"]
invalid_code_samples = ["import = 7q", "1 +* 2"]

code_history_pattern = "1?2*"
supported_history_operations = ("tail", "range", "search")

code_update_display = (
    "h = display('first', display_id=True)\n"
    "h.update('second')\n"
    "update_display('third', display_id=h.display_id)"
)
code_stdin = "answer = input('cellgate? ')\nprint('got', answer)"
