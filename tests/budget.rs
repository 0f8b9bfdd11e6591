//! The memory budget, which is process-wide: its tests live in this binary alone, in one test, so
//! that no other test reads volumes while the budget is lowered.

mod common;

use std::sync::Arc;

use common::model;
use sam3d::Coord;
use sam3d::Geometry;
use sam3d::{memory_budget, set_memory_budget, DEFAULT_MEMORY_BUDGET};
use sam3d::{Sam3dStatus, Segmenter, Volume};

/// Restores the default budget even when an assertion fails.
struct Budget;

impl Budget {
    fn set(bytes: u64) -> Budget {
        set_memory_budget(bytes);
        Budget
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        set_memory_budget(0);
    }
}

#[test]
fn the_budget_bounds_a_click_and_a_mask_copy() {
    let m = model("tiny-orient");
    let eye = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    // voxels of 0.01 mm against the model's 2 mm: one crop covers the whole 400 x 400 x 50 volume
    let dims = [400, 400, 50];
    let fine = Geometry::new(dims, [0.01; 3], [0.0; 3], eye).unwrap();
    let vol = Arc::new(Volume::new(fine, vec![40.0; 400 * 400 * 50]).unwrap());
    {
        let _b = Budget::set(16 << 20);
        let e = Segmenter::new(m.clone(), vol.clone())
            .err()
            .expect("refused");
        assert_eq!(e.status, Sam3dStatus::TooLarge);
        assert!(e.message.contains("memory budget"), "{}", e.message);
        assert!(e.message.contains("400 x 400 x 50"), "{}", e.message);
    }
    assert_eq!(memory_budget(), DEFAULT_MEMORY_BUDGET);
    // within the default budget the same volume segments
    let mut s = Segmenter::new(m.clone(), vol).unwrap();
    let o = s.add_object();
    s.click(o, [200.0, 200.0, 25.0], Coord::Ijk, &mut |_, _| {})
        .unwrap();
    // a mask copy larger than the budget is refused, not allocated
    {
        let _b = Budget::set(1 << 20);
        let e = s.mask_vec(o).unwrap_err();
        assert_eq!(e.status, Sam3dStatus::TooLarge);
    }
    assert_eq!(s.mask_vec(o).unwrap().len(), 400 * 400 * 50);
}
