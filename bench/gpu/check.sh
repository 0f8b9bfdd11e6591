#!/usr/bin/env bash
# The GPU measurements, prepared to run on a lent GPU machine (README.md here: what the machine has, and
# the recipe). No package registry there: it uses the machine's own python3 with PyTorch and CUDA 13
# libraries. Everything it writes ends in one results-<time>.tgz under $OUT (the device tool's result
# folder; it brings back only a few files per call) or build/gpu:
#   nvidia-smi.csv         the card
#   torch_bench.json       paper-size PyTorch model: official way (whole network per click), encoder once +
#                          follow-up clicks, fp16/bf16 autocast against fp32, peak device memory
#   engine-<cfg>-<dev>.json  the Rust engine (examples/bench) on ONNX Runtime's CUDA provider, with the
#                          peak device memory nvidia-smi saw during the run (engine-*.mem.csv)
#   profile-<pkg>.json     the engine's CUDA kernel times by kind (kernel_profile.py, PyTorch's profiler)
# The engine part needs the parts that `carry.py pack` wrote (onnxruntime-gpu's libraries, the bench
# example, libsam3d.so, the paper-size package without its weights, optionally variant packages):
# GPU_PARTS names the folder holding part-*.xz there. Without it only the PyTorch part runs;
# GPU_SKIP_TORCH=1 skips the PyTorch part, GPU_SKIP_STANDARD=1 the standard engine runs (then only the
# comparison of the variant packages runs).
set -uo pipefail
cd "$(dirname "$0")/../.."
# The device tool brings back only a few files per call (the rest are listed as left out), so every
# result goes to a scratch folder, packed into $OUT/results-<time>.tgz when the script ends.
final="${OUT:-build/gpu}"
out=$(mktemp -d /tmp/sam3d-results.XXXX)
mkdir -p "$final"
trap 'tar czf "$final/results-$(date +%H%M%S).tgz" -C "$out" . && echo "results: $final"' EXIT
trap 'exit 143' TERM INT          # (so that a timeout still packs what was measured)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.csv" 2>&1 || true
cat "$out/nvidia-smi.csv"
export PYTHONUNBUFFERED=1

echo "== PyTorch reference on the GPU"
[ -n "${GPU_SKIP_TORCH:-}" ] || (timeout "${GPU_TORCH_TIMEOUT:-240}" python3 bench/gpu/torch_bench.py --config paper \
    --device cuda --repeat 5 --out "$out/torch_bench.json" | tail -45) || echo "PyTorch part failed: $?"

[ -n "${GPU_PARTS:-}" ] || exit 0
echo "== engine on ONNX Runtime CUDA"
g=/tmp/sam3d-gpu
[ -x $g/bench ] || timeout 120 python3 bench/gpu/carry.py unpack "$GPU_PARTS" $g || { echo "unpack failed"; exit 1; }
[ -f $g/ct.nii ] || python3 bench/gpu/carry.py ct $g/ct.nii
# the CUDA 13 libraries PyTorch's wheels brought (cuBLAS, cuDNN, cuRAND, cuFFT, runtime)
libs=$(python3 - <<'PY'
import pathlib, nvidia
dirs = set()
for root in nvidia.__path__:
    dirs |= {str(p.parent) for p in pathlib.Path(root).rglob("lib*.so*")}
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="$libs:${LD_LIBRARY_PATH:-}"
ortlib=$(ls $g/ort/libonnxruntime.so.*)
engine() {   # engine CONFIG PACKAGE DEVICE REPEAT [extra args]
    local name="engine-$1-$3" pkg=$2 dev=$3 rep=$4; shift 4
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$out/$name.mem.csv" 2>/dev/null &
    local smi=$!
    timeout "${GPU_ENGINE_TIMEOUT:-150}" $g/bench --model "$pkg" --input $g/ct.nii --click 256,256,150 \
        --repeat "$rep" --threads "$(nproc)" --device "$dev" --ort "$ortlib" "$@" > "$out/$name.json" 2> "$out/$name.err"
    echo "$name: rc=$? $(tail -c 600 "$out/$name.json") $(tail -c 400 "$out/$name.err")"
    kill $smi 2>/dev/null; wait $smi 2>/dev/null
    echo "$name: device memory used (MB) max $(sort -n "$out/$name.mem.csv" | tail -1), before $(head -1 "$out/$name.mem.csv")"
}
# GPU_SKIP_STANDARD=1: only the variant comparison below
if [ -z "${GPU_SKIP_STANDARD:-}" ]; then
# one pass per click (the figures before the demo package asked for 8 test-time flips), then its 8
engine demo models/demo-lesion cuda 10 --flips 1
engine demo-flips8 models/demo-lesion cuda 10
engine paper $g/paper cuda 6
engine paper-tf32 $g/paper cuda 6 --cuda-tf32
engine paper-cap4g $g/paper cuda 3 --gpu-mem-limit-mb 4096
engine paper $g/paper cpu 1
# fp16 packages, converted here from the fp32 ones (python -m sam3d_onnx quantize --precision fp16)
(cd onnx && timeout 240 python3 -m sam3d_onnx quantize $g/paper $g/paper-fp16 --precision fp16 \
    && timeout 60 python3 -m sam3d_onnx quantize ../models/demo-lesion $g/demo-fp16 --precision fp16) | tail -2
engine paper-fp16 $g/paper-fp16 cuda 6
# a warm-up after open (Model::warm_up): the first click's encode_first_s against the runs above
engine paper-fp16-warm $g/paper-fp16 cuda 3 --warm-up
engine demo-warm models/demo-lesion cuda 3 --flips 1 --warm-up
engine paper-fp16-cap4g $g/paper-fp16 cuda 3 --gpu-mem-limit-mb 4096
engine demo-fp16 $g/demo-fp16 cuda 10 --flips 1
# masks on the GPU against the CPU's: the demo model on the sample CT, fp32 and TF32 (segment --truth
# prints the Dice of its mask against the given one)
seg() {   # seg NAME PACKAGE DEVICE [extra args]
    local name=$1 pkg=$2 dev=$3; shift 3
    timeout 60 $g/segment --model "$pkg" --input examples/data/sample_ct_lesion.nii.gz \
        --click "$(sed -n 's/.*"click": "\([0-9,]*\)".*/\1/p' examples/data/sample_ct_lesion.json)" --coord ijk \
        --out "$g/mask-$name.nii" --device "$dev" --ort "$ortlib" "$@" 2>&1 | tail -4
}
seg cpu models/demo-lesion cpu
seg cuda models/demo-lesion cuda --truth $g/mask-cpu.nii
seg cuda-tf32 models/demo-lesion cuda --cuda-tf32 --truth $g/mask-cpu.nii
seg cuda-fp16 $g/demo-fp16 cuda --truth $g/mask-cpu.nii
# where the card's time goes: CUDA kernels by kind, under PyTorch's profiler (kernel_profile.py)
if [ -f $g/libsam3d.so ]; then
    for p in "paper $g/paper --tf32" "paper-fp16 $g/paper-fp16"; do
        set -- $p
        echo "== kernel profile: $1 ${3:-}"
        timeout 120 python3 bench/gpu/kernel_profile.py --lib $g/libsam3d.so --ort "$ortlib" --model $2 --ct $g/ct.nii \
            ${3:-} --out "$out/profile-$1.json" 2>&1 | grep -v -E "^(USDT|ERROR|WARNING):" | tail -70
    done
fi
fi

# the engine on any variant packages packed after the first (fp16; GPU_AB_FP32=1: fp32 too)
if ls -d $g/paper-* 2>/dev/null | grep -v -q -- -fp16$; then
    for v in $g/paper $g/paper-*; do
        n=$(basename "$v")
        case $n in *-fp16) continue;; esac
        [ -z "${GPU_AB_FP32:-}" ] || engine "$n-ab" "$v" cuda 6
        [ -d "$v-fp16" ] || (cd onnx && timeout 240 python3 -m sam3d_onnx quantize "$v" "$v-fp16" --precision fp16) | tail -1
        engine "$n-ab-fp16" "$v-fp16" cuda 6
    done
fi
