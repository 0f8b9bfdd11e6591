//! The CPU arena shared by the open models' sessions (`src/arena.rs`): registered while a model
//! holds it, unregistered with the last one, registered again by the next model. A test binary of
//! its own, so no other test opens models meanwhile.

mod common;

use std::sync::Arc;

use sam3d::internals::leases;
use sam3d::Coord;
use sam3d::{Model, Segmenter};

fn open() -> Arc<Model> {
    common::model("tiny-orient")
}

/// The mask of one click near the volume's centre.
fn mask(model: &Arc<Model>) -> Vec<u8> {
    let mut seg = Segmenter::new(model.clone(), common::volume()).unwrap();
    let obj = seg.add_object();
    seg.click(obj, [20.0, 18.0, 15.0], Coord::Ijk, &mut |_, _| {})
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
