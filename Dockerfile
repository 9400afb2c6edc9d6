# berthd as a small container image, in two stages:
#   build:   compile berthd in a Rust toolchain image;
#   runtime: an empty image (`scratch`) holding only berthd, the shared libraries it
#            links (glibc), CA certificates for S3 over HTTPS, and a non-root user.
#
#   docker build -t berthd .
#   docker run -p 5000:5000 -v berth-data:/data berthd
#
# BUILD_IMAGE can name any image with cargo and a C compiler (aws-lc and SQLite are
# compiled from C); PROFILE=dev builds faster, unoptimized.
ARG BUILD_IMAGE=docker.io/library/rust:1.95-slim-bookworm

FROM ${BUILD_IMAGE} AS build
# Lets `docker image prune --filter label=berth.stage=build` remove the build stage.
LABEL berth.stage=build
ARG PROFILE=release
WORKDIR /src
COPY . .
RUN cargo build --locked --profile "$PROFILE" --bin berthd \
 && out=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE") \
 && mkdir -p /rootfs/data /rootfs/etc/ssl/certs \
 && cp "target/$out/berthd" /rootfs/berthd \
 && ldd /rootfs/berthd | grep -o '/[^ ]*' | xargs -I{} cp --parents -L {} /rootfs/ \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
 && echo 'berth:x:10001:10001:berth:/data:/berthd' > /rootfs/etc/passwd \
 && echo 'berth:x:10001:' > /rootfs/etc/group \
 && chown 10001:10001 /rootfs/data \
 && rm -rf target   # gigabytes the layer need not keep

FROM scratch
COPY --from=build /rootfs/ /
# Which source it was built from (a rolling upgrade can tell replicas apart).
ARG REVISION=unknown
LABEL org.opencontainers.image.revision=$REVISION
USER 10001:10001
ENV BERTH_LISTEN=0.0.0.0:5000 \
    BERTH_DATA_DIR=/data
VOLUME /data
EXPOSE 5000
# No shell or curl in the image: berthd probes itself.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD ["/berthd", "probe", "http://127.0.0.1:5000/readyz"]
ENTRYPOINT ["/berthd"]
CMD ["serve"]
