# tierlog: build in the full Rust image, run in a small Debian image as a non-root user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && for b in ingest query verify; do echo 'fn main() {}' > benches/$b.rs; done \
    && cargo build --release --locked --bin tierlog && rm -rf src benches
COPY config config
COPY migrations migrations
COPY src src
COPY benches benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin tierlog

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/tierlog --shell /usr/sbin/nologin tierlog \
    && mkdir -p /var/lib/tierlog /var/log/tierlog && chown tierlog:tierlog /var/lib/tierlog /var/log/tierlog
COPY --from=build /src/target/release/tierlog /usr/local/bin/tierlog
USER tierlog
WORKDIR /var/lib/tierlog
ENV TIERLOG_LISTEN=0.0.0.0:8080 \
    LOGGING_FILE=/var/log/tierlog/audit.jsonl \
    TIERLOG__INTEGRITY__SIGNING_KEY_FILE=/var/lib/tierlog/signing.key \
    TIERLOG__RETENTION__ARCHIVE_PATH=/var/lib/tierlog/archive
EXPOSE 8080
VOLUME ["/var/lib/tierlog", "/var/log/tierlog"]
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["tierlog", "probe", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["tierlog"]
CMD ["serve"]
