// The C++ wrapper's progress callback may throw: the exception reaches the caller of click, undo or
// redo (not sam3d::Error), the interaction is cancelled, the object's mask and history stay as they
// were, and the session goes on working. Built with -Wall -Wextra -Werror and run once more under
// AddressSanitizer + UndefinedBehaviorSanitizer (see Makefile).
//   test_progress_exceptions MODEL_DIR        (SAM3D_ORT_LIBRARY points at ONNX Runtime)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "sam3d.hpp"

#include "blob_volume.hpp"

namespace {

int passed = 0, failed = 0;

void check(const char* what, bool cond) {
    if (cond) {
        passed++;
    } else {
        failed++;
        std::fprintf(stderr, "FAIL %s\n", what);
    }
}

// what a host's abort looks like (ITK's ProcessAborted is a std::exception too)
struct Abort : std::runtime_error {
    explicit Abort(const std::string& where) : std::runtime_error("aborted at " + where) {}
};

enum class Outcome { Ok, Abort, Int, Error, Other };

// run `call` and say what came out of it; `status` gets a sam3d::Error's status
template <typename F>
Outcome outcome(F&& call, Sam3dStatus* status = nullptr) {
    try {
        call();
        return Outcome::Ok;
    } catch (const Abort&) {
        return Outcome::Abort;
    } catch (int) {
        return Outcome::Int;
    } catch (const sam3d::Error& e) {
        if (status) *status = e.status();
        return Outcome::Error;
    } catch (...) {
        return Outcome::Other;
    }
}

using Calls = std::vector<std::pair<Sam3dStage, bool>>;

// a callback that records its calls and throws `thrower` at (stage, done)
sam3d::ProgressFn recorder(Calls& calls, Sam3dStage at, bool done_at, void (*thrower)(Sam3dStage)) {
    return [&calls, at, done_at, thrower](Sam3dStage stage, bool done) {
        calls.emplace_back(stage, done);
        if (thrower && stage == at && done == done_at) thrower(stage);
    };
}
void throw_abort(Sam3dStage stage) { throw Abort("stage " + std::to_string(static_cast<int>(stage))); }
void throw_int(Sam3dStage) { throw 42; }

int raw_calls = 0;
void raw_progress(int32_t, int32_t, void* user) {
    raw_calls++;
    check("raw callback: its user pointer", user == &raw_calls);
}

void run(const std::string& model_dir) {
    sam3d::Runtime rt;
    sam3d::Model model(rt, model_dir);
    std::vector<float> buf;
    auto vol = sam3d::Volume::borrow(blob(buf, 48, 40, 30));
    const size_t n = buf.size();
    const std::array<double, 3> inside{24, 18, 15}, near{26, 19, 15};

    sam3d::Session s(model, vol);
    // one level (the package's spacing): zoom-out repeats the resample, encode and decode stages
    // for each coarser level, which the stage sequences below do not expect
    s.set_zoom_out(1);
    check("zoom-out: off", s.zoom_out() == 1);
    uint32_t obj = s.add_object();
    Sam3dResult first = s.click(obj, inside);
    check("first click: a mask", first.voxels > 0 && first.encoded == 1);
    std::vector<uint8_t> before(n), after(n);
    s.get_mask(obj, before);

    // a throw at the start of the encoder: a new flip count drops the cached region, so it encodes
    s.set_inference(2, false);
    Calls calls;
    s.set_progress(recorder(calls, SAM3D_STAGE_ENCODE, false, throw_abort));
    check("encode throw: the caller gets the callback's exception",
          outcome([&] { s.click(obj, near); }) == Outcome::Abort);
    check("encode throw: no call after the throw",
          !calls.empty() && calls.back() == std::make_pair(SAM3D_STAGE_ENCODE, false));
    s.get_mask(obj, after);
    check("encode throw: the mask is as before", after == before);

    // the session goes on: a callback that does not throw sees every stage, the click succeeds
    calls.clear();
    s.set_progress(recorder(calls, SAM3D_STAGE_ENCODE, false, nullptr));
    Sam3dResult r{};
    check("after the throw: a click succeeds", outcome([&] { r = s.click(obj, near); }) == Outcome::Ok);
    check("after the throw: a mask, encoded again", r.voxels > 0 && r.encoded == 1);
    const Calls all{{SAM3D_STAGE_RESAMPLE, false}, {SAM3D_STAGE_RESAMPLE, true}, {SAM3D_STAGE_ENCODE, false},
                    {SAM3D_STAGE_ENCODE, true},    {SAM3D_STAGE_DECODE, false},  {SAM3D_STAGE_DECODE, true},
                    {SAM3D_STAGE_PASTE, false},    {SAM3D_STAGE_PASTE, true}};
    check("after the throw: every stage reported, in order", calls == all);

    // a throw in undo's decoder stage: the mask stays, undo works afterwards
    s.get_mask(obj, before);
    calls.clear();
    s.set_progress(recorder(calls, SAM3D_STAGE_DECODE, false, throw_abort));
    check("undo throw: the caller gets the callback's exception",
          outcome([&] { s.undo(obj); }) == Outcome::Abort);
    s.get_mask(obj, after);
    check("undo throw: the mask is as before", after == before);
    s.set_progress(sam3d::ProgressFn{});  // cleared
    Sam3dStatus st = SAM3D_STATUS_OK;
    check("history: two undos, then nothing to undo (the failed click and undo left none)",
          outcome([&] { s.undo(obj); }) == Outcome::Ok && outcome([&] { r = s.undo(obj); }) == Outcome::Ok &&
              r.voxels == 0 && outcome([&] { s.undo(obj); }, &st) == Outcome::Error &&
              st == SAM3D_STATUS_NOTHING_TO_DO);
    check("history: redo", outcome([&] { r = s.redo(obj); }) == Outcome::Ok && r.voxels > 0);

    // a throw at the very end (paste-back done) still leaves the mask as it was
    calls.clear();
    std::vector<uint8_t> last_before(before.size()), last_after(before.size());
    s.get_mask(obj, last_before);
    s.set_progress(recorder(calls, SAM3D_STAGE_PASTE, true, throw_int));
    check("last-stage throw: the caller gets it (not sam3d::Error)",
          outcome([&] { s.click(obj, inside); }) == Outcome::Int);
    check("last-stage throw: every stage ran",
          calls.size() >= 4 && std::equal(all.end() - 4, all.end(), calls.end() - 4));
    s.get_mask(obj, last_after);
    check("last-stage throw: the mask is as before", last_after == last_before);
    s.set_progress(recorder(calls, SAM3D_STAGE_PASTE, true, nullptr));
    check("last-stage throw: its cancel does not stop the next click",
          outcome([&] { r = s.click(obj, near); }) == Outcome::Ok && r.voxels > 0);

    // library errors stay sam3d::Error with the callback set
    st = SAM3D_STATUS_OK;
    check("errors: out of bounds is sam3d::Error",
          outcome([&] { s.click(obj, {-100.0, 0.0, 0.0}); }, &st) == Outcome::Error &&
              st == SAM3D_STATUS_OUT_OF_BOUNDS);

    // a moved session keeps its callback (its state is on the heap)
    calls.clear();
    s.set_inference(1, false);
    s.set_progress(recorder(calls, SAM3D_STAGE_RESAMPLE, false, throw_abort));
    sam3d::Session moved(std::move(s));
    sam3d::Session target(model, vol);
    target = std::move(moved);
    check("moved session: the exception arrives", outcome([&] { target.click(obj, inside); }) == Outcome::Abort);
    // resample's end follows its start with no cancel check between: the wrapper skips it
    check("moved session: no call after the throw", calls == Calls{{SAM3D_STAGE_RESAMPLE, false}});

    // the raw C overload replaces the C++ callback
    calls.clear();
    target.set_progress(raw_progress, &raw_calls);
    check("raw callback: click", outcome([&] { target.click(obj, near); }) == Outcome::Ok);
    check("raw callback: called instead of the C++ one", raw_calls == 8 && calls.empty());
    target.set_progress(nullptr, nullptr);
    check("raw callback: cleared", outcome([&] { target.click(obj, inside); }) == Outcome::Ok && raw_calls == 8);

    // the wrapper's other prompts: a negative click on a positive-only package throws UNSUPPORTED
    // and changes nothing; a box; a starting segment, which undo leaves
    check("prompts: no negative clicks", (model.prompts() & SAM3D_PROMPT_NEGATIVE) == 0 &&
                                             (model.prompts() & SAM3D_PROMPT_BOX) != 0);
    uint32_t o2 = target.add_object();
    Sam3dStatus neg = SAM3D_STATUS_OK;
    check("negative click: unsupported",
          outcome([&] { target.click(o2, inside, SAM3D_COORD_IJK, SAM3D_LABEL_NEGATIVE); }, &neg) == Outcome::Error &&
              neg == SAM3D_STATUS_UNSUPPORTED);
    Sam3dResult rb{};
    check("box: answered", outcome([&] { rb = target.set_box(o2, {4, 3, 3}, {44, 37, 27}); }) == Outcome::Ok &&
                               target.zoom(o2) > 1.0);
    std::vector<uint8_t> seg(n, 0);
    seg[24 + 48 * (18 + 40 * 15)] = 1;
    Sam3dResult rs{};
    check("segment: set", outcome([&] { rs = target.set_mask(o2, seg); }) == Outcome::Ok && rs.voxels == 1);
    check("segment: undo returns to the box", target.undo(o2).voxels == rb.voxels);
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
