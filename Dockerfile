# callsign: build the release binary, then run it on a slim Debian as an unprivileged user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY verify ./verify
COPY migrations ./migrations
RUN cargo build --release --locked --bin callsign

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/callsign --create-home callsign
COPY --from=build /src/target/release/callsign /usr/local/bin/callsign
USER callsign
WORKDIR /var/lib/callsign
ENV CALLSIGN_DATA_DIR=/var/lib/callsign \
    CALLSIGN_HTTPS_ADDR=0.0.0.0:8443 \
    CALLSIGN_HTTP_ADDR=0.0.0.0:8080
VOLUME /var/lib/callsign
EXPOSE 8443 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["callsign"]
CMD ["serve"]
