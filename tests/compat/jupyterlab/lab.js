// The page side of tests/jupyterlab.rs: what a user does in JupyterLab, done through the
// application's own command registry (the commands its menus and shortcuts run), and what
// the user would see, read back from the page. JupyterLab exposes the application as
// `window.jupyterapp` only when started with `--LabApp.expose_app_in_browser=True`.
//
// Every function returns at once with plain JSON; the test polls for what it waits for, so no
// WebDriver call ever waits on a cell.
window.cellgateLab = (() => {
  const app = window.jupyterapp;
  const lab = {
    // The notebook being driven, once it is open.
    panel: null,
    // Why opening it failed, if it did.
    failure: null,
    // Every kernel status JupyterLab went through for that notebook, in order: a requested
    // restart shows `restarting`; `autorestarting` is what makes JupyterLab tell the user
    // that the kernel "appears to have died".
    statuses: [],
    // What the page logged as errors and warnings from here on, for the test's report.
    console: [],
  };
  for (const level of ["error", "warn"]) {
    const original = console[level].bind(console);
    console[level] = (...parts) => {
      const text = parts.map((part) => String(part)).join(" ");
      lab.console.push(`${new Date().toISOString()} ${level}: ${text}`);
      original(...parts);
    };
  }
  window.addEventListener("unhandledrejection", (event) => {
    const reason = event.reason && (event.reason.stack || event.reason);
    lab.console.push(`${new Date().toISOString()} unhandled rejection: ${reason}`);
  });

  // Notes where the test is in the console record.
  lab.mark = (step) => {
    lab.console.push(`${new Date().toISOString()} step: ${step}`);
  };

  // Starts opening a new notebook on `kernelName` (File > New > Notebook, that kernel).
  lab.newNotebook = (kernelName) => {
    lab.panel = null;
    lab.failure = null;
    lab.statuses = [];
    (async () => {
      await app.restored;
      const panel = await app.commands.execute("notebook:create-new", { kernelName });
      panel.sessionContext.statusChanged.connect((_, status) => lab.statuses.push(status));
      await panel.sessionContext.ready;
      lab.panel = panel;
    })().catch((error) => {
      lab.failure = String(error && error.stack ? error.stack : error);
    });
  };

  // The open notebook's kernel as the toolbar shows it, or why there is none.
  lab.kernel = () => {
    if (lab.failure) {
      return { failure: lab.failure };
    }
    if (!lab.panel) {
      return null;
    }
    const context = lab.panel.sessionContext;
    const kernel = context.session && context.session.kernel;
    return {
      name: context.kernelDisplayName,
      status: context.kernelDisplayStatus,
      id: kernel ? kernel.id : null,
      statuses: lab.statuses,
    };
  };

  // Types `code` into the active cell and runs it with "Run Selected Cell and Advance"
  // (Shift+Enter), which moves on to a new cell below. Returns the index of the cell run.
  lab.run = (code) => {
    const notebook = lab.panel.content;
    app.shell.activateById(lab.panel.id);
    const index = notebook.activeCellIndex;
    notebook.activeCell.model.sharedModel.setSource(code);
    void app.commands.execute("notebook:run-cell-and-select-next");
    return index;
  };

  // What cell `index` shows: its prompt, its output as text, the images drawn in it, the
  // error outputs, and whether it asks for input.
  lab.cell = (index) => {
    const cell = lab.panel.content.widgets[index];
    const node = cell.node;
    const prompt = node.querySelector(".jp-InputPrompt");
    const output = node.querySelector(".jp-OutputArea");
    return {
      prompt: prompt ? prompt.innerText.trim() : "",
      output: output ? output.innerText : "",
      images: Array.from(node.querySelectorAll(".jp-RenderedImage img"))
        .filter((image) => image.complete)
        .map((image) => image.naturalWidth),
      errors: node.querySelectorAll(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]',
      ).length,
      stdin: node.querySelector(".jp-Stdin-input") !== null,
      types: cell.model.outputs.toJSON().map((one) => one.output_type),
    };
  };

  // Runs one of JupyterLab's commands, as its menu entry or shortcut would.
  lab.command = (id) => {
    app.shell.activateById(lab.panel.id);
    void app.commands.execute(id);
  };

  // The dialogs open on the page, each as its text.
  lab.dialogs = () =>
    Array.from(document.querySelectorAll(".jp-Dialog")).map((dialog) => dialog.innerText);

  return lab;
})();
