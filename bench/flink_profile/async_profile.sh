#!/usr/bin/env bash
# CPU profile (Java, native and kernel frames, per thread) of the risk job's JVM during an e2e bench run.
#
#   bash bench/flink_profile/async_profile.sh [EVENTS]        # default 60000
#   .venv/bin/python bench/flink_profile/collapsed_top.py .cache/profile/job.collapsed decide
#
# async-profiler comes from Maven Central (tools.profiler:async-profiler, the jar carries the native
# library); it is loaded as an agent through JVM_ARGS, which the PyFlink gateway passes to the MiniCluster's
# JVM, and writes collapsed stacks when the JVM exits. Python frames of the embedded interpreter show as
# CPython's C functions (_PyEval_EvalFrameDefault ...): for Python-level detail, run py-spy against the same
# JVM (py-spy record --pid $(pgrep -f PythonGatewayServer) --format raw).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
EVENTS="${1:-60000}"
VERSION=4.2
DIR=.cache/profile
mkdir -p "$DIR"
if [ ! -f "$DIR/linux-x64/libasyncProfiler.so" ]; then
  curl -fsSL -o "$DIR/async-profiler.jar" \
    "https://repo1.maven.org/maven2/tools/profiler/async-profiler/$VERSION/async-profiler-$VERSION.jar"
  (cd "$DIR" && unzip -o -q async-profiler.jar 'linux-x64/*')
fi
OUT="$PWD/$DIR/job.collapsed"
JVM_ARGS="-agentpath:$PWD/$DIR/linux-x64/libasyncProfiler.so=start,event=cpu,interval=2ms,threads,collapsed,file=$OUT" \
  .venv/bin/python bench/e2e_bench.py --max-throughput "$EVENTS" --parallelism 1 --no-save | tail -20
echo "profile: $OUT"
