# Dockerfile — the paynotify image: one image, three binaries
# (paynotify-receiver, the default command; paynotify-worker; paynotify-admin).
# Build: scripts/image (podman), or `docker build -t paynotify .`.
#
# Run, e.g.:
#   podman run --rm -p 8080:8080 -e PAYNOTIFY_CONFIG=/etc/paynotify/prod.json \
#     -e PAYNOTIFY_AMQP_URL=... -e PAYNOTIFY_REDIS_URL=... -e PAYNOTIFY_MYSQL_URL=... paynotify
#   podman run --rm ... paynotify paynotify-worker
#   podman run --rm ... paynotify paynotify-admin migrate
# The image's config/ (in /etc/paynotify) is the development one: production
# mounts its own file and keys and points PAYNOTIFY_CONFIG at it.

# ---- build stage: compilers and -dev packages, never shipped
FROM debian:12 AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      librabbitmq-dev libhiredis-dev libmariadb-dev libcurl4-openssl-dev \
      libjson-c-dev libuv1-dev libssl-dev libhttp-parser-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPAYNOTIFY_WERROR=ON \
 && cmake --build /build -j"$(nproc)" \
      --target paynotify-receiver paynotify-worker paynotify-admin \
 && install -d /out \
 && install -m 0755 -s /build/paynotify-receiver /build/paynotify-worker \
      /build/paynotify-admin /out/

# ---- runtime stage: shared libraries only
FROM debian:12
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      librabbitmq4 libhiredis0.14 libmariadb3 libcurl4 libjson-c5 libuv1 libssl3 \
      libhttp-parser2.9 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --home-dir /var/lib/paynotify \
      --create-home --shell /usr/sbin/nologin paynotify
COPY --from=build /out/ /usr/local/bin/
COPY migrations/ /usr/share/paynotify/migrations/
COPY config/ /etc/paynotify/
ENV PAYNOTIFY_MIGRATIONS_DIR=/usr/share/paynotify/migrations \
    PAYNOTIFY_LISTEN=0.0.0.0:8080
USER paynotify
WORKDIR /var/lib/paynotify
EXPOSE 8080
CMD ["paynotify-receiver"]
