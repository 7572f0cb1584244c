#!/usr/bin/env bash
# Builds the Hypha container image from the repo's Dockerfile with podman, also on a machine that
# cannot pull from a container registry (like the ones Hypha is developed on).
#
#   bash manifests/image/build.sh [--tag localhost/hypha:dev] [--base IMAGE] [--rebuild-base]
#
# --base IMAGE   use IMAGE (e.g. node:24-slim from a registry) as the Dockerfile's NODE_IMAGE.
# Without --base, a local stand-in for node:24-slim is assembled once and kept as
# localhost/hypha-node:24-slim: a minimal Debian bookworm made by debootstrap from the machine's
# own apt mirror, Node 24 from the npm registry (the binary the repo pins: `npm ci` first), npm
# from the npm registry, the N-API headers the machine's node-gyp already uses, and the machine's
# CA bundle (so npm inside the build trusts what the machine trusts). Same layout as node:24-slim
# (/usr/local/bin/node, /usr/local/include/node), so the Dockerfile is unchanged.
#
# Needs: podman, runc and debootstrap (apt-get install -y podman runc debootstrap), root.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TAG="localhost/hypha:dev"
BASE=""
BASE_LOCAL="localhost/hypha-node:24-slim"
REBUILD_BASE=0

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "build.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG="${2:?--tag needs a value}"; shift 2 ;;
    --base) BASE="${2:?--base needs a value}"; shift 2 ;;
    --rebuild-base) REBUILD_BASE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build.sh: error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

for tool in podman runc; do
  command -v "$tool" >/dev/null || die "$tool is not installed; run: apt-get install -y podman runc debootstrap"
done
[ "$(id -u)" = 0 ] || die "run as root (podman builds here with the root store)"

# crun (podman's default runtime) refuses to start containers under the hybrid cgroup layout of
# these machines, and the sandbox lacks CAP_SYS_RESOURCE, so limits can only be lowered.
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)

step() { printf '\n== %s\n' "$*"; }

apt_mirror() {
  local m=""
  if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
    m="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources)"
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m="$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)"
  fi
  [ -n "$m" ] || die "cannot find this machine's Debian mirror in /etc/apt/sources.list{,.d}"
  echo "$m"
}

build_local_base() {
  command -v debootstrap >/dev/null || die "debootstrap is not installed; run: apt-get install -y debootstrap"
  local node_bin="$REPO/node_modules/node/bin/node"
  [ -x "$node_bin" ] || die "$node_bin missing: run 'npm ci' in $REPO first (it installs the pinned Node 24)"
  local version; version="$("$node_bin" --version)"
  case "$version" in v24.*) ;; *) die "the pinned Node is $version, expected v24.x" ;; esac
  local nodedir; nodedir="$(npm config get nodedir 2>/dev/null || true)"
  local headers=""
  for d in "$nodedir/include/node" /usr/include/node /usr/local/include/node; do
    if [ -f "$d/node_api.h" ]; then headers="$d"; break; fi
  done
  [ -n "$headers" ] || die "no Node headers with node_api.h found (npm config get nodedir: '$nodedir')"

  local work; work="$(mktemp -d /var/tmp/hypha-base.XXXXXX)"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  local root="$work/rootfs"
  step "debootstrap bookworm (minbase) from this machine's mirror — about two minutes"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$(apt_mirror)" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  step "Node $version, npm and headers into /usr/local"
  install -D -m 0755 "$node_bin" "$root/usr/local/bin/node"
  (cd "$work" && npm pack npm@11 --silent >npm-pack.txt)
  mkdir -p "$root/usr/local/lib/node_modules/npm"
  tar -xzf "$work/$(tail -1 "$work/npm-pack.txt")" -C "$root/usr/local/lib/node_modules/npm" --strip-components=1
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  mkdir -p "$root/usr/local/include"
  cp -r "$headers" "$root/usr/local/include/node"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  step "import as $BASE_LOCAL"
  tar -C "$root" -c . | "${PODMAN[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["node"]' - "$BASE_LOCAL" >/dev/null
  rm -rf "$work"
  trap - EXIT
}

if [ -z "$BASE" ]; then
  BASE="$BASE_LOCAL"
  if [ "$REBUILD_BASE" = 1 ] || ! "${PODMAN[@]}" image exists "$BASE_LOCAL"; then
    build_local_base
  else
    echo "using the existing $BASE_LOCAL (--rebuild-base makes it anew)"
  fi
fi

step "podman build $TAG from $REPO/Dockerfile (NODE_IMAGE=$BASE)"
"${PODMAN[@]}" build --network host "${LIMITS[@]}" --build-arg "NODE_IMAGE=$BASE" -t "$TAG" "$REPO"
step "built $TAG ($("${PODMAN[@]}" image inspect "$TAG" --format '{{.Size}}') bytes)"
echo "try: podman --runtime runc run --rm ${LIMITS[*]} $TAG --version"
