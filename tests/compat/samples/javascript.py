"""jupyter_kernel_test samples for cellgate's JavaScript kernel (images/javascript/driver.js).

Layout: see the docstring of tests/compat/conformance.py.

Left out, and why:
* code_page_something: JavaScript has no help syntax (nothing like Python's `obj?`); inspect
  (shift-tab) is how help is asked for.
"""

language_name = "javascript"
file_extension = ".js"

code_hello_world = "console.log('hello, world')"
code_stderr = "console.error('to stderr')"
code_generate_error = "throw new Error('cellgate conformance')"

code_execute_result = [
    {"code": "1+2+3", "result": "6"},
    {"code": "[1, 2].map((n) => n * 2)", "result": "[ 2, 4 ]"},
    {"code": "'é'.repeat(2)", "result": "'éé'"},
]
code_display_data = [
    {"code": "display.html('<b>hi</b>')", "mime": "text/html"},
    {"code": "display({_toMarkdown: () => '**rich**'})", "mime": "text/markdown"},
    {"code": "display(42)", "mime": "text/plain"},
]
code_clear_output = "console.log('soon gone'); display.clear({wait: true}); console.log('stays')"
code_update_display = (
    "const cgHandle = display('first', {display_id: true});\n"
    "cgHandle.update('second');\n"
    "display.update('third', {display_id: cgHandle.display_id})"
)
code_inspect_sample = "Math.max"

completion_samples = [
    # Matches replace the text from cursor_start on: the property name after the dot.
    {"text": "Math.ma", "matches": {"max"}},
    {"text": "const cgValue = 1; cgVal", "matches": {"cgValue"}},
    {"text": "require('chi", "matches": {"child_process"}},
]
completion_cursor_samples = [
    # '😀' is one code point but two UTF-16 units in a JavaScript string.
    {"text": "'😀é'; Math.ma", "cursor_pos": 13, "cursor_start": 11, "cursor_end": 13,
     "matches": {"max"}},
]

complete_code_samples = ["1", "console.log('hi')", "function f(x) {\n  return x * 2;\n}"]
incomplete_code_samples = ["function f(x) {", "[1, 2,", "`open template"]
invalid_code_samples = ["1 +* 2", "let let = 1", "}"]

code_history_pattern = "1?2*"
supported_history_operations = ("tail", "range", "search")
code_stdin = "const cgAnswer = input('cellgate? ');\nconsole.log('got', cgAnswer)"
