#!/usr/bin/env node
"use strict";
const line = (error) => String(error && error.message ? error.message : error).split("\n")[0];
let cli;
try {
  cli = require("../dist/cli.js");
} catch (error) {
  // A clone runs from its sources: dist/ exists only once built.
  const unbuilt = error && error.code === "MODULE_NOT_FOUND" && String(error.message).includes("dist/cli.js");
  process.stderr.write(`tributary: ${unbuilt ? "not built yet: run npm run build (or npm run demo) first" : line(error)}\n`);
  process.exit(1);
}
cli.main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (error) => {
    process.stderr.write(`tributary: ${line(error)}\n`);
    process.exitCode = 1;
  },
);
