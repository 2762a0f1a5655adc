# The coordinator image: the coordinator and squeezectl, no CUDA, no libtorch.
#   docker build -f docker/coordinator.Dockerfile -t squeeze/coordinator:0.1.0 .
#   buildah bud -f docker/coordinator.Dockerfile -t squeeze/coordinator:0.1.0 .
# BUILD_BASE may instead be an image that already holds /out (the binaries and their
# runtime-packages.txt, built outside, as CI does in tests/deploy/image_build_test.sh): then the
# build stage compiles nothing.
ARG BUILD_BASE=debian:12
ARG RUNTIME_BASE=debian:12-slim

FROM ${BUILD_BASE} AS build
WORKDIR /src
COPY . .
# The same package list CI installs (scripts/install-deps.sh); the build leaves libtorch out.
RUN if [ -f /out/runtime-packages.txt ]; then echo "build: /out is prebuilt"; exit 0; fi \
 && ./scripts/install-deps.sh \
 && cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSQUEEZE_WITH_TORCH=OFF \
 && cmake --build /build --target squeeze-coordinator squeezectl \
 && mkdir -p /out/bin \
 && cp /build/services/coordinator/squeeze-coordinator /build/services/cli/squeezectl /out/bin/ \
 && scripts/runtime-packages.sh /out/bin/* > /out/runtime-packages.txt

FROM ${RUNTIME_BASE}
# Every package whose shared libraries the binaries link, found by ldd and dpkg in the build stage
# (scripts/runtime-packages.sh), so that the list cannot fall behind the code.
COPY --from=build /out/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
      $(cat /tmp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin squeeze
COPY --from=build /out/bin/ /usr/local/bin/
USER 10001:10001
EXPOSE 7070 9090
ENTRYPOINT ["/usr/local/bin/squeeze-coordinator"]
CMD ["--listen=0.0.0.0:7070", "--state-dir=/var/lib/squeeze", "--metrics-listen=0.0.0.0:9090"]
