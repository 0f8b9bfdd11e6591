#!/usr/bin/env bash
# Install into a temporary prefix, build the C++ example from there with CMake (find_package) and with
# pkg-config, run both with ONNX Runtime found next to the installed libsam3d (no environment
# variables), check they give the engine's mask, then uninstall and check nothing is left. With
# OV_ORT_DIR (ONNX Runtime built with OpenVINO): install that one too and check a C++ program built
# from the prefix runs on OpenVINO with what was installed, then uninstall it likewise.
#   tests/install/test_install.sh ORT_DIR [OV_ORT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
ort_dir=${1:?ORT_DIR}
ov_dir=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
model=models/demo-lesion
input=examples/data/sample_ct_lesion.nii.gz
click=$(sed -n 's/.*"click": "\([0-9,]*\)".*/\1/p' examples/data/sample_ct_lesion.json)
fail() { echo "FAIL: $*" >&2; exit 1; }

tools/install.sh install "$prefix" "$ort_dir"
for f in lib/libsam3d.so lib/libsam3d.so.0 include/sam3d.h include/sam3d.hpp lib/pkgconfig/sam3d.pc \
         lib/cmake/sam3d/sam3dConfig.cmake lib/libonnxruntime.so; do
    [ -e "$prefix/$f" ] || fail "$f not installed"
done
soname=$(readelf -d "$prefix/lib/libsam3d.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = libsam3d.so.0 ] || fail "SONAME is '$soname'"

cmake -S examples/cpp -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release > "$work/cmake.log" \
    || { cat "$work/cmake.log"; fail "cmake configure"; }
cmake --build "$work/cmake" > "$work/build.log" || { cat "$work/build.log"; fail "cmake build"; }
PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --exists sam3d || fail "pkg-config does not find sam3d"
[ "$(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --modversion sam3d)" = "$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ] \
    || fail "pkg-config version"
# shellcheck disable=SC2046
g++ -std=c++17 -O2 -o "$work/segment_pc" examples/cpp/segment.cpp \
    $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs sam3d) -Wl,-rpath,"$prefix/lib"
for exe in "$work/cmake/segment_cpp" "$work/segment_pc"; do
    readelf -d "$exe" | grep -q 'NEEDED.*libsam3d.so.0' || fail "$exe does not need libsam3d.so.0"
    env -u SAM3D_ORT_LIBRARY -u ORT_DYLIB_PATH "$exe" "$model" "$input" "$click" "$work/$(basename "$exe").nii.gz" \
        > "$work/run.log" 2>&1 || { cat "$work/run.log"; fail "$exe failed"; }
    grep -q "ONNX Runtime" "$work/run.log" || fail "$exe printed no runtime"
done
target/release/examples/segment --model "$model" --input "$input" --click "$click" --out "$work/engine.nii.gz" \
    --ort "$ort_dir/libonnxruntime.so" > /dev/null 2>&1
for m in segment_cpp segment_pc; do
    cmp <(gzip -dc "$work/$m.nii.gz") <(gzip -dc "$work/engine.nii.gz") || fail "$m mask differs from the engine's"
done

tools/install.sh uninstall "$prefix"
left=$(find "$prefix" -mindepth 1 2>/dev/null | head -5)
[ -z "$left" ] || fail "uninstall left: $left"
echo "install test: CMake and pkg-config builds from $prefix give the engine's mask; uninstall left nothing"

if [ -n "$ov_dir" ]; then
    tools/install.sh install "$prefix" "$ov_dir"
    for f in lib/libonnxruntime_providers_openvino.so lib/libopenvino.so.2541 lib/libopenvino_intel_cpu_plugin.so; do
        [ -e "$prefix/$f" ] || fail "$f not installed"
    done
    [ -L "$prefix/lib/libopenvino.so.2541" ] || fail "OpenVINO's version link was installed as a copy"
    # shellcheck disable=SC2046
    g++ -std=c++17 -O2 -o "$work/test_openvino" tests/cpp/test_openvino.cpp \
        $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs sam3d) -Wl,-rpath,"$prefix/lib"
    env -u SAM3D_ORT_LIBRARY -u ORT_DYLIB_PATH "$work/test_openvino" tests/fixtures/models/tiny-orient \
        > "$work/ov.log" 2>&1 || { cat "$work/ov.log"; fail "test_openvino from the prefix failed"; }
    grep -q "^OpenVINO: OpenVINO fp32 " "$work/ov.log" || { cat "$work/ov.log"; fail "not on OpenVINO"; }
    tools/install.sh uninstall "$prefix"
    left=$(find "$prefix" -mindepth 1 2>/dev/null | head -5)
    [ -z "$left" ] || fail "uninstall of the OpenVINO build left: $left"
    echo "install test: the OpenVINO build of ONNX Runtime installed beside libsam3d runs OpenVINO; uninstall left nothing"
fi
