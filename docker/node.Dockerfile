# strata-node: a multi-stage build; the runtime image holds the binary, a shell (the
# StatefulSet's start command derives the node id from the pod name with /bin/sh) and
# nothing else of note. Build from the repository root:
#   docker build -f docker/node.Dockerfile -t strata/strata-node:0.1.0 .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p strata-node --bin strata-node --bin strata \
 && cp target/release/strata-node target/release/strata /usr/local/bin/

FROM debian:bookworm-slim
RUN groupadd --gid 10001 strata \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/strata --shell /usr/sbin/nologin strata \
 && mkdir -p /var/lib/strata /etc/strata \
 && chown 10001:10001 /var/lib/strata
COPY --from=build /usr/local/bin/strata-node /usr/local/bin/strata /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/strata
EXPOSE 7379 7380 20170
ENTRYPOINT ["/usr/local/bin/strata-node"]
CMD ["--config", "/etc/strata/node.yaml"]
