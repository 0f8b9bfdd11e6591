//! The library leaves its host threads' floating-point mode as it found it. A test binary of its
//! own: ONNX Runtime sets flush-to-zero on the thread that initialises the process's first session
//! (`src/fpmode.rs`), so this test must open the process's first model.

use std::path::Path;
use std::sync::Arc;

use sam3d::engine::{ModelOptions, Sam3dCoord};
use sam3d::fpmode::mode;
use sam3d::geometry::Geometry;
use sam3d::{runtime, Model, Segmenter, Volume};

/// MXCSR's flush-to-zero and denormals-are-zero bits.
const FTZ_DAZ: u32 = 1 << 15 | 1 << 6;
const IDENTITY: [[f64; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

#[test]
#[cfg(target_arch = "x86_64")]
fn opening_a_model_and_clicking_leave_the_threads_mode_alone() {
    let before = mode();
    assert_eq!(
        before & FTZ_DAZ,
        0,
        "the test thread starts in the default mode"
    );
    let rt = runtime::load(None).expect("ONNX Runtime: run `make ort` and set SAM3D_ORT_LIBRARY");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-orient");
    let opts = ModelOptions {
        threads: 1,
        ..Default::default()
    };
    let model = Arc::new(Model::open(&rt, &dir, &opts).unwrap());
    assert_eq!(
        mode(),
        before,
        "Model::open changed the opening thread's mode"
    );

    let dims = [40, 36, 30];
    let data: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|i| 40.0 + (i % 17) as f32 * 5.0)
        .collect();
    let geom = Geometry::new(dims, [1.5, 1.5, 2.5], [0.0; 3], IDENTITY).unwrap();
    let mut seg = Segmenter::new(model, Arc::new(Volume::new(geom, data).unwrap())).unwrap();
    let obj = seg.add_object();
    let r = seg
        .click(obj, [20.0, 18.0, 15.0], Sam3dCoord::Ijk, &mut |_, _| {})
        .unwrap();
    assert_eq!(r.encoded, 1);
    assert_eq!(mode(), before, "a click changed the calling thread's mode");
}
