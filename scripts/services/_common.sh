# shellcheck shell=bash
# Shared helpers for the scripts in scripts/services/. Sourced, not executed.
#
# Every service keeps its state under $TRIBUTARY_SERVICES_DIR
# (default: ${TMPDIR:-/tmp}/tributary-services/<service>/...).

TRIBUTARY_SERVICES_DIR="${TRIBUTARY_SERVICES_DIR:-${TMPDIR:-/tmp}/tributary-services}"

log()  { printf '[%s] %s\n' "${SERVICE_NAME:-services}" "$*"; }
warn() { printf '[%s] WARNING: %s\n' "${SERVICE_NAME:-services}" "$*" >&2; }
die()  { printf '[%s] ERROR: %s\n' "${SERVICE_NAME:-services}" "$*" >&2; exit 1; }

# port_open PORT -> 0 if something accepts TCP connections on 127.0.0.1:PORT
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_alive PIDFILE -> 0 if the pid in PIDFILE is a running process
pid_alive() {
  local pidfile="$1" pid
  [[ -s "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # A zombie still answers kill -0; treat it as dead.
  local state
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
  [[ "$state" != "Z" ]]
}

# show_log_tail FILE [LINES]
show_log_tail() {
  local file="$1" lines="${2:-40}"
  if [[ -f "$file" ]]; then
    printf '[%s] ---- last %s lines of %s ----\n' "${SERVICE_NAME:-services}" "$lines" "$file" >&2
    tail -n "$lines" "$file" >&2 || true
    printf '[%s] ---- end of %s ----\n' "${SERVICE_NAME:-services}" "$file" >&2
  else
    printf '[%s] (log file %s does not exist)\n' "${SERVICE_NAME:-services}" "$file" >&2
  fi
}

# stop_pidfile PIDFILE PORT TIMEOUT_SECONDS
# Sends SIGTERM, waits up to TIMEOUT for the process to exit and the port to
# close, then falls back to SIGKILL. Only ever signals the pid in PIDFILE.
stop_pidfile() {
  local pidfile="$1" port="$2" timeout="${3:-30}" pid i
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    if port_open "$port"; then
      die "not running from our pid file, but 127.0.0.1:$port is still in use by another process"
    fi
    log "not running"
    return 0
  fi
  pid="$(cat "$pidfile")"
  log "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    if ! pid_alive "$pidfile" && ! port_open "$port"; then
      rm -f "$pidfile"
      log "stopped"
      return 0
    fi
    sleep 0.1
  done
  warn "pid $pid did not stop within ${timeout}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    if ! pid_alive "$pidfile" && ! port_open "$port"; then
      rm -f "$pidfile"
      log "stopped (killed)"
      return 0
    fi
    sleep 0.1
  done
  die "could not stop pid $pid / free port $port"
}

need_root_for_apt() {
  if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      echo sudo
    else
      die "installing Debian packages needs root (or sudo)"
    fi
  fi
}

# apt_install PKG... : installs the packages that are missing (apt-get update once first)
apt_install() {
  local missing=() p sudo_cmd
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]} == 0)); then
    log "Debian packages already installed: $*"
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: ${missing[*]}"
  sudo_cmd="$(need_root_for_apt)"
  log "installing Debian packages: ${missing[*]}"
  # apt-get update only when the package lists have never been fetched or are
  # missing the package we want.
  if ! apt-cache show "${missing[0]}" >/dev/null 2>&1; then
    log "running apt-get update"
    $sudo_cmd apt-get update -q || die "apt-get update failed"
  fi
  if ! DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    log "apt-get install failed; running apt-get update and retrying once"
    $sudo_cmd apt-get update -q || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}" \
      || die "apt-get install ${missing[*]} failed"
  fi
}
