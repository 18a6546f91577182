"""jupyter_kernel_test samples for cellgate's PHP kernel (images/php/driver.php).

Layout: see the docstring of tests/compat/conformance.py. Everything KernelTests can check
is given; history comes from the kernel runner. PHP has no display API or help system of its
own; the driver offers functions in its namespace: `Cellgate\\display($value, $id)` (an array
keyed by MIME types is a MIME bundle), `Cellgate\\update_display($value, $id)`,
`Cellgate\\clear_output($wait)` and `Cellgate\\page($text)` for the pager. `readline()` and
`STDIN` in a cell ask the frontend for a line.
"""

language_name = "php"
file_extension = ".php"

code_hello_world = 'echo "hello, world\\n";'
code_stderr = 'fwrite(STDERR, "oops\\n");'
code_generate_error = "throw new RuntimeException('cellgate conformance');"

code_execute_result = [
    {"code": "6 * 7", "result": "42"},
    {"code": "[1, 2, 3]", "result": "[1, 2, 3]"},
    {"code": "str_repeat('é', 2)", "result": '"éé"'},
]
code_display_data = [
    {"code": "Cellgate\\display(['text/html' => '<b>hi</b>', 'text/plain' => 'hi']);",
     "mime": "text/html"},
    {"code": "Cellgate\\display(42);", "mime": "text/plain"},
]
code_page_something = "Cellgate\\page('strlen() returns the length of a string in bytes.');"
code_clear_output = "echo \"soon gone\\n\"; Cellgate\\clear_output(true); echo \"stays\\n\";"
code_inspect_sample = "strlen"

completion_samples = [
    {"text": "str_repe", "matches": {"str_repeat"}},
    {"text": "$_SER", "matches": {"$_SERVER"}},
    {"text": "array_key_f", "matches": {"array_key_first"}},
]
completion_cursor_samples = [
    # 'é' is two UTF-8 bytes and '😀' four, each one code point.
    {"text": "$é = '😀'; str_repe", "cursor_pos": 18, "cursor_start": 10, "cursor_end": 18,
     "matches": {"str_repeat"}},
    {"text": "'😀é' . str_repe('x', 2)", "cursor_pos": 15, "cursor_start": 7,
     "cursor_end": 15, "matches": {"str_repeat"}},
]

complete_code_samples = ["1", "echo 'hello, world';", "function f($x) {\n    return $x * 2;\n}"]
incomplete_code_samples = ["function f($x) {", "$a = [1, 2,", "if (true) {\n    echo 1;"]
invalid_code_samples = ["1 +* 2;", "}"]

code_history_pattern = "6 ?*"
supported_history_operations = ("tail", "range", "search")

code_update_display = (
    "Cellgate\\display('first', 'progress');\n"
    "Cellgate\\update_display('second', 'progress');\n"
    "Cellgate\\update_display(['text/plain' => 'third', 'text/html' => '<i>third</i>'], "
    "'progress');"
)
code_stdin = '$answer = readline("cellgate? ");\necho "got $answer\\n";'
