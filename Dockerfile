# larder's image: one static binary and a CA bundle. Nothing else: no shell.
#
# The binaries are built outside Docker, one per architecture, into the build
# context (scripts/static-build.sh writes target/image/), so this file pulls
# no base image and runs no command, and makes every platform of a
# multi-arch image:
#
#   scripts/image.sh [TAG]                                   # this machine, default larder:dev
#   scripts/static-build.sh amd64 arm64 && \
#     docker buildx build --platform linux/amd64,linux/arm64 -f Dockerfile target/image
FROM scratch

# Set by BuildKit from --platform; give it with --build-arg to the classic builder.
ARG TARGETARCH
ARG VERSION=dev
ARG REVISION=unknown
ARG LICENSES=NOASSERTION

LABEL org.opencontainers.image.title="larder" \
      org.opencontainers.image.description="Build cache plugin for Drone and Woodpecker CI: restores directories before a build and stores them after it, on S3, Azure, GCS, SFTP or a volume" \
      org.opencontainers.image.source="https://github.com/larder-ci/larder" \
      org.opencontainers.image.url="https://github.com/larder-ci/larder" \
      org.opencontainers.image.documentation="https://github.com/larder-ci/larder#readme" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# Public CAs for https storage; the ca_cert setting adds private ones.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# An empty, world-writable /tmp (the SFTP host key check writes a file there),
# from a tar because COPY does not keep the sticky, world-writable mode.
ADD tmp.tar /
COPY linux/${TARGETARCH}/larder /larder

ENTRYPOINT ["/larder"]
