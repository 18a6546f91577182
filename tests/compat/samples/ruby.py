"""jupyter_kernel_test samples for cellgate's Ruby kernel (images/ruby/driver.rb).

Layout: see the docstring of tests/compat/conformance.py. Everything KernelTests can check
is given; history comes from the kernel runner. Ruby has no display API of its own; the driver
offers IRuby's (`Cellgate.display`, also reachable as `IRuby.display`, `update_display`,
`clear_output`, `html`, `input`) and `Cellgate.page` for the pager. `gets` asks the frontend
for a line too, but Ruby's `gets` has no prompt, so the stdin sample uses `Cellgate.input`.
"""

language_name = "ruby"
file_extension = ".rb"

code_hello_world = "puts 'hello, world'"
code_stderr = "$stderr.puts 'oops'"
code_generate_error = "raise ArgumentError, 'cellgate conformance'"

code_execute_result = [
    {"code": "6 * 7", "result": "42"},
    {"code": "[1, 'é']", "result": '[1, "é"]'},
    {"code": "{a: 1}.map { |key, value| [key, value * 2] }.to_h", "result": "{:a=>2}"},
]
code_display_data = [
    {"code": "Cellgate.display({'text/html' => '<b>hi</b>', 'text/plain' => 'hi'})",
     "mime": "text/html"},
    {"code": "IRuby.display(42)", "mime": "text/plain"},
    {"code": "IRuby.html('<i>rich</i>')", "mime": "text/html"},
]
code_page_something = "Cellgate.page('Array#map returns a new array with the results of the block.')"
code_clear_output = "puts 'soon gone'; Cellgate.clear_output(true); puts 'stays'"
code_inspect_sample = "Array"

completion_samples = [
    {"text": "'abc'.upca", "matches": {"upcase", "upcase!"}},
    {"text": "$stdo", "matches": {"$stdout"}},
    {"text": "Comparabl", "matches": {"Comparable"}},
]
completion_cursor_samples = [
    # 'é' is two UTF-8 bytes and '😀' four, each one code point.
    {"text": "é = 1; '😀'.upca", "cursor_pos": 15, "cursor_start": 11, "cursor_end": 15,
     "matches": {"upcase", "upcase!"}},
    {"text": "'😀é'.upca + 'x'", "cursor_pos": 9, "cursor_start": 5, "cursor_end": 9,
     "matches": {"upcase", "upcase!"}},
]

complete_code_samples = ["1", "puts 'hello, world'", "def f(x)\n  x * 2\nend"]
incomplete_code_samples = ["def f(x)", "[1, 2,", "class A\n  def f", "'open string"]
invalid_code_samples = ["1 +* 2", "end"]

code_history_pattern = "6 ?*"
supported_history_operations = ("tail", "range", "search")

code_update_display = (
    "Cellgate.display('first', display_id: 'progress')\n"
    "Cellgate.update_display('second', display_id: 'progress')\n"
    "IRuby.update_display({'text/plain' => 'third', 'text/html' => '<i>third</i>'}, "
    "display_id: 'progress')"
)
code_stdin = "answer = Cellgate.input('cellgate? ')\nputs \"got #{answer}\""
