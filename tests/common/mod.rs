//! Helpers shared by the engine's test binaries: the tiny fixture packages and a synthetic volume.
// each test binary uses only some of them
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sam3d::Geometry;
use sam3d::ModelOptions;
use sam3d::{load_runtime, Coord, Model, Segmenter, Volume};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

pub fn model(name: &str) -> Arc<Model> {
    let rt = load_runtime(None).expect("ONNX Runtime: run `make ort` and set SAM3D_ORT_LIBRARY");
    Arc::new(
        Model::open(
            &rt,
            &fixture(name),
            &ModelOptions {
                threads: 1,
                ..Default::default()
            },
        )
        .unwrap(),
    )
}

/// A smooth synthetic CT-like volume: soft tissue with a brighter blob, 1.5 x 1.5 x 2.5 mm, oblique.
pub fn volume() -> Arc<Volume> {
    let dims = [48, 40, 30];
    let a: f64 = 0.1;
    let dir = [
        [a.cos(), -a.sin(), 0.0],
        [a.sin(), a.cos(), 0.0],
        [0.0, 0.0, 1.0],
    ];
    let geom = Geometry::new(dims, [1.5, 1.5, 2.5], [-30.0, 20.0, 5.0], dir).unwrap();
    let mut data = Vec::with_capacity(dims[0] * dims[1] * dims[2]);
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let r2 = ((i as f64 - 24.0) / 8.0).powi(2)
                    + ((j as f64 - 18.0) / 6.0).powi(2)
                    + ((k as f64 - 15.0) / 4.0).powi(2);
                let v = 40.0
                    + 120.0 * (-r2).exp()
                    + 30.0 * ((i * 7 + j * 13 + k * 3) % 11) as f64 / 11.0;
                data.push(v as f32);
            }
        }
    }
    Arc::new(Volume::new(geom, data).unwrap())
}

/// The mask of two clicks on the blob of `volume()`, zoom-out off: the provider tests' comparison.
pub fn two_click_mask(m: Arc<Model>) -> Vec<u8> {
    let mut s = Segmenter::new(m, volume()).unwrap();
    s.set_zoom_out(1).unwrap();
    let o = s.add_object();
    for p in [[24.0, 18.0, 15.0], [26.0, 19.0, 15.0]] {
        s.click(o, p, Coord::Ijk, &mut |_, _| {}).unwrap();
    }
    s.mask_vec(o).unwrap()
}

/// Dice of two 0/1 masks of the same grid (1 when both are empty).
pub fn dice(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let inter = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x != 0 && **y != 0)
        .count() as f64;
    let n = a.iter().chain(b).filter(|x| **x != 0).count();
    if n == 0 {
        1.0
    } else {
        2.0 * inter / n as f64
    }
}
