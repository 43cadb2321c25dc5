# voxproxy container image: build with the same command CI uses, run as a
# non-root user on a slim Debian.
#
#   docker build --build-arg VOXPROXY_REVISION=$(git rev-parse --short=12 HEAD) -t voxproxy .
#   docker run --rm --name voxproxy \
#     -p 8080:8080 -p 127.0.0.1:9090:9090 -p 40000-40999:40000-40999/udp \
#     -e VOXPROXY_SERVER_PUBLIC_URL=https://voice.example.com \
#     -e VOXPROXY_RTP_BIND=0.0.0.0 -e VOXPROXY_RTP_PORTS=40000-40999 \
#     -e VOXPROXY_LIMITS_MAX_CALLS=1000 -e VOXPROXY_RTP_BACKEND=10.0.0.7:4000 \
#     -e TWILIO_AUTH_TOKEN -e VOXPROXY_ADMIN_TOKEN \
#     -v voxproxy-cdr:/var/lib/voxproxy voxproxy
#
# A configuration file instead of (or beside) the variables:
#   -v /etc/voxproxy/voxproxy.toml:/etc/voxproxy/voxproxy.toml:ro \
#   voxproxy serve --config /etc/voxproxy/voxproxy.toml
# (in the file, listen on 0.0.0.0 and keep cdr.path under /var/lib/voxproxy).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# No .git in the build context: the revision comes in as a build argument
# (proxy/build.rs reads VOXPROXY_REVISION, else says "unknown").
ARG VOXPROXY_REVISION=unknown
ENV VOXPROXY_REVISION=${VOXPROXY_REVISION} CARGO_INCREMENTAL=0
COPY . .
RUN cargo build --release --locked -p voxproxy \
 && install -m 0755 target/release/voxproxy /usr/local/bin/voxproxy \
 && voxproxy man > /usr/local/share/voxproxy.1

FROM debian:bookworm-slim
# curl for the health check; ca-certificates for Twilio's REST API over TLS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/voxproxy --create-home --shell /usr/sbin/nologin voxproxy
COPY --from=build /usr/local/bin/voxproxy /usr/bin/voxproxy
COPY --from=build /usr/local/share/voxproxy.1 /usr/share/man/man1/voxproxy.1
COPY examples/voxproxy.toml /usr/share/doc/voxproxy/voxproxy.toml
USER voxproxy
WORKDIR /var/lib/voxproxy
ENV VOXPROXY_SERVER_LISTEN=0.0.0.0:8080 \
    VOXPROXY_SERVER_ADMIN_LISTEN=0.0.0.0:9090 \
    VOXPROXY_CDR_PATH=/var/lib/voxproxy/cdr.jsonl \
    VOXPROXY_LOG_FORMAT=json
VOLUME /var/lib/voxproxy
EXPOSE 8080 9090
# SIGTERM drains (drain.timeout); docker stop must wait longer than that:
# docker stop --time 60.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/bin/voxproxy"]
CMD ["serve"]
