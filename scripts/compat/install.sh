#!/usr/bin/env bash
# Installs the official ClickHouse drivers that test/integration/compat/drivers.spec.ts runs against
# the query endpoint, and builds one small program per language (test/integration/compat/<lang>/):
#   go      clickhouse-go v2 (Go module proxy), built with the Go toolchain
#   python  clickhouse-connect (PyPI) in a virtualenv
#   java    clickhouse-jdbc (Maven Central) copied by Maven, compiled with javac
#   node    @clickhouse/client, already a dependency (npm ci, npm run build)
# Idempotent: each language is rebuilt only when its sources or pins change (a stamp
# holds their digest). Everything lands under $TRIBUTARY_SERVICES_DIR/compat.
# Usage: install.sh [go|python|java|node]...   (no argument: all four)
set -euo pipefail

SERVICE_NAME=compat
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
# shellcheck source=../services/_common.sh
source "$REPO_DIR/scripts/services/_common.sh"
COMPAT_DIR="$TRIBUTARY_SERVICES_DIR/compat"
SOURCES="$REPO_DIR/test/integration/compat"

# fresh NAME FILE... -> 0 when NAME's stamp matches the digest of FILE... (and the tool versions)
fresh() {
  local name="$1"; shift
  local stamp="$COMPAT_DIR/$name/.stamp"
  digest="$( { cat "$@"; printf '%s\n' "${TOOL_VERSION:-}"; } | sha256sum | cut -d' ' -f1)"
  [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]]
}
stamp() { printf '%s\n' "$digest" > "$COMPAT_DIR/$1/.stamp"; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}

# go_toolchain: puts a Go of at least go.mod's version first on PATH. Without one on this
# machine, that version's toolchain comes from the Go module proxy (golang.org/toolchain),
# as `go` itself would fetch it, into $COMPAT_DIR/go/toolchain.
go_toolchain() {
  local wanted have arch proxy dir
  wanted="$(awk '/^go /{print $2}' "$SOURCES/go/go.mod")"
  have="$(go env GOVERSION 2>/dev/null | sed 's/^go//' || true)"
  if [[ -n "$have" && "$(printf '%s\n%s\n' "$wanted" "$have" | sort -V | head -1)" == "$wanted" ]]; then return; fi
  dir="$COMPAT_DIR/go/toolchain/go$wanted"
  if [[ ! -x "$dir/bin/go" ]]; then
    case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) die "no Go toolchain for $(uname -m): install Go $wanted" ;; esac
    proxy="${GOPROXY:-https://proxy.golang.org}"
    proxy="${proxy%%[,|]*}"
    [[ "$proxy" == http* ]] || proxy=https://proxy.golang.org
    apt_install curl unzip ca-certificates
    log "go: ${have:+Go $have is older than $wanted; }fetching Go $wanted from $proxy"
    rm -rf "$COMPAT_DIR/go/toolchain"
    mkdir -p "$COMPAT_DIR/go/toolchain"
    curl -fsSL "$proxy/golang.org/toolchain/@v/v0.0.1-go$wanted.linux-$arch.zip" -o "$COMPAT_DIR/go/toolchain/go.zip" \
      || die "could not fetch Go $wanted from $proxy: install Go $wanted or later"
    unzip -q "$COMPAT_DIR/go/toolchain/go.zip" -d "$COMPAT_DIR/go/toolchain/unpacked"
    mv "$COMPAT_DIR/go/toolchain/unpacked/golang.org/toolchain@v0.0.1-go$wanted.linux-$arch" "$dir"
    rm -rf "$COMPAT_DIR/go/toolchain/go.zip" "$COMPAT_DIR/go/toolchain/unpacked"
    chmod +x "$dir/bin/"* "$dir/pkg/tool/"*/* 2>/dev/null || true
  fi
  export PATH="$dir/bin:$PATH"
}

install_go() {
  go_toolchain
  TOOL_VERSION="$(go version)"
  if fresh go "$SOURCES/go/go.mod" "$SOURCES/go/go.sum" "$SOURCES/go/main.go" && [[ -x "$COMPAT_DIR/go/compat-go" ]]; then
    log "go: clickhouse-go program up to date"
    return
  fi
  mkdir -p "$COMPAT_DIR/go"
  log "go: building the clickhouse-go program (first build downloads modules and compiles them: a few minutes)"
  # GOTOOLCHAIN=local: an older Go fails here with its own message instead of fetching another toolchain.
  (cd "$SOURCES/go" && GOTOOLCHAIN=local GOFLAGS='-mod=readonly -modcacherw' \
    GOMODCACHE="$COMPAT_DIR/go/mod" GOCACHE="$COMPAT_DIR/go/build" \
    go build -o "$COMPAT_DIR/go/compat-go" .) || die "go build of test/integration/compat/go failed"
  stamp go
}

install_python() {
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
  need python3 "install Python 3.9 or later"
  TOOL_VERSION="$(python3 --version)"
  if fresh python "$SOURCES/python/requirements.txt" && [[ -x "$COMPAT_DIR/python/venv/bin/python" ]]; then
    log "python: clickhouse-connect up to date"
    return
  fi
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3-venv
  fi
  rm -rf "$COMPAT_DIR/python/venv"
  mkdir -p "$COMPAT_DIR/python"
  log "python: installing clickhouse-connect into a virtualenv"
  python3 -m venv "$COMPAT_DIR/python/venv" || die "python3 -m venv failed"
  "$COMPAT_DIR/python/venv/bin/pip" install --quiet --disable-pip-version-check -r "$SOURCES/python/requirements.txt" \
    || die "pip install of test/integration/compat/python/requirements.txt failed"
  stamp python
}

install_java() {
  command -v javac >/dev/null 2>&1 || apt_install openjdk-17-jdk-headless
  command -v mvn >/dev/null 2>&1 || apt_install maven
  need java "install a Java 17 JDK (Debian: openjdk-17-jdk-headless)"
  need javac "install a Java 17 JDK (Debian: openjdk-17-jdk-headless)"
  need mvn "install Maven (Debian: maven)"
  TOOL_VERSION="$(javac -version 2>&1)"
  if fresh java "$SOURCES/java/pom.xml" "$SOURCES/java/Compat.java" && [[ -f "$COMPAT_DIR/java/classes/Compat.class" ]]; then
    log "java: clickhouse-jdbc program up to date"
    return
  fi
  rm -rf "$COMPAT_DIR/java/lib" "$COMPAT_DIR/java/classes"
  mkdir -p "$COMPAT_DIR/java/classes"
  log "java: copying clickhouse-jdbc and its dependencies"
  mvn -B -q -Dstyle.color=never -f "$SOURCES/java/pom.xml" -Dmaven.repo.local="$COMPAT_DIR/java/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$COMPAT_DIR/java/lib" \
    || die "mvn dependency:copy-dependencies for test/integration/compat/java/pom.xml failed"
  javac -d "$COMPAT_DIR/java/classes" -cp "$COMPAT_DIR/java/lib/*" "$SOURCES/java/Compat.java" \
    || die "javac of test/integration/compat/java/Compat.java failed"
  stamp java
}

install_node() {
  need node "install Node 20 or later"
  [[ -f "$REPO_DIR/node_modules/@clickhouse/client/package.json" ]] || die "@clickhouse/client is missing: run npm ci"
  [[ -f "$REPO_DIR/dist/test/integration/compat/node/compat.js" ]] || die "dist/test/integration/compat/node/compat.js is missing: run npm run build"
  log "node: @clickhouse/client $(node -p "require('$REPO_DIR/node_modules/@clickhouse/client/package.json').version") ready"
}

languages=("$@")
((${#languages[@]})) || languages=(go python java node)
for language in "${languages[@]}"; do
  case "$language" in
    go | python | java | node) "install_$language" ;;
    *) die "unknown language '$language' (go, python, java, node)" ;;
  esac
done
