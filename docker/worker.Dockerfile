# The CUDA worker image: squeeze-worker and squeezectl built against the CUDA libtorch of the
# PyTorch wheel (as on the project's GPU machine), on the CUDA runtime.
#   docker build -f docker/worker.Dockerfile -t squeeze/worker:0.1.0 .
#   buildah bud -f docker/worker.Dockerfile -t squeeze/worker:0.1.0 .
# BUILD_BASE may instead be an image that already holds /out (bin/, lib/ and
# runtime-packages.txt, built outside); then nothing is compiled. CI builds it that way on a
# Debian base with Debian's CPU libtorch (tests/deploy/image_build_test.sh), since the CUDA base
# images are not reachable there.
ARG BUILD_BASE=nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04
ARG RUNTIME_BASE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04
ARG TORCH_VERSION=2.11.0

FROM ${BUILD_BASE} AS build
ARG TORCH_VERSION
WORKDIR /src
COPY . .
RUN if [ -f /out/runtime-packages.txt ]; then echo "build: /out is prebuilt"; exit 0; fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake ninja-build pkg-config git \
      python3 python3-pip libabsl-dev nlohmann-json3-dev libyaml-cpp-dev libyaml-dev \
      libsqlite3-dev libcurl4-openssl-dev libssl-dev libgrpc++-dev protobuf-compiler-grpc \
      libprotobuf-dev protobuf-compiler prometheus-cpp-dev libpq-dev libpcre2-dev \
      libutf8proc-dev libgtest-dev \
 && pip3 install --break-system-packages --no-cache-dir "torch==${TORCH_VERSION}" \
 && rm -rf /var/lib/apt/lists/* \
 && cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSQUEEZE_CUDA=ON \
      -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
 && cmake --build /build --target squeeze-worker squeezectl \
 && mkdir -p /out/bin /out/lib \
 && cp /build/services/worker/squeeze-worker /build/services/cli/squeezectl /out/bin/ \
 && torch_lib="$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib" \
 && cp "$torch_lib"/*.so* /out/lib/ \
 && LD_LIBRARY_PATH="$torch_lib" SKIP_DIRS="$torch_lib:/usr/local/cuda:/usr/local/nvidia" \
      scripts/runtime-packages.sh /out/bin/* > /out/runtime-packages.txt

FROM ${RUNTIME_BASE}
# The packages of every shared library the binaries link, from ldd and dpkg in the build stage
# (scripts/runtime-packages.sh); libtorch's own libraries are copied in below.
COPY --from=build /out/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
      libgomp1 $(cat /tmp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin squeeze
COPY --from=build /out/lib/ /opt/squeeze/lib/
COPY --from=build /out/bin/ /usr/local/bin/
ENV LD_LIBRARY_PATH=/opt/squeeze/lib
USER 10001:10001
EXPOSE 29500 9091
ENTRYPOINT ["/usr/local/bin/squeeze-worker"]
