# The CUDA worker image: squeeze-worker and squeezectl built against the CUDA libtorch of the
# PyTorch wheel (as on the project's GPU machine), on the CUDA runtime.
#   docker build -f docker/worker.Dockerfile -t squeeze/worker:0.1.0 .
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04
ARG TORCH_VERSION=2.11.0

FROM ${CUDA_IMAGE} AS build
ARG TORCH_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake ninja-build pkg-config git \
      python3 python3-pip libabsl-dev nlohmann-json3-dev libyaml-cpp-dev libsqlite3-dev \
      libcurl4-openssl-dev libssl-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev \
      protobuf-compiler prometheus-cpp-dev libgtest-dev \
 && pip3 install --break-system-packages --no-cache-dir "torch==${TORCH_VERSION}" \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSQUEEZE_CUDA=ON \
      -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
 && cmake --build /build --target squeeze-worker squeezectl \
 && mkdir -p /out/lib \
 && cp "$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')"/lib/*.so* /out/lib/

FROM ${CUDA_RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libgomp1 libyaml-cpp0.8 \
      libsqlite3-0 libcurl4t64 libgrpc++1.51t64 libprotobuf32t64 libabsl20220623t64 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin squeeze
COPY --from=build /out/lib/ /opt/squeeze/lib/
COPY --from=build /build/services/worker/squeeze-worker /build/services/cli/squeezectl \
     /usr/local/bin/
ENV LD_LIBRARY_PATH=/opt/squeeze/lib
USER 10001:10001
EXPOSE 29500 9091
ENTRYPOINT ["/usr/local/bin/squeeze-worker"]
