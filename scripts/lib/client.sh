# Sourced by scripts/install, scripts/bench and scripts/test: how the thin
# client (`token` and its helpers) is built for this host.
#
#   client_target HOST [add]   prints the target to build it for ("" for the
#                              host's default); with `add`, fetches the musl
#                              target with rustup when it is not installed
#   client_rustflags TARGET    prints the RUSTFLAGS that build goes with
#
# On Linux the client is one static binary, musl's where the target is
# there (`rustup target add x86_64-unknown-linux-musl`), else glibc's with
# +crt-static. Static, because a `token get` is a process start, a connect
# and one line each way: dynamic loading would be most of it. musl, because
# glibc's static start still runs its CPU and tunables set-up (a dozen
# CPUID queries, each a trap to the hypervisor on a virtual machine) and
# relocates itself: on this 2-core VM a warm `token get` took 0.76 ms built
# on glibc and 0.34 ms on musl, /bin/true 0.65 ms (hyperfine -N, 1000 runs,
# two rounds). The client does a handful of allocations and no name
# lookups, so musl's slower malloc and resolver cost it nothing; the daemon
# stays on glibc.

client_target() {
  local host=$1 add=${2:-} musl
  case "$host" in
    *-linux-gnu)
      musl="${host%-gnu}-musl"
      if rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
        echo "$musl"
      elif [ "$add" = add ] && timeout 300 rustup target add "$musl" >/dev/null 2>&1; then
        echo "$musl"
      else
        echo "$host"
      fi
      ;;
    *) echo "" ;;
  esac
}

client_rustflags() {
  case "$1" in
    *-linux-gnu) echo "-C target-feature=+crt-static" ;;
    *) echo "" ;;
  esac
}
