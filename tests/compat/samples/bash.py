"""jupyter_kernel_test samples for cellgate's Bash kernel (images/bash/driver.sh).

Layout: see the docstring of tests/compat/conformance.py.

Left out, and why:
* code_execute_result (and so test_history, which KernelTests runs only on those samples):
  a shell command has an exit status and output, never a value; the driver sends no
  execute_result, as other Bash kernels do not.
* code_page_something: Bash has no help syntax that pages (`help read` prints to stdout).
"""

language_name = "bash"
file_extension = ".sh"

code_hello_world = "echo 'hello, world'"
code_stderr = "echo 'to stderr' >&2"
code_generate_error = "false"

code_display_data = [
    {"code": "display text/html '<b>hi</b>'", "mime": "text/html"},
    {"code": "printf '# title\\n' | display text/markdown", "mime": "text/markdown"},
]
code_clear_output = "echo soon gone; clear_output; echo stays"
code_update_display = "display --id cg1 text/plain first; display --update --id cg1 text/plain second"
code_inspect_sample = "echo"

completion_samples = [
    {"text": "ech", "matches": {"echo"}},
    {"text": "cg_value=1; echo $cg_val", "matches": {"$cg_value"}},
    {"text": "echo ${BASH_VERS", "matches": {"${BASH_VERSINFO}", "${BASH_VERSION}"}},
]
completion_cursor_samples = [
    # 'é' is one code point (two UTF-8 bytes), '😀' one code point (four UTF-8 bytes).
    {"text": "x='é😀'; ech", "cursor_pos": 11, "cursor_start": 8, "cursor_end": 11,
     "matches": {"echo"}},
]

complete_code_samples = ["echo hi", "for i in 1 2; do echo $i; done", "f() { echo f; }"]
incomplete_code_samples = ["for i in 1 2; do", "echo 'open", "if true; then", "cat <<EOF\nhi"]
invalid_code_samples = ["fi", "done", "echo )"]

supported_history_operations = ("tail", "range", "search")
# Commands read /dev/null (the driver protocol's rule), so `read` cannot ask the frontend;
# the driver's `input` function does.
code_stdin = "input -p 'cellgate? ' answer\necho \"got $answer\""
