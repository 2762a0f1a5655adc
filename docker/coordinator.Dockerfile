# The coordinator image: the coordinator and squeezectl, no CUDA, no libtorch.
#   docker build -f docker/coordinator.Dockerfile -t squeeze/coordinator:0.1.0 .
FROM debian:12 AS build
WORKDIR /src
COPY . .
# The same package list CI installs (scripts/install-deps.sh); the build leaves libtorch out.
RUN ./scripts/install-deps.sh \
 && cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSQUEEZE_WITH_TORCH=OFF \
 && cmake --build /build --target squeeze-coordinator squeezectl

FROM debian:12-slim
# Every shared library the coordinator links (ldd against the Debian 12 build), by package.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libgrpc++1.51 libprotobuf32 \
      libyaml-cpp0.7 libyaml-0-2 libsqlite3-0 libpq5 libcurl4 libssl3 libabsl20220623 \
      libprometheus-cpp-core1.0 libpcre2-8-0 libutf8proc2 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin squeeze
COPY --from=build /build/services/coordinator/squeeze-coordinator /build/services/cli/squeezectl \
     /usr/local/bin/
USER 10001:10001
EXPOSE 7070 9090
ENTRYPOINT ["/usr/local/bin/squeeze-coordinator"]
CMD ["--listen=0.0.0.0:7070", "--state-dir=/var/lib/squeeze", "--metrics-listen=0.0.0.0:9090"]
