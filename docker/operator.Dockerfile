# strata-operator: a multi-stage build onto a distroless, non-root runtime (no shell).
# Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t strata/strata-operator:0.1.0 .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p strata-operator --bin strata-operator \
 && cp target/release/strata-operator /usr/local/bin/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/strata-operator /usr/local/bin/strata-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/strata-operator"]
