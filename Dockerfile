# One image for the controller and the node agent:
#   docker build -t ghcr.io/statefulapp/statefulapp-operator:0.1.0 .
#
# Build args (the defaults are the release build above):
#   BINARIES=build     compile in the rust stage (default), or
#   BINARIES=prebuilt  take binaries/statefulapp-operator and
#                      binaries/kubectl-statefulapp from the build context
#                      instead (testcluster/images.sh does this offline);
#                      the rust stage is then skipped, not pulled.
#   BASE=...           the runtime base (default distroless cc, nonroot).
#   FSTOOLS=base       the base has the filesystem tools already
#                      (testcluster/images.sh); default: from Debian.
ARG BINARIES=build
ARG BASE=gcr.io/distroless/cc-debian12:nonroot
ARG FSTOOLS=debian

# mke2fs, resize2fs, mkfs.xfs and xfs_growfs with their libraries, for the
# agent's size enforcement (a filesystem per volume).
FROM debian:bookworm-slim AS fstools-debian
RUN apt-get update && apt-get install -y --no-install-recommends e2fsprogs xfsprogs \
 && mkdir -p /fstools/usr/sbin /fstools/etc \
 && cp /sbin/mke2fs /sbin/resize2fs /sbin/mkfs.xfs /usr/sbin/xfs_growfs /fstools/usr/sbin/ \
 && for lib in $(ldd /sbin/mke2fs /sbin/resize2fs /sbin/mkfs.xfs /usr/sbin/xfs_growfs | awk '$3 ~ /^\// {print $3}' | sort -u); do \
      cp --parents -L "$lib" /fstools; done \
 && ln -s /proc/self/mounts /fstools/etc/mtab

FROM scratch AS fstools-base
COPY Dockerfile /fstools/.from-base

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin statefulapp-operator --bin kubectl-statefulapp

# Same paths as the build stage, so the final stage copies from either.
FROM scratch AS prebuilt
COPY binaries/statefulapp-operator binaries/kubectl-statefulapp /src/target/release/

# The ":-build" fallback repeats the default: buildah before 1.29 (Debian 12
# has 1.28) ignores ARG defaults when it works out which stages are needed,
# and would skip the build stage.
FROM ${BINARIES:-build} AS binaries
FROM fstools-${FSTOOLS:-debian} AS fstools

FROM ${BASE}
COPY --from=fstools /fstools/ /
COPY --from=binaries /src/target/release/statefulapp-operator /usr/local/bin/statefulapp-operator
COPY --from=binaries /src/target/release/kubectl-statefulapp /usr/local/bin/kubectl-statefulapp
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/statefulapp-operator"]
