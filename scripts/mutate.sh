#!/usr/bin/env bash
# npm run mutate: mutation testing with StrykerJS (mocha runner, TypeScript checker) over the
# core named in stryker.config.json. Stryker and its plugins are installed once into a cache
# outside the project (TRIBUTARY_SERVICES_DIR/stryker), so they add nothing to `npm ci`; the
# 9.x line is the last that runs on Node 20. Extra arguments go to `stryker run`
# (e.g. `npm run mutate -- --mutate lib/retry.ts`). The score lands in bench/RESULTS.md.
# The 150-500 MB hostile-file specs (test/integration/connectors/files-hostile.spec.ts) are left
# out of the mutation run: instrumented, each takes minutes per mutant that reaches the framers,
# whose hostile cases the seeded property spec (framing-property) covers in kilobytes.
set -euo pipefail
cd "$(dirname "$0")/.."
STRYKER_VERSION=9.6.1
cache="${TRIBUTARY_SERVICES_DIR:-${TMPDIR:-/tmp}/tributary-services}/stryker-$STRYKER_VERSION"
if [[ ! -x "$cache/node_modules/.bin/stryker" ]]; then
  echo "installing StrykerJS $STRYKER_VERSION into $cache"
  mkdir -p "$cache"
  npm install --prefix "$cache" --no-save --no-audit --no-fund --loglevel=error \
    "@stryker-mutator/core@$STRYKER_VERSION" "@stryker-mutator/mocha-runner@$STRYKER_VERSION" \
    "@stryker-mutator/typescript-checker@$STRYKER_VERSION" mocha@11 typescript@5.9 >/dev/null
fi
npm run build >/dev/null
"$cache/node_modules/.bin/stryker" run stryker.config.json \
  --plugins "$cache/node_modules/@stryker-mutator/mocha-runner/dist/src/index.js,$cache/node_modules/@stryker-mutator/typescript-checker/dist/src/index.js" "$@"
# The score and every survivor go to bench/mutation.json and bench/RESULTS.md.
node dist/bench/mutation.js reports/mutation/mutation.json "$@"
node dist/bench/run.js --markdown
