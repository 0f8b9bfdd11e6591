// libsam3d C++17 wrapper: RAII, move-only handles, exceptions carrying the status and message.
// Header-only over the stable C ABI in sam3d.h. SPDX-License-Identifier: Apache-2.0
#ifndef SAM3D_HPP
#define SAM3D_HPP

#include <array>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "sam3d.h"

namespace sam3d {

/// Thrown by every wrapper call whose C function fails.
class Error : public std::runtime_error {
public:
    Error(Sam3dStatus status, const std::string& message)
        : std::runtime_error(std::string(sam3d_status_name(status)) + ": " + message), status_(status) {}
    Sam3dStatus status() const noexcept { return status_; }

private:
    Sam3dStatus status_;
};

namespace detail {
inline void check(Sam3dStatus s) {
    if (s != SAM3D_STATUS_OK) throw Error(s, sam3d_last_error());
}
template <typename T, void (*Free)(T*)>
struct Deleter {
    void operator()(T* p) const noexcept { Free(p); }
};
template <typename T, void (*Free)(T*)>
using Handle = std::unique_ptr<T, Deleter<T, Free>>;
}  // namespace detail

/// ONNX Runtime, loaded once per process. `library_path` empty: the library's search order.
class Runtime {
public:
    explicit Runtime(const std::string& library_path = "") {
        Sam3dRuntime* p = nullptr;
        detail::check(sam3d_runtime_new(SAM3D_ABI_VERSION, library_path.empty() ? nullptr : library_path.c_str(), &p));
        h_.reset(p);
    }
    std::string version() const { return sam3d_runtime_version(h_.get()); }
    std::string path() const { return sam3d_runtime_path(h_.get()); }
    const Sam3dRuntime* get() const noexcept { return h_.get(); }

private:
    detail::Handle<Sam3dRuntime, sam3d_runtime_free> h_;
};

/// A model package. Thread-safe: share one between sessions and threads.
/// GPU provider settings (see Sam3dGpuOptions); ignored on the CPU.
struct GpuOptions {
    int device_id = 0;
    uint64_t memory_limit_bytes = 0;   // 0: no cap
    bool trt_fp16 = false;
    std::string trt_cache_dir;         // empty: no TensorRT engine cache
    bool cuda_tf32 = false;            // TF32 tensor cores on CUDA (faster, ~1e-3 relative error)
};

/// OpenVINO provider settings (see Sam3dModelOptions); ignored on other devices. Where OpenVINO
/// cannot be had the model runs on the CPU provider: info().provider says what runs ("OpenVINO
/// fp32", "OpenVINO bf16" or "CPU"), info().provider_note why it differs from what was asked.
struct OpenVinoOptions {
    bool bf16 = false;                 // bf16 where the CPU has AMX-BF16 or AVX512-BF16 (~1e-2 on
                                       // probabilities); elsewhere fp32, with a note
    std::string cache_dir;             // compiled-model cache, created when missing; empty: none
};

class Model {
public:
    /// `openvino` is last so that existing calls keep compiling: for OpenVINO, e.g.
    /// Model(rt, dir, SAM3D_DEVICE_OPEN_VINO, 0, {}, {true, "/var/cache/sam3d"}).
    Model(const Runtime& rt, const std::string& package_dir, Sam3dDevice device = SAM3D_DEVICE_CPU,
          unsigned threads = 0, const GpuOptions& gpu = GpuOptions{},
          const OpenVinoOptions& openvino = OpenVinoOptions{}) {
        Sam3dModelOptions o{};
        o.struct_size = static_cast<uint32_t>(sizeof o);
        o.device = static_cast<int32_t>(device);
        o.threads = threads;
        o.bf16 = openvino.bf16 ? 1 : 0;
        o.cache_dir = openvino.cache_dir.empty() ? nullptr : openvino.cache_dir.c_str();
        Sam3dGpuOptions g{};
        g.struct_size = static_cast<uint32_t>(sizeof g);
        g.device_id = gpu.device_id;
        g.memory_limit_bytes = gpu.memory_limit_bytes;
        g.trt_fp16 = gpu.trt_fp16 ? 1 : 0;
        g.trt_cache_dir = gpu.trt_cache_dir.empty() ? nullptr : gpu.trt_cache_dir.c_str();
        g.cuda_tf32 = gpu.cuda_tf32 ? 1 : 0;
        Sam3dModel* p = nullptr;
        detail::check(sam3d_model_open_ex(rt.get(), package_dir.c_str(), &o, &g, &p));
        h_.reset(p);
    }
    Sam3dModelInfo info() const {
        Sam3dModelInfo i{};
        detail::check(sam3d_model_info(h_.get(), &i));
        return i;
    }
    /// One click's work on a synthetic volume (sam3d_model_warm_up): run it on a worker thread
    /// after opening; a click on any session stops it (throws sam3d::Error, SAM3D_STATUS_CANCELLED).
    void warm_up() const { detail::check(sam3d_model_warm_up(h_.get())); }
    /// Stop a running warm_up() from any thread; nothing happens if none runs.
    void cancel_warm_up() const { detail::check(sam3d_model_cancel_warm_up(h_.get())); }
    /// The prompts the package accepts: SAM3D_PROMPT_* bits (negative clicks only where trained).
    uint32_t prompts() const {
        uint32_t bits = 0;
        detail::check(sam3d_model_prompts(h_.get(), &bits));
        return bits;
    }
    const Sam3dModel* get() const noexcept { return h_.get(); }

private:
    detail::Handle<Sam3dModel, sam3d_model_free> h_;
};

/// A volume read from NIfTI, or a caller's buffer borrowed without a copy (keep it alive).
class Volume {
public:
    static Volume read_nifti(const std::string& path) {
        Sam3dVolume* p = nullptr;
        detail::check(sam3d_volume_read_nifti(path.c_str(), &p));
        return Volume(p);
    }
    static Volume borrow(const Sam3dBufferDesc& desc) {
        Sam3dVolume* p = nullptr;
        detail::check(sam3d_volume_from_buffer(&desc, &p));
        return Volume(p);
    }
    Sam3dGeometry geometry() const {
        Sam3dGeometry g{};
        detail::check(sam3d_volume_geometry(h_.get(), &g));
        return g;
    }
    const Sam3dVolume* get() const noexcept { return h_.get(); }

private:
    explicit Volume(Sam3dVolume* p) : h_(p) {}
    detail::Handle<Sam3dVolume, sam3d_volume_free> h_;
};

/// A mask with the volume's geometry.
class Mask {
public:
    explicit Mask(Sam3dMask* p) : h_(p) {}
    std::pair<const uint8_t*, size_t> data() const {
        const uint8_t* d = nullptr;
        size_t n = 0;
        detail::check(sam3d_mask_data(h_.get(), &d, &n));
        return {d, n};
    }
    void write_nifti(const std::string& path) const { detail::check(sam3d_mask_write_nifti(h_.get(), path.c_str())); }

private:
    detail::Handle<Sam3dMask, sam3d_mask_free> h_;
};

/// A progress callback: the stage, and false at its start, true at its end. It may throw: see
/// Session::set_progress.
using ProgressFn = std::function<void(Sam3dStage stage, bool done)>;

namespace detail {
/// A session's C++ progress callback and the exception it threw, on the heap so that the C
/// library's user pointer stays valid when the Session moves.
struct Progress {
    const Sam3dSession* session = nullptr;
    ProgressFn fn;
    std::exception_ptr error;

    /// The C callback: no exception may cross the C library (it would abort the process), so one
    /// is kept, the interaction cancelled, and `fn` not called again before the interrupted call
    /// returns.
    static void trampoline(int32_t stage, int32_t done, void* user) noexcept {
        auto* p = static_cast<Progress*>(user);
        if (p->error || !p->fn) return;
        try {
            p->fn(static_cast<Sam3dStage>(stage), done != 0);
        } catch (...) {
            p->error = std::current_exception();
            sam3d_session_cancel(p->session);
        }
    }
};
}  // namespace detail

/// Segmentation of one volume: objects, clicks, undo/redo. Use from one thread at a time;
/// cancel() may be called from any thread.
class Session {
public:
    Session(const Model& model, const Volume& volume) {
        Sam3dSession* p = nullptr;
        detail::check(sam3d_session_new(model.get(), volume.get(), SAM3D_ABI_VERSION, &p));
        h_.reset(p);
    }
    uint32_t add_object() {
        uint32_t id = 0;
        detail::check(sam3d_session_add_object(h_.get(), &id));
        return id;
    }
    /// click, undo and redo throw sam3d::Error, or what the progress callback threw (see set_progress).
    Sam3dResult click(uint32_t object, const std::array<double, 3>& point, Sam3dCoord coord = SAM3D_COORD_IJK) {
        Sam3dResult r{};
        finish(sam3d_session_click(h_.get(), object, point.data(), static_cast<int32_t>(coord), &r));
        return r;
    }
    /// A positive or negative click (SAM3D_LABEL_NEGATIVE: only packages with SAM3D_PROMPT_NEGATIVE;
    /// others throw sam3d::Error with SAM3D_STATUS_UNSUPPORTED).
    Sam3dResult click(uint32_t object, const std::array<double, 3>& point, Sam3dCoord coord, Sam3dLabel label) {
        Sam3dResult r{};
        finish(sam3d_session_click_ex(h_.get(), object, point.data(), static_cast<int32_t>(coord),
                                      static_cast<int32_t>(label), &r));
        return r;
    }
    /// A box prompt from two opposite corners (sam3d_session_set_box).
    Sam3dResult set_box(uint32_t object, const std::array<double, 3>& corner_a, const std::array<double, 3>& corner_b,
                        Sam3dCoord coord = SAM3D_COORD_IJK) {
        Sam3dResult r{};
        finish(sam3d_session_set_box(h_.get(), object, corner_a.data(), corner_b.data(), static_cast<int32_t>(coord), &r));
        return r;
    }
    /// Start the object from your own segment: one byte per voxel, i fastest, non-zero inside
    /// (sam3d_session_set_mask).
    Sam3dResult set_mask(uint32_t object, const uint8_t* buffer, size_t size) {
        Sam3dResult r{};
        finish(sam3d_session_set_mask(h_.get(), object, buffer, size, &r));
        return r;
    }
    Sam3dResult set_mask(uint32_t object, const std::vector<uint8_t>& mask) {
        return set_mask(object, mask.data(), mask.size());
    }
    Sam3dResult undo(uint32_t object) {
        Sam3dResult r{};
        finish(sam3d_session_undo(h_.get(), object, &r));
        return r;
    }
    Sam3dResult redo(uint32_t object) {
        Sam3dResult r{};
        finish(sam3d_session_redo(h_.get(), object, &r));
        return r;
    }
    void cancel() { detail::check(sam3d_session_cancel(h_.get())); }
    /// Test-time flips (1, 2, 4, 8) and the clicked-component rule for the next clicks.
    void set_inference(uint32_t test_time_flips, bool keep_clicked_components) {
        detail::check(sam3d_session_set_inference(h_.get(), test_time_flips, keep_clicked_components ? 1 : 0));
    }
    /// The refinements in force: (test-time flips, keep clicked components).
    std::pair<uint32_t, bool> inference() const {
        uint32_t flips = 0;
        int32_t keep = 0;
        detail::check(sam3d_session_get_inference(h_.get(), &flips, &keep));
        return {flips, keep != 0};
    }
    /// Automatic zoom-out for lesions larger than the crop: up to 1 (off), 2 or 4 (the default)
    /// times the model's spacing.
    void set_zoom_out(uint32_t max_zoom) { detail::check(sam3d_session_set_zoom_out(h_.get(), max_zoom)); }
    uint32_t zoom_out() const {
        uint32_t z = 0;
        detail::check(sam3d_session_get_zoom_out(h_.get(), &z));
        return z;
    }
    /// The zoom that answered the object's last interaction (1: the model's spacing; 0: no model ran).
    double zoom(uint32_t object) const {
        double z = 0;
        detail::check(sam3d_session_get_zoom(h_.get(), object, &z));
        return z;
    }
    /// Call `fn` on this thread at the start and end of each stage of click, undo and redo (an empty
    /// `fn` clears it). It may throw, e.g. to abort as ITK filters do: the exception is kept, the
    /// interaction cancelled (the object's mask and history stay as they were, whichever stage
    /// threw) and click/undo/redo rethrow it instead of sam3d::Error. After a throw, `fn` is not
    /// called again within that interaction.
    void set_progress(ProgressFn fn) {
        if (!fn) {
            set_progress(nullptr, nullptr);
            return;
        }
        auto p = std::make_unique<detail::Progress>();
        p->session = h_.get();
        p->fn = std::move(fn);
        detail::check(sam3d_session_set_progress(h_.get(), detail::Progress::trampoline, p.get()));
        progress_ = std::move(p);
    }
    /// A raw C callback (NULL clears it). It runs inside the library: it must not throw or longjmp
    /// (an exception crossing the library aborts the process); to stop the interaction, call
    /// sam3d_session_cancel(). Replaces a callback set with set_progress(ProgressFn).
    void set_progress(Sam3dProgressFn fn, void* user) {
        detail::check(sam3d_session_set_progress(h_.get(), fn, user));
        progress_.reset();
    }
    Mask mask(uint32_t object) {
        Sam3dMask* p = nullptr;
        detail::check(sam3d_session_mask(h_.get(), object, &p));
        return Mask(p);
    }
    void get_mask(uint32_t object, std::vector<uint8_t>& out) {
        detail::check(sam3d_session_get_mask(h_.get(), object, out.data(), out.size()));
    }
    /// Into a caller's buffer of `size` bytes (the volume's voxel count), e.g. an itk::Image<uint8_t, 3>.
    void get_mask(uint32_t object, uint8_t* buffer, size_t size) {
        detail::check(sam3d_session_get_mask(h_.get(), object, buffer, size));
    }
    /// The mask inside `box` (e.g. an interaction's `changed`), i fastest within the box: what a
    /// host keeping its own copy of the mask copies after each click.
    std::vector<uint8_t> get_mask_box(uint32_t object, const Sam3dBox& box) {
        size_t n = 1;
        for (int a = 0; a < 3; ++a) n *= box.hi[a] > box.lo[a] ? size_t(box.hi[a] - box.lo[a]) : 0;
        std::vector<uint8_t> out(n);
        detail::check(sam3d_session_get_mask_box(h_.get(), object, &box, out.data(), out.size()));
        return out;
    }

private:
    /// An exception from the progress callback wins over the call's status (CANCELLED).
    void finish(Sam3dStatus s) {
        if (progress_ && progress_->error) std::rethrow_exception(std::exchange(progress_->error, nullptr));
        detail::check(s);
    }
    // declared before h_, so the session (which points at it) is freed first
    std::unique_ptr<detail::Progress> progress_;
    detail::Handle<Sam3dSession, sam3d_session_free> h_;
};

}  // namespace sam3d

#endif  // SAM3D_HPP
