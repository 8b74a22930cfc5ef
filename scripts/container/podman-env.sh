# Sourced by scripts/container-test and scripts/container/*: a podman set-up that works on a machine
# without a container daemon, without overlayfs, and where default ulimits can't be applied (nested VMs,
# CI runners). Everything (config, image storage, the cached base image) lives under
# $TXCAT_CACHE/container so it never touches the host's own podman storage and is removed with the cache.
# Requires scripts/lib.sh to be sourced first (TXCAT_CACHE, log).

TXCAT_CONTAINER_CACHE="$TXCAT_CACHE/container"
mkdir -p "$TXCAT_CONTAINER_CACHE"

# vfs: works on any filesystem (no overlay mounts needed) at the price of one full copy per layer, so the
# Dockerfile keeps its runtime stage to a single COPY layer. runc: the crun shipped with Debian 12 fails
# inside some VMs; runc is the conservative choice. default_ulimits = []: don't try to raise RLIMIT_NOFILE
# above what the sandbox allows.
export CONTAINERS_CONF="$TXCAT_CONTAINER_CACHE/containers.conf"
export CONTAINERS_STORAGE_CONF="$TXCAT_CONTAINER_CACHE/storage.conf"
cat >"$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
cat >"$CONTAINERS_STORAGE_CONF" <<CONF
[storage]
driver = "vfs"
graphroot = "$TXCAT_CONTAINER_CACHE/storage"
runroot = "$TXCAT_CONTAINER_CACHE/run"
CONF

# podman with the settings above made explicit (they also come from the config files).
tpodman() {
  podman --runtime runc --storage-driver vfs "$@"
}

# Installs debootstrap/podman/runc with apt when missing (Debian/Ubuntu hosts only).
ensure_container_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { log "missing ${missing[*]} and no apt-get: install them yourself"; return 1; }
  log "installing ${missing[*]} with apt-get"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}
