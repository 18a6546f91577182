# frozen_string_literal: true

# cellgate Ruby driver: the long-lived Ruby process behind one Ruby kernel.
#
# The kernel runner starts it as `ruby driver.rb` in the kernel's working directory and drives
# it over the framed protocol of docs/driver-protocol.md: commands arrive on the original stdin,
# events leave on the original stdout. The driver keeps private copies of those two, then points
# fd 0 at /dev/null and fds 1 and 2 at pipes that background threads forward as output events,
# so output of child processes is captured too.
#
# Cells run in TOPLEVEL_BINDING, as in IRB: local variables, methods, constants and instance
# variables of `main` persist from cell to cell. The value of a cell is shown unless it is nil
# or the cell ends with a semicolon. `gets` asks the frontend for a line.
#
# Interrupts. The runner sends SIGINT to the process group. The driver's own code runs with
# asynchronous exceptions deferred (Thread.handle_interrupt), and the SIGINT trap raises
# Interrupt in the main thread through Thread#raise, so the exception only ever lands inside the
# user's code: a frame is never cut in half and a `done` is never lost.

require 'io/wait'
require 'json'
require 'pp'

module Cellgate
  DRIVER_VERSION = '0.1.0'
  DRIVER_FILE = File.expand_path(__FILE__)
  # How the driver's own frames begin in a backtrace.
  DRIVER_FRAME = "#{DRIVER_FILE}:"

  # The longest frame header the protocol allows, newline included.
  MAX_HEADER_LEN = 64
  # The largest frame body the runner accepts; a bigger event would break the stream.
  MAX_BODY = 64 * 1024 * 1024
  # How much of an oversized event's text survives; escaped as JSON it stays under MAX_BODY.
  SHRUNK_TEXT_BYTES = 4 * 1024 * 1024
  # How much is read from a pipe at once.
  READ_CHUNK = 64 * 1024
  # How often a pending `gets` looks for an interrupt that arrived while it waited.
  INPUT_POLL_SECONDS = 0.05
  # Every asynchronous exception, for Thread.handle_interrupt.
  ALL = { Object => :never }.freeze

  KEYWORDS = %w[
    BEGIN END alias and begin break case class def defined? do else elsif end ensure false
    for if in module next nil not or redo rescue retry return self super then true undef
    unless until when while yield __FILE__ __LINE__ __method__ __dir__
  ].freeze

  # The runner closed the control channel.
  class ChannelClosed < StandardError; end

  # The runner sent bytes that are not a frame; the stream cannot be put back in step.
  class ProtocolError < StandardError; end

  # Frames over the driver's private copies of its original stdin and stdout.
  class ControlChannel
    def initialize(input, output)
      @input = input
      @output = output
      @buffer = +''.b
      @lock = Mutex.new
    end

    # Writes one frame; the lock keeps frames from several threads from interleaving, and no
    # interrupt may cut a frame short.
    def send(kind, body = '')
      frame = "#{kind} #{body.bytesize}\n".b << body.b
      Thread.handle_interrupt(ALL) do
        @lock.synchronize { @output.write(frame) }
      end
    rescue IOError, SystemCallError
      # The runner has gone away, so there is nobody left to report to.
      exit!(0)
    end

    # The next command as [kind, body], or nil if `timeout` seconds pass first. The buffer only
    # changes in complete steps, so a call that gives up leaves the stream in step.
    def receive(timeout = nil)
      Thread.handle_interrupt(ALL) do
        loop do
          frame = next_buffered_frame
          return frame if frame
          return nil if timeout && !@input.wait_readable(timeout)

          chunk = @input.read_nonblock(READ_CHUNK, exception: false)
          next if chunk == :wait_readable
          raise ChannelClosed if chunk.nil?

          @buffer << chunk
        end
      end
    end

    private

    def next_buffered_frame
      newline = @buffer.index("\n")
      if newline.nil? || newline >= MAX_HEADER_LEN
        if @buffer.bytesize >= MAX_HEADER_LEN
          raise ProtocolError, "frame header is longer than #{MAX_HEADER_LEN} bytes"
        end

        return nil
      end
      header = @buffer.byteslice(0, newline)
      match = /\A([a-z0-9_]+) (\d+)\z/.match(header)
      raise ProtocolError, "frame header #{header.inspect} is not `KIND LEN`" unless match

      length = match[2].to_i
      return nil if @buffer.bytesize < newline + 1 + length

      body = @buffer.byteslice(newline + 1, length)
      @buffer = @buffer.byteslice(newline + 1 + length..) || +''.b
      [match[1], body]
    end
  end

  # Points one of the user's file descriptors at a pipe and forwards what comes out of it.
  #
  # A background thread forwards output as it arrives, so that a long cell streams. Before the
  # driver sends any other event, `drain` forwards whatever is already in the pipe, so that
  # output always precedes the events that follow it. Both run under one lock, so a chunk is
  # never forwarded twice or out of order.
  class OutputPipe
    def initialize(kind, target, channel)
      reader, writer = IO.pipe
      target.reopen(writer)
      writer.close
      reader.binmode
      @kind = kind
      @reader = reader
      @channel = channel
      @lock = Mutex.new
      thread = Thread.new { forward }
      thread.name = "cellgate-#{kind}"
      thread.report_on_exception = false
    end

    # Forwards the bytes that are in the pipe now. Only what is already there is read: a
    # background process that keeps writing must not keep the driver here.
    def drain
      @lock.synchronize do
        remaining = @reader.nread
        while remaining.positive?
          data = @reader.read_nonblock([remaining, READ_CHUNK].min, exception: false)
          break if data == :wait_readable || data.nil?

          remaining -= data.bytesize
          @channel.send(@kind, data)
        end
      end
    end

    private

    def forward
      loop do
        @reader.wait_readable
        @lock.synchronize do
          data = @reader.read_nonblock(READ_CHUNK, exception: false)
          return if data.nil?

          @channel.send(@kind, data) unless data == :wait_readable
        end
      end
    end
  end

  # What `$stdin` is while cells run: `gets` and friends ask the frontend for a line.
  # (Kernel#gets reads through ARGF, which reads `$stdin` when there are no arguments.)
  class Input
    def initialize(driver)
      @driver = driver
    end

    def gets(*args, chomp: false)
      line = @driver.request_input('', false)
      return nil if line.nil?

      limit = args.find { |arg| arg.is_a?(Integer) }
      line = line[0, limit] if limit && limit >= 0
      chomp ? line.chomp : line
    end

    def readline(...)
      gets(...) || raise(EOFError, 'end of file reached')
    end

    def each_line(*args, chomp: false)
      return enum_for(:each_line, *args, chomp: chomp) unless block_given?

      while (line = gets(*args, chomp: chomp))
        yield line
      end
      self
    end

    def readlines(*args, chomp: false)
      each_line(*args, chomp: chomp).to_a
    end

    def read(length = nil, _buffer = nil)
      length.nil? ? readlines.join : gets&.byteslice(0, length)
    end

    def getc
      gets&.[](0)
    end

    def eof?
      false
    end
    alias eof eof?

    def tty?
      false
    end
    alias isatty tty?

    def fileno
      0
    end

    def sync
      true
    end

    def external_encoding
      Encoding::UTF_8
    end

    def inspect
      '#<Cellgate::Input (lines come from the notebook frontend)>'
    end
  end

  # What cells call for rich output and input. IRuby's names work too (`IRuby.display`,
  # `IRuby.html`, `IRuby.clear_output`, `IRuby.input`), so notebooks written for it run here.
  module Display
    MIME_TYPE = %r{\A[\w.+-]+/[\w.+-]+\z}.freeze
    # The methods an object may have to show itself richly, as IRuby looks for them.
    RICH_METHODS = {
      to_html: 'text/html', to_svg: 'image/svg+xml', to_markdown: 'text/markdown',
      to_latex: 'text/latex'
    }.freeze

    extend self

    # Shows `object` as display_data: a Hash whose keys are all MIME types is a MIME bundle;
    # with `mime:` the object's text is shown as that type; any other object as its `inspect`,
    # with the rich forms it offers (`to_html` and friends). A `display_id:` lets
    # update_display replace it later.
    def display(object, mime: nil, display_id: nil, metadata: {})
      output = { data: bundle(object, mime), metadata: metadata }
      output[:transient] = { display_id: display_id.to_s } if display_id
      Cellgate.driver.publish('display', output)
      nil
    end

    def update_display(object, display_id:, mime: nil, metadata: {})
      Cellgate.driver.publish('update_display', {
                                data: bundle(object, mime), metadata: metadata,
                                transient: { display_id: display_id.to_s }
                              })
      nil
    end

    def html(text)
      display(text.to_s, mime: 'text/html')
    end

    # Clears the cell's output; with `wait`, only once new output arrives.
    def clear_output(wait = false)
      Cellgate.driver.publish('clear_output', { wait: wait ? true : false })
      nil
    end

    # Shows text in the frontend's pager.
    def page(text)
      Cellgate.driver.add_payload({ source: 'page', data: { 'text/plain' => text.to_s }, start: 0 })
      nil
    end

    # A line from the frontend, asked for with `prompt` (without its newline); nil at the end
    # of input. `gets` asks too, but has no prompt.
    def input(prompt = '', password: false)
      Cellgate.driver.request_input(prompt.to_s, password)&.chomp
    end

    def password(prompt = 'Password: ')
      input(prompt, password: true)
    end

    private

    def bundle(object, mime)
      return { mime => object.to_s } if mime
      if object.is_a?(Hash) && !object.empty? && object.keys.all? { |key| key.to_s.match?(MIME_TYPE) }
        return object.to_h { |key, value| [key.to_s, value.is_a?(String) || value.is_a?(Hash) ? value : value.to_s] }
      end

      data = { 'text/plain' => object.is_a?(String) ? object : object.inspect }
      RICH_METHODS.each do |method, type|
        data[type] = object.public_send(method).to_s if object.respond_to?(method)
      end
      data
    end
  end

  extend Display

  class << self
    # The kernel of this process.
    attr_accessor :driver
  end

  # One kernel: the user's binding and everything that runs code in it.
  class Driver
    def initialize
      @pid = Process.pid
      @main = Thread.current
      @execution_count = 0
      # True while a cell runs; a SIGINT outside a cell is ignored.
      @cell_running = false
      # True while a cell waits for a line from the frontend.
      @waiting_for_input = false
      @binding = TOPLEVEL_BINDING
      # The running cell's execute_reply payloads (pager text).
      @payloads = []
      Cellgate.driver = self
      setup_channels
      setup_signals
      setup_globals
    end

    def serve
      Thread.handle_interrupt(ALL) do
        emit('ready', {
               implementation: 'cellgate-ruby',
               implementation_version: DRIVER_VERSION,
               language_info: {
                 name: 'ruby',
                 version: RUBY_VERSION,
                 mimetype: 'text/x-ruby',
                 file_extension: '.rb',
                 pygments_lexer: 'ruby',
                 codemirror_mode: 'ruby'
               },
               banner: "Ruby #{RUBY_VERSION} (cellgate Ruby driver #{DRIVER_VERSION})\n" \
                       'The value of a cell is shown unless it is nil or the cell ends with `;`.'
             })
        loop do
          kind, body = @channel.receive
          dispatch(kind, body)
        rescue ChannelClosed
          finish(0)
        rescue ProtocolError => e
          @diagnostics.puts("cellgate ruby driver: #{e.message}")
          finish(2)
        rescue Exception => e # rubocop:disable Lint/RescueException
          # A bug in the driver must not end the kernel.
          raise if e.is_a?(SystemExit)

          log("driver error handling #{kind}: #{e.full_message(highlight: false)}")
        end
      end
    end

    # Sends an event for the user's code (a display, say), after the output before it.
    def publish(kind, payload)
      emit(kind, payload)
    end

    def add_payload(payload)
      @payloads << payload if @cell_running
    end

    # Asks the frontend for a line for `gets`; nil (end of file) when the frontend has no
    # stdin. Only the main thread of a running cell has a frontend waiting for it.
    def request_input(prompt, password)
      return nil unless Thread.current == @main && @cell_running

      emit('input_request', { prompt: prompt, password: password })
      @waiting_for_input = true
      loop do
        command = @channel.receive(INPUT_POLL_SECONDS)
        if command.nil?
          # A safe point for an interrupt that arrived meanwhile.
          Thread.handle_interrupt(Object => :immediate) { nil }
          next
        end
        kind, body = command
        case kind
        when 'input_reply' then return "#{utf8(body)}\n"
        when 'input_abort' then return nil
        else
          # A request answered meanwhile must not be cut short by an interrupt, or its reply
          # would never be sent; an interrupt waits until the loop comes round.
          Thread.handle_interrupt(ALL) { dispatch(kind, body) }
        end
      end
    rescue ChannelClosed
      finish(0)
    ensure
      @waiting_for_input = false
    end

    private

    # -- Start ----------------------------------------------------------------------------

    def setup_channels
      # The original stdin and stdout become the private control channel. Ruby makes the
      # copies close-on-exec, so child processes cannot read commands or write frames.
      control_in = $stdin.dup
      control_out = $stdout.dup
      [control_in, control_out].each(&:binmode)
      control_out.sync = true
      @diagnostics = $stderr.dup
      @diagnostics.sync = true
      @channel = ControlChannel.new(control_in, control_out)

      # The user's descriptors: stdin reads nothing, stdout and stderr go through pipes this
      # process reads, which also captures the output of child processes.
      $stdin.reopen(File::NULL)
      @stdout_pipe = OutputPipe.new('stdout', $stdout, @channel)
      @stderr_pipe = OutputPipe.new('stderr', $stderr, @channel)
      $stdout.sync = true
      $stderr.sync = true
    end

    def setup_signals
      @sigint_handler = proc { on_sigint }
      trap('INT', &@sigint_handler)
    end

    def setup_globals
      @input = Input.new(self)
      $stdin = @input
      # As in an interactive interpreter: no script arguments (and ARGF reads $stdin).
      ARGV.clear
    end

    # Raises Interrupt in the main thread. Thread#raise only takes effect where the main
    # thread accepts asynchronous exceptions, which is inside the user's code.
    def on_sigint
      @main.raise(Interrupt) if @cell_running
    end

    # -- Events ---------------------------------------------------------------------------

    def log(text)
      @channel.send('log', text.b)
    end

    # Makes everything written so far reach the runner before the next event.
    def flush_output
      [$stdout, $stderr, STDOUT, STDERR].uniq.each do |stream|
        stream.flush if stream.respond_to?(:flush)
      rescue StandardError
        nil
      end
      @stdout_pipe.drain
      @stderr_pipe.drain
    end

    # Sends a JSON event after all output that came before it.
    def emit(kind, payload)
      # A process a cell forked and that went on past the cell must not speak for the kernel.
      exit!(0) unless Process.pid == @pid

      Thread.handle_interrupt(ALL) do
        flush_output
        body = json_body(payload)
        body = json_body(shrink_event(kind, payload)) if body.bytesize > MAX_BODY
        @channel.send(kind, body)
      end
    end

    def json_body(payload)
      JSON.generate(scrub(payload))
    end

    # Strings from user data may be binary or invalid UTF-8; JSON needs valid UTF-8.
    def scrub(value)
      case value
      when String then utf8(value)
      when Array then value.map { |item| scrub(item) }
      when Hash then value.to_h { |key, item| [key, scrub(item)] }
      else value
      end
    end

    def utf8(text)
      text = text.dup.force_encoding(Encoding::UTF_8) unless text.encoding == Encoding::UTF_8
      text.valid_encoding? ? text : text.scrub
    end

    def shrink_event(kind, payload)
      case kind
      when 'error'
        { ename: payload[:ename], evalue: shrink(payload[:evalue]),
          traceback: [shrink(payload[:traceback].join("\n"))] }
      when 'result'
        { data: { 'text/plain' => shrink(payload[:data]['text/plain']) }, metadata: {} }
      when 'complete_reply'
        payload.merge(matches: payload[:matches].first(10_000))
      when 'inspect_reply'
        payload.merge(data: { 'text/plain' => shrink(payload[:data]['text/plain']) })
      else payload
      end
    end

    def shrink(text)
      text = text.to_s
      return text if text.bytesize <= SHRUNK_TEXT_BYTES

      kept = text.byteslice(0, SHRUNK_TEXT_BYTES).scrub('')
      "#{kept}\n[#{text.bytesize - kept.bytesize} more bytes not shown]"
    end

    def finish(status)
      begin
        flush_output
      rescue StandardError
        nil
      end
      # A forked copy of the kernel leaves at once; the kernel itself exits normally, so that
      # at_exit handlers run as they do when a script ends.
      exit!(status) unless Process.pid == @pid

      exit(status)
    end

    # -- Commands -------------------------------------------------------------------------

    def dispatch(kind, body)
      case kind
      when 'execute'
        if @waiting_for_input
          log('ignored an execute command while a cell waits for input')
        else
          execute(utf8(body))
        end
      when 'complete'
        fallback = { matches: [], cursor_start: 0, cursor_end: 0, metadata: {} }
        answer('complete_reply', body, fallback) { |request| complete(request) }
      when 'is_complete'
        answer('is_complete_reply', body, { status: 'unknown' }) { |request| completeness(request['code'].to_s) }
      when 'inspect'
        fallback = { found: false, data: {}, metadata: {} }
        answer('inspect_reply', body, fallback) { |request| inspect_request(request) }
      when 'shutdown'
        finish(0)
      when 'input_reply', 'input_abort'
        # The answer to a `gets` that was interrupted before the answer came.
        nil
      else
        log("ignored unknown command #{kind}")
      end
    end

    # Answers a request, with `fallback` if anything goes wrong, so the runner always gets a
    # reply.
    def answer(kind, body, fallback)
      reply = begin
        yield JSON.parse(utf8(body))
      rescue StandardError, ScriptError => e
        log("#{kind} failed: #{e.full_message(highlight: false)}")
        fallback
      end
      emit(kind, reply)
    end

    # -- Running cells --------------------------------------------------------------------

    def execute(code)
      @execution_count += 1
      filename = "<cell #{@execution_count}>"
      @cell_running = true
      error = nil
      begin
        # Only here may an interrupt land: in the user's code.
        Thread.handle_interrupt(Object => :immediate) do
          value = @binding.eval(code, filename, 1)
          result = result_bundle(value) unless value.nil? || quiet?(code)
          # The result is shown within the cell's time, so a slow `inspect` can be interrupted.
          emit('result', { data: result, metadata: {} }) if result
        end
      rescue SystemExit => e
        # Like IRB's `exit` in a notebook: a clean exit ends the cell quietly.
        error = e unless e.success?
      rescue Exception => e # rubocop:disable Lint/RescueException
        error = e
      ensure
        end_cell
      end
      emit('error', error_payload(error)) if error
      done = { status: error ? 'error' : 'ok' }
      done[:payload] = @payloads.dup unless @payloads.empty?
      @payloads.clear
      emit('done', done)
    end

    def end_cell
      @cell_running = false
      exit!(0) unless Process.pid == @pid
      # An interrupt that arrived after the user's code ended belongs to no cell.
      while Thread.pending_interrupt?
        begin
          Thread.handle_interrupt(Object => :immediate) { nil }
        rescue Exception # rubocop:disable Lint/RescueException
          nil
        end
      end
      # A cell may have replaced the SIGINT trap or $stdin; between cells the driver's own
      # must be back, or an interrupt while idle could end the kernel.
      trap('INT', &@sigint_handler)
      $stdin = @input if $stdin.nil? || $stdin.equal?(STDIN)
    end

    # A trailing semicolon hides the value, as in IRB and IPython.
    def quiet?(code)
      code.gsub(/#[^\n]*$/, '').rstrip.end_with?(';')
    end

    def result_bundle(value)
      text = begin
        value.pretty_inspect.chomp
      rescue StandardError
        value.inspect
      end
      { 'text/plain' => text.to_s }
    end

    def error_payload(error)
      {
        ename: error.class.name || error.class.inspect,
        evalue: safe_message(error),
        traceback: traceback_lines(error)
      }
    end

    def safe_message(error)
      error.message.to_s
    rescue StandardError
      "<unprintable #{error.class}>"
    end

    # The error as Ruby reports an uncaught one, without the driver's own frames.
    def traceback_lines(error)
      seen = {}
      current = error
      while current && !seen[current.object_id]
        seen[current.object_id] = true
        backtrace = current.backtrace
        current.set_backtrace(backtrace.reject { |line| line.start_with?(DRIVER_FRAME) }) if backtrace
        current = current.cause
      end
      # Without a backtrace full_message would name the place it was called from; an error
      # with no frames of the user's (a SyntaxError in the cell) is just its message.
      if error.backtrace.nil? || error.backtrace.empty?
        lines = safe_message(error).split("\n")
        lines[0] = "#{lines[0]} (#{error.class})"
        return lines
      end

      error.full_message(highlight: false, order: :top).chomp.split("\n")
    rescue StandardError
      ["#{error.class}: #{safe_message(error)}"]
    end

    # -- Completion, inspection and completeness ------------------------------------------

    IDENT = /[A-Za-z_][A-Za-z0-9_]*/.freeze
    CONSTANT_PATH = /(?:::)?[A-Z]\w*(?:::[A-Z]\w*)*/.freeze
    # What completion looks up before a `.`: a variable, a constant or a literal string.
    RECEIVER = /#{IDENT}[?!]?|@@?#{IDENT}|\$#{IDENT}|#{CONSTANT_PATH}|"[^"\\]*"|'[^'\\]*'/.freeze

    def clamp_cursor(cursor, code)
      cursor.is_a?(Integer) && cursor.between?(0, code.length) ? cursor : code.length
    end

    def complete(request)
      code = request['code'].to_s
      cursor = clamp_cursor(request['cursor_pos'], code)
      matches, token = completions(code[0, cursor])
      start = cursor - token.length
      { matches: matches.uniq.sort, cursor_start: start, cursor_end: cursor, metadata: {} }
    end

    # Completions for the text before the cursor and the text they replace. A receiver is only
    # ever looked up, never evaluated: completion must not run the user's code.
    def completions(before)
      case before
      when /(#{RECEIVER})(\.|&\.)(\w*[?!=]?)\z/o
        receiver = Regexp.last_match(1)
        prefix = Regexp.last_match(3)
        object = resolve(receiver)
        return [[], prefix] if object.equal?(UNRESOLVED)

        [object.public_methods.map(&:to_s).select { |name| name.start_with?(prefix) }, prefix]
      when /(#{CONSTANT_PATH})::(\w*)\z/o
        prefix = Regexp.last_match(2)
        owner = resolve(Regexp.last_match(1))
        return [[], prefix] unless owner.is_a?(Module)

        names = owner.constants.map(&:to_s) + owner.public_methods(false).map(&:to_s)
        [names.select { |name| name.start_with?(prefix) }, prefix]
      when /(@@?\w*)\z/
        token = Regexp.last_match(1)
        receiver = @binding.receiver
        names = receiver.instance_variables.map(&:to_s)
        [names.select { |name| name.start_with?(token) }, token]
      when /(\$\w*)\z/
        token = Regexp.last_match(1)
        [global_variables.map(&:to_s).select { |name| name.start_with?(token) }, token]
      when /(?<![\w.:@$])(\w+[?!]?)\z/
        token = Regexp.last_match(1)
        names = @binding.local_variables.map(&:to_s)
        names += @binding.receiver.methods.map(&:to_s)
        names += @binding.receiver.private_methods.map(&:to_s)
        names += Object.constants.map(&:to_s)
        names += KEYWORDS
        [names.select { |name| name.start_with?(token) }, token]
      else
        [[], '']
      end
    end

    UNRESOLVED = Object.new.freeze
    private_constant :UNRESOLVED

    # The object a simple name stands for, without running the user's code: a local variable,
    # an instance or global variable, a constant, or a literal string. Method calls are not
    # made, since they could do anything.
    def resolve(name)
      case name
      when /\A"[^"\\]*"\z/, /\A'[^'\\]*'\z/ then ''
      when /\A@@/ then UNRESOLVED
      when /\A@/
        receiver = @binding.receiver
        receiver.instance_variable_defined?(name) ? receiver.instance_variable_get(name) : UNRESOLVED
      when /\A\$/
        global_variables.include?(name.to_sym) ? @binding.eval(name) : UNRESOLVED
      when /\A#{CONSTANT_PATH}\z/o
        name.delete_prefix('::').split('::').reduce(Object) do |owner, part|
          return UNRESOLVED unless owner.is_a?(Module) && owner.const_defined?(part)

          owner.const_get(part)
        end
      when /\A#{IDENT}\z/o
        @binding.local_variable_defined?(name) ? @binding.local_variable_get(name) : UNRESOLVED
      else
        UNRESOLVED
      end
    rescue StandardError, ScriptError
      UNRESOLVED
    end

    # complete / incomplete / invalid, judged by compiling the code without running it.
    def completeness(code)
      return { status: 'complete' } if code.strip.empty?
      # A line continuation.
      return { status: 'incomplete', indent: next_indent(code) } if code.match?(/\\\n?\z/)

      verbose = $VERBOSE
      $VERBOSE = nil
      begin
        RubyVM::InstructionSequence.compile(code)
        return { status: 'complete' }
      rescue SyntaxError => e
        return { status: 'invalid' } unless unfinished?(e.message)
      ensure
        $VERBOSE = verbose
      end
      { status: 'incomplete', indent: next_indent(code) }
    end

    # Syntax errors that more lines could mend.
    UNFINISHED = Regexp.union(
      'unexpected end-of-input', 'unexpected end-of-file', 'meets end of file', 'anywhere before EOF',
      /unterminated (?:string|regexp|list|quoted string)/
    )

    def unfinished?(message)
      message.match?(UNFINISHED)
    end

    BLOCK_START = /\A\s*(?:def|class|module|if|unless|while|until|case|begin|for|else|elsif|when|in|rescue|ensure)\b/.freeze

    # The indentation for the next line: the last line's, one step deeper after a line that
    # opens a block.
    def next_indent(code)
      last = code.lines.reverse.find { |line| !line.strip.empty? } || ''
      indent = last[/\A[ \t]*/]
      opens = last.match?(BLOCK_START) || last.match?(/\bdo\s*(?:\|[^|]*\|)?\s*\z/) ||
              last.match?(/[{\[(]\s*(?:\|[^|]*\|)?\s*\z/)
      opens ? "#{indent}  " : indent
    end

    def inspect_request(request)
      code = request['code'].to_s
      cursor = clamp_cursor(request['cursor_pos'], code)
      names_at(code, cursor).each do |name|
        text = describe(name, request['detail_level'].to_i)
        return { found: true, data: { 'text/plain' => text }, metadata: {} } if text
      end
      { found: false, data: {}, metadata: {} }
    end

    # The names worth inspecting at the cursor: the one under it, then the method whose call
    # the cursor is in.
    def names_at(code, cursor)
      before = code[0, cursor]
      after = code[cursor..] || ''
      left = before[/(?:@@?|\$|::)?[\w]*(?:(?:\.|::)\w*[?!]?)*\z/] || ''
      right = after[/\A\w*[?!]?/] || ''
      names = [left + right]
      depth = 0
      (before.length - 1).downto(0) do |index|
        char = before[index]
        if ')]}'.include?(char)
          depth += 1
        elsif '([{'.include?(char)
          if depth.zero?
            callee = before[0, index][/(?:@@?|\$)?[\w]+(?:(?:\.|::)\w+[?!]?)*\s*\z/]
            names << callee.strip if callee && char == '('
            break
          end
          depth -= 1
        end
      end
      names.reject(&:empty?).uniq
    end

    def describe(name, detail)
      if (match = /\A(.+?)(?:\.|::)(\w+[?!=]?)\z/.match(name))
        owner = resolve(match[1])
        return nil if owner.equal?(UNRESOLVED)

        if owner.is_a?(Module) && name.include?('::') && owner.const_defined?(match[2], false)
          return describe_value("#{match[1]}::#{match[2]}", owner.const_get(match[2]), detail)
        end
        return describe_method(owner.method(match[2]), detail) if owner.respond_to?(match[2])

        return nil
      end
      value = resolve(name)
      return describe_value(name, value, detail) unless value.equal?(UNRESOLVED)

      receiver = @binding.receiver
      if name.match?(/\A\w+[?!]?\z/) && (receiver.respond_to?(name, true))
        return describe_method(receiver.method(name), detail)
      end

      nil
    rescue StandardError, ScriptError
      nil
    end

    def describe_value(name, value, detail)
      lines = []
      if value.is_a?(Module)
        kind = value.is_a?(Class) ? 'Class' : 'Module'
        lines << "#{kind}: #{value}"
        lines << "Superclass: #{value.superclass}" if value.is_a?(Class) && value.superclass
        lines << "Ancestors: #{value.ancestors.first(8).join(', ')}" if detail.positive?
        methods = value.public_instance_methods(false).sort
        lines << "Instance methods: #{methods.join(', ')}" unless methods.empty?
        singleton = value.public_methods(false).sort
        lines << "Class methods: #{singleton.join(', ')}" unless singleton.empty?
      else
        lines << "#{name}: #{value.class}"
        text = value.inspect
        text = "#{text[0, 1000]}…" if text.length > 1000 && detail.zero?
        lines << text
      end
      lines.join("\n")
    end

    def describe_method(method, _detail)
      parameters = method.parameters.map do |type, param|
        case type
        when :req then param.to_s
        when :opt then "#{param} = …"
        when :rest then "*#{param}"
        when :keyreq then "#{param}:"
        when :key then "#{param}: …"
        when :keyrest then "**#{param}"
        when :block then "&#{param}"
        else param.to_s
        end
      end
      owner = method.owner
      separator = owner.singleton_class? ? '.' : '#'
      owner_name = owner.inspect
      owner_name = owner_name[/\A#<Class:(.*)>\z/, 1] || owner_name if owner.singleton_class?
      lines = ["#{owner_name}#{separator}#{method.name}(#{parameters.join(', ')})"]
      location = method.source_location
      lines << (location ? "Defined in #{location[0]}:#{location[1]}" : 'Built in')
      lines << "Arity: #{method.arity}"
      lines.join("\n")
    end
  end
end

IRuby = Cellgate::Display unless defined?(IRuby)

Cellgate::Driver.new.serve if File.expand_path($PROGRAM_NAME) == Cellgate::DRIVER_FILE
