# One image for the controller and the node agent:
#   docker build -t ghcr.io/statefulapp/statefulapp-operator:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin statefulapp-operator --bin kubectl-statefulapp

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/statefulapp-operator /usr/local/bin/statefulapp-operator
COPY --from=build /src/target/release/kubectl-statefulapp /usr/local/bin/kubectl-statefulapp
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/statefulapp-operator"]
