#!/usr/bin/env bash
# A local registry with wpod's test images, for trying image pods on a machine without the
# internet (as root):
#
#   bash tests/images/serve.sh            # registry on 127.0.0.1:5000, images built and pushed
#   export WPOD_REGISTRIES_CONF=/tmp/wpod-test-registry/registries.conf
#   wpod run examples/images.yaml
#   bash tests/images/serve.sh stop
#
# registries.conf maps docker.io to it, so `image: nginx` and `image: busybox` come from here.
set -euo pipefail
dir=/tmp/wpod-test-registry
addr=${WPOD_TEST_REGISTRY:-127.0.0.1:5000}
if [ "${1:-}" = stop ]; then
  [ -f "$dir/pid" ] && kill "$(cat "$dir/pid")" 2>/dev/null || true
  rm -rf "$dir"
  exit 0
fi
source "$(dirname "$0")/registry.sh"
if ! curl -fs "http://$addr/v2/" >/dev/null 2>&1; then
  # Left running after this script (stopped by `serve.sh stop`).
  start_registry "$dir" "$addr"
  echo "$registry_pid" > "$dir/pid"
fi
bash "$(dirname "$0")/build.sh" "$addr"
cat > "$dir/registries.conf" <<CONF
[[registry]]
prefix = "docker.io"
location = "$addr"
insecure = true
CONF
echo "registry on $addr; export WPOD_REGISTRIES_CONF=$dir/registries.conf"
