#!/usr/bin/env bash
# Makes the krew release of kubectl-statefulapp: one archive per platform
# (the binary and LICENSE, as krew installs them) and the manifest for
# krew-index, krew/statefulapp.yaml with the version and each archive's
# sha256 filled in. Upload the archives to the GitHub release of that
# version, then submit the manifest to krew-index.
#
# Usage: scripts/krew-release.sh [--version vX.Y.Z] [--out DIR] [OS/ARCH=BINARY ...]
#   --version  default: v<version in Cargo.toml>
#   --out      default: target/krew
#   OS/ARCH=BINARY  a built kubectl-statefulapp for that platform (e.g.
#              darwin/arm64=target/aarch64-apple-darwin/release/kubectl-statefulapp);
#              without any, the host's is built (cargo build --release).
# The manifest lists the platforms packed here, and only those.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

version="v$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
out="$root/target/krew"
platforms=()
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    */*=*) platforms+=("$1"); shift ;;
    *) echo "krew-release: unexpected argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$version" in
  v[0-9]*.[0-9]*.[0-9]*) ;;
  *) echo "krew-release: the version must be vMAJOR.MINOR.PATCH, not $version" >&2; exit 2 ;;
esac

if [ ${#platforms[@]} -eq 0 ]; then
  (cd "$root" && cargo build --release --locked --bin kubectl-statefulapp)
  host_os=$(uname -s | tr '[:upper:]' '[:lower:]')
  case "$(uname -m)" in
    x86_64) host_arch=amd64 ;;
    aarch64|arm64) host_arch=arm64 ;;
    *) echo "krew-release: no krew arch for $(uname -m)" >&2; exit 2 ;;
  esac
  platforms=("$host_os/$host_arch=$root/target/release/kubectl-statefulapp")
fi

mkdir -p "$out"
manifest=$(cat "$root/krew/statefulapp.yaml")
kept=()
for platform in "${platforms[@]}"; do
  os_arch=${platform%%=*}
  binary=${platform#*=}
  os=${os_arch%/*}
  arch=${os_arch#*/}
  [ -x "$binary" ] || { echo "krew-release: $binary is not an executable" >&2; exit 1; }
  placeholder="SHA256_$(echo "${os}_${arch}" | tr '[:lower:]' '[:upper:]')"
  grep -q "sha256: $placeholder\$" <<<"$manifest" ||
    { echo "krew-release: krew/statefulapp.yaml has no $os/$arch platform" >&2; exit 1; }
  archive="kubectl-statefulapp_${version}_${os}_${arch}.tar.gz"
  staging=$(mktemp -d)
  install -m 0755 "$binary" "$staging/kubectl-statefulapp"
  install -m 0644 "$root/LICENSE" "$staging/LICENSE"
  # Same bytes for the same binary: fixed owner, order and times.
  tar -C "$staging" --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name \
    -cf - kubectl-statefulapp LICENSE | gzip -n >"$out/$archive"
  rm -rf "$staging"
  sha=$(sha256sum "$out/$archive" | cut -d' ' -f1)
  manifest=${manifest//"sha256: $placeholder"/"sha256: $sha"}
  kept+=("$sha")
  echo "krew-release: $out/$archive $sha" >&2
done

# Keep the platforms packed here: drop each platform entry whose sha256 is
# still a placeholder.
manifest=$(awk '
  function flush() { if (block != "" && block !~ /sha256: SHA256_/) printf "%s", block; block = "" }
  /^    - selector:/ { flush(); inside = 1 }
  inside && !/^      / && !/^    - selector:/ { flush(); inside = 0 }
  inside { block = block $0 "\n"; next }
  { print }
  END { flush() }
' <<<"$manifest")
manifest=${manifest//VERSION/$version}
# The release manifest has no template comment.
sed '/^#/d' <<<"$manifest" >"$out/statefulapp.yaml"
echo "krew-release: $out/statefulapp.yaml (${#kept[@]} platforms)" >&2
