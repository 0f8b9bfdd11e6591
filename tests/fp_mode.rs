//! The library leaves its host threads' floating-point mode as it found it. A test binary of its
//! own: ONNX Runtime sets flush-to-zero on the thread that initialises the process's first session
//! (`src/fpmode.rs`), so this test must open the process's first model.

mod common;

use sam3d::internals::mode;
use sam3d::Coord;
use sam3d::Segmenter;

/// MXCSR's flush-to-zero and denormals-are-zero bits.
const FTZ_DAZ: u32 = 1 << 15 | 1 << 6;

#[test]
#[cfg(target_arch = "x86_64")]
fn opening_a_model_and_clicking_leave_the_threads_mode_alone() {
    let before = mode();
    assert_eq!(
        before & FTZ_DAZ,
        0,
        "the test thread starts in the default mode"
    );
    let model = common::model("tiny-orient");
    assert_eq!(
        mode(),
        before,
        "Model::open changed the opening thread's mode"
    );
    let mut seg = Segmenter::new(model, common::volume()).unwrap();
    let obj = seg.add_object();
    let r = seg
        .click(obj, [20.0, 18.0, 15.0], Coord::Ijk, &mut |_, _| {})
        .unwrap();
    assert!(r.encoded);
    assert_eq!(mode(), before, "a click changed the calling thread's mode");
}
