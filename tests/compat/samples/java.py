"""jupyter_kernel_test samples for cellgate's Java kernel (JShell, images/java/CellgateDriver.java).

Layout: see the docstring of tests/compat/conformance.py. Everything KernelTests can check
is given; history comes from the kernel runner. Java has no display API of its own, so the
driver gives every shell a few methods, as IJava does: `display(value)` (a Map is a MIME
bundle), `display(value, id)`, `updateDisplay(id, value)`, `clearOutput()`, `page(text)` for
the pager and `readLine(prompt)` (System.in asks the frontend too, but with no prompt).
"""

language_name = "java"
file_extension = ".jshell"

code_hello_world = 'System.out.println("hello, world");'
code_stderr = 'System.err.println("oops");'
code_generate_error = 'throw new IllegalStateException("cellgate conformance");'

code_execute_result = [
    {"code": "6 * 7", "result": "42"},
    {"code": "List.of(1, 2, 3)", "result": "[1, 2, 3]"},
    {"code": '"é".repeat(2)', "result": '"éé"'},
]
code_display_data = [
    {"code": 'display(Map.of("text/html", "<b>hi</b>", "text/plain", "hi"));',
     "mime": "text/html"},
    {"code": "display(42);", "mime": "text/plain"},
]
code_page_something = 'page("Math.abs returns the absolute value of its argument.");'
code_clear_output = (
    'System.out.println("soon gone"); clearOutput(true); System.out.println("stays");'
)
code_inspect_sample = "Math.abs"

completion_samples = [
    {"text": "Math.flo", "matches": {"floor(", "floorDiv(", "floorMod("}},
    {"text": '"abc".toUpp', "matches": {"toUpperCase("}},
]
completion_cursor_samples = [
    # '😀' is one code point but two UTF-16 units in Java's strings; 'é' is two UTF-8 bytes.
    {"text": '"😀é".toUpp', "cursor_pos": 10, "cursor_start": 5, "cursor_end": 10,
     "matches": {"toUpperCase("}},
    {"text": 'int 😀é = 1; Math.ab + 1', "cursor_pos": 19, "cursor_start": 17,
     "cursor_end": 19, "matches": {"abs(", "absExact("}},
]

complete_code_samples = ["1 + 1", "int x = 1;", "for (int i = 0; i < 3; i++) {\n}"]
incomplete_code_samples = ["int x =", "for (int i = 0; i < 3; i++) {", "class A {\n  int f() {"]
# A string literal cannot go on to the next line in Java, so an open one is invalid.
invalid_code_samples = ["}}}", '"abc']

code_history_pattern = "6 ?*"
supported_history_operations = ("tail", "range", "search")

code_update_display = (
    'display("first", "progress");\n'
    'updateDisplay("progress", "second");\n'
    'updateDisplay("progress", Map.of("text/plain", "third", "text/html", "<i>third</i>"));'
)
code_stdin = 'String answer = readLine("cellgate? ");\nSystem.out.println("got " + answer);'
