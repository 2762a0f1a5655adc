#!/usr/bin/env bash
# Builds both images from docker/*.Dockerfile without a daemon (buildah, chroot isolation, vfs
# storage) on a Debian 12 base made by debootstrap (no image registry is reachable here), starts
# the coordinator image and calls its gRPC health check, then starts the worker image against it
# and waits for its /readyz. The binaries come from this build tree (BUILD_BASE holds them in
# /out, so the Dockerfiles' build stages compile nothing); the runtime stages are the ones
# production builds run. The worker image is built on Debian with Debian's CPU libtorch, since the
# CUDA base images cannot be fetched here.
#   tests/deploy/image_build_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
work="$build/image-test"
mkdir -p "$work"
bah() { buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"; }
pids=()
port=""
cleanup() {
  # `buildah run` (chroot isolation) does not pass a signal on to the program it runs, which would
  # outlive the test: stop the programs themselves (their command lines name this test's port).
  if [ -n "$port" ]; then
    for sig in TERM KILL; do
      pkill "-$sig" -f -- "squeeze-(coordinator --listen|worker --coordinator)[= ]127.0.0.1:$port" || true
      sleep 1
    done
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bah rm --all >/dev/null 2>&1 || true
  # The image layers (vfs copies every layer whole: gigabytes); the root filesystem tarball stays.
  rm -rf "$work/storage" "$work/run"
}
trap cleanup EXIT
export BUILDAH_ISOLATION=chroot

# The Debian mirror this machine's apt uses (deb822 .sources or a one-line sources.list).
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || { echo "image_build_test: no Debian mirror in the apt sources" >&2; exit 1; }

# 1. A Debian 12 root filesystem (kept between runs of the same build tree).
if [ ! -f "$work/debian-12.tar" ]; then
  rm -rf "$work/rootfs"
  echo "debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; exit 1; }
  tar -C "$work/rootfs" -cf "$work/debian-12.tar.partial" . && mv "$work/debian-12.tar.partial" "$work/debian-12.tar"
  rm -rf "$work/rootfs"
fi
ctr=$(bah from scratch)
tar -C "$(bah mount "$ctr")" -xf "$work/debian-12.tar"
bah commit -q "$ctr" localhost/squeeze-test/debian:12 >/dev/null

# 2. Build bases that hold this tree's binaries in /out, as the Dockerfiles' build stages leave them.
prebuilt() {  # NAME LIB_DIRS BINARY...
  local name=$1 skip=$2
  shift 2
  local c m
  c=$(bah from localhost/squeeze-test/debian:12)
  m=$(bah mount "$c")
  mkdir -p "$m/out/bin" "$m/out/lib"
  cp "$@" "$m/out/bin/"
  SKIP_DIRS="$skip" "$src/scripts/runtime-packages.sh" "$@" > "$m/out/runtime-packages.txt"
  bah commit -q "$c" "localhost/squeeze-test/$name-prebuilt" >/dev/null
}
prebuilt coordinator "" "$build/services/coordinator/squeeze-coordinator" "$build/services/cli/squeezectl"
prebuilt worker "" "$build/services/worker/squeeze-worker" "$build/services/cli/squeezectl"

# 3. The images, from the Dockerfiles.
for image in coordinator worker; do
  echo "buildah bud docker/$image.Dockerfile"
  bah bud -q --isolation chroot -f "$src/docker/$image.Dockerfile" \
    --build-arg BUILD_BASE="localhost/squeeze-test/$image-prebuilt" \
    --build-arg RUNTIME_BASE=localhost/squeeze-test/debian:12 \
    -t "localhost/squeeze/$image:test" "$src" > "$work/bud-$image.log" 2>&1 ||
    { tail -30 "$work/bud-$image.log"; exit 1; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
worker_metrics=$(free_port)

# 4. The coordinator image starts and answers its health check (the image's user, 10001).
c=$(bah from localhost/squeeze/coordinator:test)
bah run "$c" -- /usr/local/bin/squeeze-coordinator --listen="127.0.0.1:$port" \
  --state-dir=/tmp/state > "$work/coordinator.log" 2>&1 &
pids+=($!)
healthy=no
for _ in $(seq 1 100); do
  if "$build/services/cli/squeezectl" health --coordinator "127.0.0.1:$port" \
       --service squeeze.v1.JobService --timeout-ms 500 > "$work/health.txt" 2>&1; then
    healthy=yes
    break
  fi
  sleep 0.3
done
[ "$healthy" = yes ] || { echo "FAIL: the coordinator image does not answer its health check"; cat "$work/coordinator.log"; exit 1; }
cat "$work/health.txt"

# 5. The worker image starts, registers with that coordinator and says it is ready.
w=$(bah from localhost/squeeze/worker:test)
bah run "$w" -- /usr/local/bin/squeeze-worker --coordinator "127.0.0.1:$port" --node image-test \
  --device cpu --scratch /tmp/scratch --metrics-listen "127.0.0.1:$worker_metrics" \
  > "$work/worker.log" 2>&1 &
pids+=($!)
ready=no
for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$worker_metrics/readyz" > /dev/null; then ready=yes; break; fi
  sleep 0.3
done
[ "$ready" = yes ] || { echo "FAIL: the worker image never became ready"; cat "$work/worker.log"; exit 1; }
echo "worker image: ready"
grep -q "registered as" "$work/worker.log" || { echo "FAIL: the worker did not log its registration"; exit 1; }
# 6. Nothing the images ran outlives the test.
trap - EXIT
cleanup
if pgrep -f -- "squeeze-(coordinator --listen|worker --coordinator)[= ]127.0.0.1:$port" > /dev/null; then
  echo "FAIL: a program the images ran is still running after the cleanup"
  exit 1
fi
echo "image build test passed"
