#!/usr/bin/env bash
# Builds, offline and with buildah, the container images the test cluster runs,
# and writes each one as a docker-archive tar for `ctr -n k8s.io images import`:
#   pause     registry.k8s.io/pause:3.10, the kubelet's sandbox image, from
#             testcluster/images/pause.c compiled static
#   testapp   localhost/statefulapp/testapp:1, Debian's static busybox
#   operator  ghcr.io/statefulapp/statefulapp-operator:<chart appVersion>, from
#             the repository's Dockerfile with prebuilt binaries, on a
#             distroless-like base made from this host's own Debian libraries
# Nothing is pulled. Each tar is cached under a hash of its inputs, so a rerun
# only rebuilds what changed.
#
# Usage: testcluster/images.sh <operator-binary> <kubectl-statefulapp-binary> <out-dir>
# Stdout carries only the result, one line per image: name<TAB>image-ref<TAB>tar-path
# Run it as root (buildah mounts layers in its storage). Needs the Debian
# packages buildah, gcc, libc6-dev and busybox-static; uses ca-certificates'
# bundle when installed.
set -euo pipefail
umask 022

pause_ref=registry.k8s.io/pause:3.10
testapp_ref=localhost/statefulapp/testapp:1
base_ref=localhost/statefulapp/cc-base:bookworm
operator_repo=ghcr.io/statefulapp/statefulapp-operator

log() { echo "images: $*" >&2; }
die() { log "$*"; exit 1; }

[ $# -eq 3 ] || die "usage: $0 <operator-binary> <kubectl-statefulapp-binary> <out-dir>"
for f in "$1" "$2"; do
  if [ ! -f "$f" ] || [ ! -x "$f" ]; then die "not an executable file: $f"; fi
done
operator_bin=$(realpath "$1")
kubectl_bin=$(realpath "$2")
mkdir -p "$3"
out=$(realpath "$3")

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
self="$here/$(basename "$0")"
app_version=$(sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"[:space:]]*\)"\{0,1\}[[:space:]]*$/\1/p' \
  "$repo/charts/statefulapp-operator/Chart.yaml")
[ -n "$app_version" ] || die "no appVersion in charts/statefulapp-operator/Chart.yaml"
operator_ref="$operator_repo:$app_version"

cache=${STATEFULAPP_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/statefulapp-operator/images}
mkdir -p "$cache/tars"
# docker-archive:<path>:<ref> cannot carry a path with a colon in it.
case $cache in *:*) die "the cache path must not contain ':': $cache" ;; esac
# One run at a time: runs share the storage and the tars.
exec 9>"$cache/lock"
flock 9

work=$(mktemp -d "$cache/work.XXXXXX")
storage_ready=""
cleanup() {
  # A failed build's working container stays mounted (overlay) until removed.
  if [ -n "$storage_ready" ]; then buildah rm --all >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# BLAKE2b: as good as sha256 for this and 2.5x faster on the debug binaries.
digest() { b2sum | cut -c1-32; }

# A private containers-storage, never the system's /var/lib/containers: our own
# storage.conf also keeps any system or user storage settings out.
# overlay where the kernel lets us mount it (cheap copies), else vfs. A
# storage root can't change driver, so the first run's choice is kept.
storage_for() { # <driver>
  export CONTAINERS_STORAGE_CONF="$cache/storage/$1.conf"
  mkdir -p "$cache/storage/$1"
  printf '[storage]\ndriver = "%s"\ngraphroot = "%s"\nrunroot = "%s"\n' \
    "$1" "$cache/storage/$1/root" "$cache/storage/$1/run" >"$CONTAINERS_STORAGE_CONF"
}
if [ -s "$cache/storage/driver" ]; then
  driver=$(cat "$cache/storage/driver")
else
  driver=vfs
  storage_for overlay
  if probe=$(buildah from scratch 2>/dev/null); then
    buildah mount "$probe" >/dev/null 2>&1 && driver=overlay
    buildah rm "$probe" >/dev/null 2>&1 || true
  fi
  log "buildah storage driver: $driver"
  echo "$driver" >"$cache/storage/driver"
fi
storage_for "$driver"
storage_ready=1
# Working containers left by a killed run hold image layers.
buildah rm --all >/dev/null

# The tar of a rootfs dir, owned by root, with fixed times and order.
rootfs_tar() { # <dir> <tar>
  chmod 0755 "$1" # the dir's own mode becomes the image's / mode
  tar --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -C "$1" -cf "$2" .
}

# An image from scratch out of the given rootfs tars, as one layer.
commit_from_tars() { # <ref> <tar>... -- <buildah config args>...
  local ref=$1 ctr
  shift
  ctr=$(buildah from scratch)
  while [ "$1" != -- ]; do
    buildah add --quiet "$ctr" "$1" / >/dev/null
    shift
  done
  shift
  buildah config "$@" "$ctr"
  buildah commit --quiet --rm --timestamp 0 "$ctr" "$ref" >/dev/null
}

build_pause() {
  mkdir -p "$work/pause"
  gcc -static -O2 -s -o "$work/pause/pause" "$here/images/pause.c"
  rootfs_tar "$work/pause" "$work/pause.tar"
  commit_from_tars "$pause_ref" "$work/pause.tar" -- \
    --entrypoint '["/pause"]' --user 65535:65535 \
    --label org.opencontainers.image.title=pause \
    --label org.opencontainers.image.description="Pod sandbox (pause) image for the statefulapp-operator test cluster"
}

build_testapp() {
  local root="$work/testapp" applet
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
  chmod 1777 "$root/tmp"
  chmod 0700 "$root/root"
  cp /bin/busybox "$root/bin/busybox"
  # Every applet (sh, cat, echo, sleep, date, ls, id, wget, nc, ...) in /bin,
  # the image's whole PATH.
  while read -r applet; do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done < <(/bin/busybox --list)
  # So `id` and `ls -l` show names.
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  rootfs_tar "$root" "$work/testapp.tar"
  commit_from_tars "$testapp_ref" "$work/testapp.tar" -- \
    --cmd '["/bin/sh"]' --env PATH=/bin --workingdir / \
    --label org.opencontainers.image.title=statefulapp-testapp \
    --label org.opencontainers.image.description="Test app for the statefulapp-operator tests: a shell and busybox tools (sh, wget, nc, ...) on Debian's static busybox"
}

# Shared libraries the operator binaries load, as ldd resolves them here.
# (ldd fails on a static binary, which needs none.)
libs=()
# The agent makes and grows volume filesystems (size enforcement "image").
fstools=("$(command -v mke2fs)" "$(command -v resize2fs)" "$(command -v mkfs.xfs)" "$(command -v xfs_growfs)")
for tool in "${fstools[@]}"; do
  [ -x "$tool" ] || die "e2fsprogs (mke2fs, resize2fs) and xfsprogs (mkfs.xfs, xfs_growfs) are needed"
done
for bin in "$operator_bin" "$kubectl_bin" "${fstools[@]}"; do
  deps=$(ldd "$bin" 2>/dev/null || true)
  if grep 'not found' <<<"$deps" >&2; then die "$bin: ldd cannot find the libraries above"; fi
  while read -r lib; do libs+=("$lib"); done < <(
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$deps")
done
mapfile -t libs < <(printf '%s\n' "${libs[@]}" | sort -u | sed '/^$/d')
ca=/etc/ssl/certs/ca-certificates.crt

# Stands in for gcr.io/distroless/cc-debian12:nonroot: glibc, libgcc and the
# rest of what ldd lists (copied to the same paths), the nonroot user, /tmp,
# CA certificates, and distroless's config.
build_base() {
  local root="$work/base" home="$work/base-home" lib
  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/root" "$root/home" "$home/home/nonroot"
  chmod 1777 "$root/tmp"
  chmod 0700 "$root/root" "$home/home/nonroot"
  for lib in "${libs[@]}"; do cp --parents -L "$lib" "$root"; done
  mkdir -p "$root/usr/sbin"
  for tool in "${fstools[@]}"; do cp -L "$tool" "$root/usr/sbin/"; done
  # e2fsprogs and xfs_growfs look for mounted filesystems in /etc/mtab.
  ln -s /proc/self/mounts "$root/etc/mtab"
  if [ -f "$ca" ]; then cp -L "$ca" "$root/etc/ssl/certs/ca-certificates.crt"; fi
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
nonroot:x:65532:
EOF
  # glibc resolves /etc/hosts first, as Kubernetes' host aliases expect.
  echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
  rootfs_tar "$root" "$work/base.tar"
  # nonroot's home belongs to nonroot: a second tar, same layer.
  tar --sort=name --mtime=@0 --numeric-owner --owner=65532 --group=65532 \
    -C "$home" -cf "$work/base-home.tar" ./home/nonroot
  commit_from_tars "$base_ref" "$work/base.tar" "$work/base-home.tar" -- \
    --user 65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
}

base_id() { buildah images --quiet --no-trunc "$base_ref" 2>/dev/null || true; }

build_operator() {
  # The base lives only in our storage. A stamp beside it says which inputs
  # made which image (a label would be inherited by the operator image).
  local stamp="$cache/storage/$driver/cc-base.stamp"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$base_key $(base_id)" ]; then
    log "building $base_ref"
    build_base
    echo "$base_key $(base_id)" >"$stamp"
  fi
  # A small build context, not the repo with its target/ dir.
  local ctx="$work/context"
  mkdir -p "$ctx/binaries"
  cp "$repo/Dockerfile" "$ctx/Dockerfile"
  # Without debug info: the same code, a tenth of a debug build's size (a
  # release build has none either), so nodes import it in a second.
  strip --strip-debug -o "$ctx/binaries/statefulapp-operator" "$operator_bin"
  strip --strip-debug -o "$ctx/binaries/kubectl-statefulapp" "$kubectl_bin"
  # BINARIES=prebuilt skips the rust stage; --pull=never as nothing can be pulled.
  buildah bud --quiet --pull=never --isolation chroot --timestamp 0 \
    --build-arg BINARIES=prebuilt --build-arg BASE="$base_ref" --build-arg FSTOOLS=base \
    -t "$operator_ref" "$ctx" >/dev/null
  # buildah 1.28 leaves the container of the stage that only renames another.
  buildah rm --all >/dev/null
}

results=()
built=0
image() { # <name> <ref> <key> <build function>
  local name=$1 ref=$2 key=$3 tar="$cache/tars/$1-$3.tar" start=$SECONDS
  if [ ! -s "$tar" ]; then
    log "building $name ($ref)"
    "$4"
    rm -f "$tar.tmp"
    buildah push --quiet "$ref" "docker-archive:$tar.tmp:$ref"
    mv "$tar.tmp" "$tar"
    find "$cache/tars" -name "$name-*.tar" ! -name "$name-$key.tar" -delete
    built=1
    log "built $name in $((SECONDS - start))s: $(du -h "$tar" | cut -f1)"
  fi
  # A hard link costs nothing; another filesystem gets a copy.
  [ "$tar" -ef "$out/$name.tar" ] || ln -f "$tar" "$out/$name.tar" 2>/dev/null ||
    cp -f "$tar" "$out/$name.tar"
  results+=("$name"$'\t'"$ref"$'\t'"$out/$name.tar")
}

script_key=$(digest <"$self")
image pause "$pause_ref" \
  "$( (echo "$script_key"; gcc --version | head -n1; cat "$here/images/pause.c") | digest)" build_pause
image testapp "$testapp_ref" "$( (echo "$script_key"; cat /bin/busybox) | digest)" build_testapp
base_key=$({
  echo "$script_key"
  for lib in "${libs[@]}" "${fstools[@]}"; do echo "$lib"; cat "$lib"; done
  if [ -f "$ca" ]; then cat "$ca"; fi
} | digest)
image operator "$operator_ref" \
  "$( (echo "$script_key $base_key $operator_ref"; cat "$repo/Dockerfile" "$operator_bin" "$kubectl_bin") | digest)" \
  build_operator

# Drop what rebuilt images replaced (the tags moved on) and bud's stage images.
if [ "$built" = 1 ]; then buildah rmi --prune >/dev/null 2>&1 || true; fi

printf '%s\n' "${results[@]}"
