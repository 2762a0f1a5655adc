#!/usr/bin/env bash
# Installs every Debian package Squeeze needs to build, test and run. Idempotent: packages already
# present are left alone, so a second run costs one dpkg query.
set -euo pipefail

pkgs=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config clang-format git python3 python3-yaml
  # independent readers of the formats we write (bitsandbytes 4-bit)
  python3-numpy
  # libtorch (CPU) and an optimized BLAS behind Debian's libblas.so.3
  libtorch-dev libgloo-dev libopenblas0-pthread
  # common C++ libraries
  libabsl-dev nlohmann-json3-dev libyaml-cpp-dev libyaml-dev libsqlite3-dev
  libcurl4-openssl-dev libssl-dev
  # Hugging Face tokenizer.json: PCRE2 for the pre-tokenizers' regexes, utf8proc for NFC
  libpcre2-dev libutf8proc-dev
  # RPC and metrics
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler prometheus-cpp-dev
  # the replicated state store (libpq) and the PostgreSQL server its tests start
  libpq-dev postgresql
  # tests and benchmarks (clang and its runtime for the libFuzzer targets and sanitizers)
  clang libclang-rt-14-dev libgtest-dev libgmock-dev libbenchmark-dev prometheus curl openssl yamllint
  # reference SentencePiece tools, to check our own tokenizer against
  sentencepiece
  # the example corpus: the fortune cookie files, one category per file
  fortunes fortunes-min
  # the Python client (clients/python): gRPC and protobuf runtimes for its tests
  python3-grpcio python3-protobuf
  # deployment checks: the chart rendered with Go's text/template and sprig (Helm's engine; Helm
  # itself is not packaged), and the images built without a daemon from a debootstrap base
  # (pkill stops what the images ran)
  golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v3-dev buildah debootstrap procps
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# node and npm run test peers (s3rver); a node that brings its own npm needs no Debian npm.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#pkgs[@]} packages present"
fi
