//! The CPU arena shared by the open models' sessions (`src/arena.rs`): registered while a model
//! holds it, unregistered with the last one, registered again by the next model. A test binary of
//! its own, so no other test opens models meanwhile.

use std::path::Path;
use std::sync::Arc;

use sam3d::arena::leases;
use sam3d::engine::{ModelOptions, Sam3dCoord};
use sam3d::geometry::Geometry;
use sam3d::{runtime, Model, Segmenter, Volume};

const IDENTITY: [[f64; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

fn open() -> Arc<Model> {
    let rt = runtime::load(None).expect("ONNX Runtime: run `make ort` and set SAM3D_ORT_LIBRARY");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-orient");
    let opts = ModelOptions {
        threads: 1,
        ..Default::default()
    };
    Arc::new(Model::open(&rt, &dir, &opts).unwrap())
}

/// The mask of one click at the volume's centre.
fn mask(model: &Arc<Model>) -> Vec<u8> {
    let dims = [40, 36, 30];
    let data: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|i| 40.0 + (i % 17) as f32 * 5.0 + (i % 1201) as f32 * 0.1)
        .collect();
    let geom = Geometry::new(dims, [1.5, 1.5, 2.5], [0.0; 3], IDENTITY).unwrap();
    let mut seg =
        Segmenter::new(model.clone(), Arc::new(Volume::new(geom, data).unwrap())).unwrap();
    let obj = seg.add_object();
    seg.click(obj, [20.0, 18.0, 15.0], Sam3dCoord::Ijk, &mut |_, _| {})
        .unwrap();
    seg.mask_vec(obj).unwrap()
}

#[test]
fn models_lease_the_arena_and_the_last_one_gives_it_back() {
    assert_eq!(leases(), 0);
    let a = open();
    assert_eq!(leases(), 1, "a CPU model shares the environment's arena");
    let b = open();
    assert_eq!(leases(), 2);
    let first = mask(&a);
    drop(a); // b's sessions keep using the arena
    assert_eq!(leases(), 1);
    assert_eq!(mask(&b), first);
    drop(b);
    assert_eq!(leases(), 0, "the last model gives the arena back");
    // registered again (ONNX Runtime refuses a second registration, so the last drop unregistered it)
    let c = open();
    assert_eq!(leases(), 1);
    assert_eq!(mask(&c), first);
}
