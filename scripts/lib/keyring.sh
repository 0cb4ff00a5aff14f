# Sourced by scripts/test and scripts/bench, inside a private session bus
# (dbus-run-session): start a fresh, unlocked gnome-keyring whose data lives
# in a throwaway dir (never the user's real keyring), and wait until
# org.freedesktop.secrets answers on the bus.
#
#   keyring_start    returns 0 once the Secret Service answers, 1 after 10 s
#   keyring_stop     kills that gnome-keyring, waits until it is gone, and
#                    removes its dir (a keyring_start may follow)
#
# It exports XDG_DATA_HOME and XDG_RUNTIME_DIR (the keyring's data and its
# control socket) and GNOME_KEYRING_CONTROL / GNOME_KEYRING_PID.

keyring_start() {
  keyring_home="$(mktemp -d "${TMPDIR:-/tmp}/tokend-keyring.XXXXXX")"
  # gnome-keyring keeps its keyrings under $XDG_DATA_HOME/keyrings: use a
  # throwaway one so nothing touches the user's real keyring.
  export XDG_DATA_HOME="$keyring_home/data"
  mkdir -p "$XDG_DATA_HOME"
  # and a private runtime dir, so its control socket never meets a real one.
  export XDG_RUNTIME_DIR="$keyring_home/run"
  mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

  eval "$(printf pass | gnome-keyring-daemon --unlock --components=secrets 2>/dev/null)"
  export GNOME_KEYRING_CONTROL GNOME_KEYRING_PID 2>/dev/null || true

  local _
  for _ in $(seq 1 200); do
    if dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null \
        | grep -q 'boolean true'; then
      return 0
    fi
    sleep 0.05
  done
  return 1
}

keyring_stop() {
  if [ -n "${GNOME_KEYRING_PID:-}" ] && kill "$GNOME_KEYRING_PID" 2>/dev/null; then
    # Gone, and its name off the bus, before a next keyring_start: else
    # that one's wait could be answered by this one on its way out.
    local _
    for _ in $(seq 1 200); do
      kill -0 "$GNOME_KEYRING_PID" 2>/dev/null || break
      sleep 0.05
    done
  fi
  unset GNOME_KEYRING_PID
  rm -rf "${keyring_home:-}"
}
