# Sourced by the scripts that need a registry of their own on loopback (tests/images/serve.sh,
# bench/*.sh, examples/marketplace.sh): Debian's docker-registry with its storage under a
# directory of the caller's.
#
#   start_registry DIR ADDR   # serves DIR/data on ADDR; sets registry_pid; waits until it answers
#   stop_registry             # stops what start_registry started (for an EXIT trap)

start_registry() {
  local dir=$1 addr=$2
  mkdir -p "$dir/data"
  cat > "$dir/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $dir/data}}
http: {addr: $addr}
YAML
  docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 50); do curl -fs "http://$addr/v2/" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "docker-registry did not come up on $addr (see $dir/registry.log)" >&2
  return 1
}

stop_registry() {
  if [[ -n "${registry_pid:-}" ]]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
  fi
}
