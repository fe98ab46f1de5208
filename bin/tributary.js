#!/usr/bin/env node
require("../dist/cli.js").main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (error) => {
    process.stderr.write(`tributary: ${String(error && error.message ? error.message : error).split("\n")[0]}\n`);
    process.exitCode = 1;
  },
);
