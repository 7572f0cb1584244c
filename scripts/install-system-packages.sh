#!/usr/bin/env bash
# Installs the Debian packages one group of Hypha's work needs, from scripts/system-packages.txt
# (the only list). Usage: bash scripts/install-system-packages.sh [--print] demo|test|bench ...
# Groups include the ones before them: test installs demo's too; bench installs all.
# --print lists the packages and installs nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
print=0
[ "${1:-}" = "--print" ] && { print=1; shift; }
[ $# -gt 0 ] || { echo "usage: $0 [--print] demo|test|bench ..." >&2; exit 2; }
want=()
for g in "$@"; do
  case "$g" in
    demo) want+=(demo) ;;
    test) want+=(demo test) ;;
    bench) want+=(demo test bench) ;;
    *) echo "$0: unknown group '$g' (demo, test or bench)" >&2; exit 2 ;;
  esac
done
pkgs=()
while read -r group pkg _; do
  case "$group" in ''|'#'*) continue ;; esac
  for w in "${want[@]}"; do [ "$w" = "$group" ] && pkgs+=("$pkg") && break; done
done < "$here/system-packages.txt"
[ "$print" = 1 ] && { printf '%s\n' "${pkgs[@]}"; exit 0; }
[ "$(id -u)" = 0 ] || { echo "$0: run as root (apt-get install): sudo bash $0 $*" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
# Packages whose Debian system service we never want running: the tests start the binary themselves,
# inside their own network namespaces. A service this run's install started is stopped and disabled;
# one that was installed before is left as it was.
no_service=(prometheus)
fresh=()
for p in "${no_service[@]}"; do
  case " ${pkgs[*]} " in *" $p "*) dpkg -s "$p" >/dev/null 2>&1 || fresh+=("$p") ;; esac
done
echo "installing: ${pkgs[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
if [ ${#fresh[@]} -gt 0 ] && [ -d /run/systemd/system ]; then
  systemctl disable --now "${fresh[@]/%/.service}" >/dev/null 2>&1 || true
fi
