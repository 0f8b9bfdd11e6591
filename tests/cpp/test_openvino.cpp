// The C++ wrapper's OpenVINO settings reach the library: with SAM3D_DEVICE_OPEN_VINO the model runs
// on OpenVINO ("OpenVINO fp32", or "OpenVINO bf16" where bf16 was asked for and the CPU has it) or,
// where this ONNX Runtime offers no OpenVINO for this CPU, on the CPU provider with the reason and
// the CPU's masks. Either ONNX Runtime passes: the branch is read from the provider note, and the
// provider must then be exactly the one that branch gives. Built with -Wall -Wextra -Werror and run
// once more under AddressSanitizer + UndefinedBehaviorSanitizer (see Makefile).
//   test_openvino MODEL_DIR        (SAM3D_ORT_LIBRARY points at ONNX Runtime)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

#include "sam3d.hpp"

#include "blob_volume.hpp"

namespace fs = std::filesystem;

namespace {

int passed = 0, failed = 0;

void check(const std::string& what, bool cond) {
    if (cond) {
        passed++;
    } else {
        failed++;
        std::fprintf(stderr, "FAIL %s\n", what.c_str());
    }
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

// what the library checks before it computes in bf16: the kernel's CPU flags (the first "flags"
// line of /proc/cpuinfo), AMX-BF16 or AVX512-BF16
bool cpu_has_bf16() {
    std::ifstream info("/proc/cpuinfo");
    std::string line;
    while (std::getline(info, line)) {
        if (!starts_with(line, "flags")) continue;
        std::istringstream words(line);
        std::string w;
        while (words >> w)
            if (w == "amx_bf16" || w == "avx512_bf16") return true;
        return false;
    }
    return false;
}

// two clicks in the blob, one level (the package's spacing), so both graphs run on the provider
std::vector<uint8_t> mask_with(const sam3d::Model& model, const sam3d::Volume& vol, size_t n) {
    sam3d::Session s(model, vol);
    s.set_zoom_out(1);
    uint32_t obj = s.add_object();
    s.click(obj, {24, 18, 15});
    s.click(obj, {26, 19, 15});
    std::vector<uint8_t> out(n);
    s.get_mask(obj, out);
    return out;
}

double dice(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
    size_t inter = 0, na = 0, nb = 0;
    for (size_t i = 0; i < a.size(); i++) {
        na += a[i] != 0;
        nb += b[i] != 0;
        inter += a[i] != 0 && b[i] != 0;
    }
    return na + nb == 0 ? 1.0 : 2.0 * static_cast<double>(inter) / static_cast<double>(na + nb);
}

void run(const std::string& model_dir) {
    sam3d::Runtime rt;
    std::vector<float> buf;
    auto vol = sam3d::Volume::borrow(blob(buf, 48, 40, 30));
    const size_t n = buf.size();
    const fs::path work = fs::temp_directory_path() / ("sam3d-cpp-openvino-" + std::to_string(getpid()));
    fs::remove_all(work);
    fs::create_directories(work);

    sam3d::Model cpu(rt, model_dir, SAM3D_DEVICE_CPU, 1);
    const auto want = mask_with(cpu, vol, n);
    check("CPU: a mask to compare with", std::count(want.begin(), want.end(), 1) > 0);

    // the OpenVINO settings mean nothing to the CPU device: no note, no cache folder
    const fs::path unused = work / "cpu-cache";
    sam3d::Model cpu_bf16(rt, model_dir, SAM3D_DEVICE_CPU, 1, {}, {true, unused.string()});
    Sam3dModelInfo ci = cpu_bf16.info();
    check("CPU with bf16: the CPU provider, no note",
          std::string(ci.provider) == "CPU" && std::string(ci.provider_note).empty());
    check("CPU with a cache folder: not created", !fs::exists(unused));

    const bool has_bf16 = cpu_has_bf16();
    for (bool bf16 : {false, true}) {
        const std::string tag = bf16 ? "OpenVINO, bf16 asked for: " : "OpenVINO: ";
        const fs::path cache = work / (bf16 ? "bf16" : "fp32");
        sam3d::Model m(rt, model_dir, SAM3D_DEVICE_OPEN_VINO, 1, {}, {bf16, cache.string()});
        Sam3dModelInfo i = m.info();
        const std::string provider = i.provider, note = i.provider_note;
        std::printf("%s%s (%s)\n", tag.c_str(), provider.c_str(), note.c_str());
        const bool fell_back = starts_with(note, "OpenVINO unavailable");
        check(tag + "the provider says OpenVINO exactly when the note does not say it is unavailable",
              starts_with(provider, "OpenVINO") != fell_back);
        check(tag + "the cache folder is created", fs::is_directory(cache));
        const auto got = mask_with(m, vol, n);
        if (fell_back) {
            check(tag + "fallback: the CPU provider, with the reason",
                  provider == "CPU" && note.size() > std::string("OpenVINO unavailable").size());
            check(tag + "fallback: the CPU provider's mask", got == want);
            continue;
        }
        const bool runs_bf16 = bf16 && has_bf16;
        check(tag + "the precision asked for where the CPU has it",
              provider == (runs_bf16 ? "OpenVINO bf16" : "OpenVINO fp32"));
        check(tag + "a bf16 note exactly when bf16 was asked for on a CPU without it",
              (note.find("AVX512-BF16") != std::string::npos) == (bf16 && !has_bf16));
        // the fixture's encoder has ONNX Runtime's own attention nodes, which OpenVINO does not take
        check(tag + "the note points to the standard-operator variant",
              note.find("standard-operator variant") != std::string::npos);
        // the folder reached OpenVINO, not only the library: it holds the compiled graphs
        check(tag + "the compiled models are in the cache folder",
              fs::is_directory(cache) && !fs::is_empty(cache));
        const double d = dice(got, want);
        std::printf("%sDice %.5f against the CPU provider\n", tag.c_str(), d);
        check(tag + "the CPU provider's mask, within the precision's error", d >= (runs_bf16 ? 0.99 : 0.999));
    }

    // a cache folder that cannot be made is an error, not a silent open without the cache
    std::ofstream(work / "file") << "x";
    Sam3dStatus st = SAM3D_STATUS_OK;
    std::string message;
    try {
        sam3d::Model bad(rt, model_dir, SAM3D_DEVICE_OPEN_VINO, 1, {}, {false, (work / "file" / "sub").string()});
    } catch (const sam3d::Error& e) {
        st = e.status();
        message = e.what();
    }
    check("a cache folder under a file: SAM3D_STATUS_IO naming it",
          st == SAM3D_STATUS_IO && message.find("OpenVINO cache folder") != std::string::npos);

    std::error_code ec;
    fs::remove_all(work, ec);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    try {
        run(argv[1]);
    } catch (const std::exception& e) {
        failed++;
        std::fprintf(stderr, "FAIL unexpected exception: %s\n", e.what());
    } catch (...) {
        failed++;
        std::fprintf(stderr, "FAIL unexpected exception\n");
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
