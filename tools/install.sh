#!/usr/bin/env bash
# Install libsam3d under a prefix, or remove what an install put there.
#   tools/install.sh install PREFIX [ORT_DIR]   (ORT_DIR: copy ONNX Runtime next to libsam3d, where
#                                               libsam3d's runtime search looks for it)
#   tools/install.sh uninstall PREFIX
# Layout: lib/libsam3d.so.VERSION + libsam3d.so.MAJOR (SONAME) + libsam3d.so, include/sam3d.h and
# sam3d.hpp, lib/pkgconfig/sam3d.pc, lib/cmake/sam3d/ (find_package(sam3d CONFIG) -> sam3d::sam3d).
# Every installed path is listed in share/sam3d/install_manifest.txt; uninstall removes exactly those.
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:?install or uninstall}
prefix=${2:?PREFIX}
case "$prefix" in /*) ;; *) prefix="$PWD/$prefix" ;; esac
manifest="$prefix/share/sam3d/install_manifest.txt"

if [ "$action" = uninstall ]; then
    [ -f "$manifest" ] || { echo "uninstall: no libsam3d install under $prefix ($manifest missing)" >&2; exit 1; }
    while read -r f; do rm -f "$prefix/$f"; done < "$manifest"
    rm -f "$manifest"
    # remove the directories the install created, if now empty
    for d in share/sam3d lib/cmake/sam3d lib/cmake lib/onnxruntime_ep_openvino lib/pkgconfig share include lib; do
        rmdir "$prefix/$d" 2>/dev/null || true
    done
    echo "removed libsam3d from $prefix"
    exit 0
fi
[ "$action" = install ] || { echo "unknown action $action" >&2; exit 2; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
major=${version%%.*}
lib=target/release/libsam3d.so
[ -f "$lib" ] || { echo "install: $lib missing (run make build)" >&2; exit 1; }
files=()
put() {   # put SRC DEST_RELATIVE [MODE]
    install -D -m "${3:-644}" "$1" "$prefix/$2"
    files+=("$2")
}
put "$lib" "lib/libsam3d.so.$version" 755
ln -sf "libsam3d.so.$version" "$prefix/lib/libsam3d.so.$major"; files+=("lib/libsam3d.so.$major")
ln -sf "libsam3d.so.$major" "$prefix/lib/libsam3d.so"; files+=("lib/libsam3d.so")
put include/sam3d.h include/sam3d.h
put include/sam3d.hpp include/sam3d.hpp
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" cmake/sam3d.pc.in > "$tmp/sam3d.pc"
put "$tmp/sam3d.pc" lib/pkgconfig/sam3d.pc
sed -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" cmake/sam3dConfig.cmake.in > "$tmp/sam3dConfig.cmake"
sed -e "s|@VERSION@|$version|g" cmake/sam3dConfigVersion.cmake.in > "$tmp/sam3dConfigVersion.cmake"
put "$tmp/sam3dConfig.cmake" lib/cmake/sam3d/sam3dConfig.cmake
put "$tmp/sam3dConfigVersion.cmake" lib/cmake/sam3d/sam3dConfigVersion.cmake
if [ -n "${3:-}" ]; then
    # ONNX Runtime, and what an OpenVINO provider loads from its own folder: the OpenVINO and TBB
    # libraries beside ONNX Runtime (the openvino flavour), or Intel's plugin with its own copies in
    # onnxruntime_ep_openvino/ (where libsam3d looks for it); version links stay links
    for f in "$3"/libonnxruntime*.so* "$3"/libopenvino*.so* "$3"/libtbb*.so* \
             "$3"/onnxruntime_ep_openvino/*.so*; do
        [ -e "$f" ] || continue
        rel="lib/${f#"$3"/}"
        if [ -L "$f" ]; then
            mkdir -p "$(dirname "$prefix/$rel")"
            ln -sf "$(readlink "$f")" "$prefix/$rel"; files+=("$rel")
        else
            put "$f" "$rel" 755
        fi
    done
fi
mkdir -p "$(dirname "$manifest")"
printf '%s\n' "${files[@]}" > "$manifest"
echo "installed libsam3d $version under $prefix (${#files[@]} files)"
