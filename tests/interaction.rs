//! Prompts beyond a positive click, on the tiny fixture packages (random weights): negative clicks
//! refused by a package trained without them, boxes, a starting segment, automatic zoom-out.

mod common;

use common::{model, volume};
use sam3d::{Coord, Sam3dStatus, Segmenter, Stage, VoxelBox};

fn none() -> impl FnMut(Stage, bool) {
    |_, _| {}
}

fn inside(b: &VoxelBox, v: [usize; 3]) -> bool {
    (0..3).all(|a| v[a] as u64 >= b.lo[a] && (v[a] as u64) < b.hi[a])
}

/// Every set voxel of a full mask (i fastest).
fn voxels(mask: &[u8], dims: [usize; 3]) -> Vec<[usize; 3]> {
    let mut out = Vec::new();
    for (n, &m) in mask.iter().enumerate() {
        if m != 0 {
            out.push([
                n % dims[0],
                (n / dims[0]) % dims[1],
                n / (dims[0] * dims[1]),
            ]);
        }
    }
    out
}

#[test]
fn a_negative_click_on_a_positive_only_package_is_unsupported_and_changes_nothing() {
    let mut s = Segmenter::new(model("tiny-orient"), volume()).unwrap();
    let o = s.add_object();
    s.click(o, [24.0, 18.0, 15.0], Coord::Ijk, &mut none())
        .unwrap();
    let before = s.mask_vec(o).unwrap();
    let e = s
        .click_labeled(o, [20.0, 18.0, 15.0], Coord::Ijk, false, &mut none())
        .unwrap_err();
    assert_eq!(e.status, Sam3dStatus::Unsupported);
    assert!(
        e.message.contains("without negative clicks") && e.message.contains("positive clicks"),
        "{}",
        e.message
    );
    assert_eq!(s.mask_vec(o).unwrap(), before);
    assert_eq!(s.clicks(o), Some(1));
    // a positive click through the labelled call is a click
    let r = s
        .click_labeled(o, [25.0, 18.0, 15.0], Coord::Ijk, true, &mut none())
        .unwrap();
    assert_eq!(s.clicks(o), Some(2));
    assert!(r.zoom >= 1.0);
}

#[test]
fn a_box_places_the_crop_clips_the_mask_and_undo_removes_it() {
    let vol = volume();
    let dims = vol.geom.dims;
    let mut s = Segmenter::new(model("tiny-orient"), vol.clone()).unwrap();
    let o = s.add_object();
    // a box of 41 x 35 x 25 voxels (61.5 x 52.5 x 62.5 mm), larger than the fixture's crop (32 at
    // 2 mm = 64 mm) less its margins (48 mm): the engine zooms out to fit it
    let (a, b) = ([4.0, 3.0, 3.0], [44.0, 37.0, 27.0]);
    let r = s.set_box(o, a, b, Coord::Ijk, &mut none()).unwrap();
    assert!(r.encoded);
    assert!(r.zoom > 1.0, "zoom {}", r.zoom);
    assert_eq!(s.object_zoom(o), Some(r.zoom));
    let mask = s.mask_vec(o).unwrap();
    let set = voxels(&mask, dims);
    assert!(
        !set.is_empty(),
        "a random model's box answer is not empty here: {r:?}"
    );
    assert_eq!(set.len() as u64, r.voxels);
    let clip = VoxelBox {
        lo: [4, 3, 3],
        hi: [45, 38, 28],
    };
    assert!(
        set.iter().all(|&v| inside(&clip, v)),
        "mask outside the box"
    );
    // a box given in LPS millimetres spans, on this oblique volume, the index box of its eight
    // corners: the mask lies in the voxels whose centres lie in that box
    let mut s2 = Segmenter::new(model("tiny-orient"), vol.clone()).unwrap();
    let o2 = s2.add_object();
    let (la, lb) = ([-20.0, 15.0, 20.0], [25.0, 60.0, 60.0]);
    s2.set_box(o2, la, lb, Coord::Lps, &mut none()).unwrap();
    let (mut lo, mut hi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
    for n in 0..8 {
        let c = [0, 1, 2].map(|ax| if (n >> ax) & 1 == 1 { lb[ax] } else { la[ax] });
        let idx = vol.geom.lps_to_index(c);
        for ax in 0..3 {
            lo[ax] = lo[ax].min(idx[ax]);
            hi[ax] = hi[ax].max(idx[ax]);
        }
    }
    let m2 = voxels(&s2.mask_vec(o2).unwrap(), dims);
    assert!(!m2.is_empty());
    assert!(m2
        .iter()
        .all(|v| (0..3).all(|ax| v[ax] as f64 >= lo[ax] - 1e-6 && v[ax] as f64 <= hi[ax] + 1e-6)));
    // a click refines the box's answer within the box; undo returns to the box alone
    s.click(o, [24.0, 18.0, 15.0], Coord::Ijk, &mut none())
        .unwrap();
    let refined = s.mask_vec(o).unwrap();
    assert!(voxels(&refined, dims).iter().all(|&v| inside(&clip, v)));
    s.undo(o, &mut none()).unwrap();
    assert_eq!(s.mask_vec(o).unwrap(), mask);
    let r0 = s.undo(o, &mut none()).unwrap();
    assert_eq!((r0.voxels, r0.zoom), (0, 0.0));
}

#[test]
fn bad_boxes_get_specific_statuses() {
    let mut s = Segmenter::new(model("tiny-orient"), volume()).unwrap();
    let o = s.add_object();
    let st = |s: &mut Segmenter, a: [f64; 3], b: [f64; 3]| {
        s.set_box(o, a, b, Coord::Ijk, &mut none())
            .unwrap_err()
            .status
    };
    // flat on one axis (a 2D rectangle)
    assert_eq!(
        st(&mut s, [10.0, 10.0, 15.0], [30.0, 30.0, 15.0]),
        Sam3dStatus::InvalidArgument
    );
    assert_eq!(
        st(&mut s, [f64::NAN, 10.0, 10.0], [30.0, 30.0, 15.0]),
        Sam3dStatus::InvalidArgument
    );
    // wholly outside the volume (48 x 40 x 30)
    assert_eq!(
        st(&mut s, [60.0, 10.0, 10.0], [70.0, 30.0, 20.0]),
        Sam3dStatus::OutOfBounds
    );
    // corners whose voxel indices overflow
    let e = s
        .set_box(o, [-f64::MAX; 3], [f64::MAX; 3], Coord::Lps, &mut none())
        .unwrap_err();
    assert_eq!(e.status, Sam3dStatus::InvalidArgument, "{}", e.message);
    assert_eq!(s.clicks(o), Some(0));
    assert!(s.mask_vec(o).unwrap().iter().all(|&v| v == 0));
    // a box around the whole volume and far beyond: placed on the volume's part
    let r = s
        .set_box(o, [-1e300; 3], [1e300; 3], Coord::Ijk, &mut none())
        .unwrap();
    assert!(r.zoom.is_finite() && r.zoom >= 1.0, "zoom {}", r.zoom);
    s.undo(o, &mut none()).unwrap();
    // partly outside: clipped to the volume
    let r = s
        .set_box(
            o,
            [30.0, 20.0, 10.0],
            [60.0, 50.0, 40.0],
            Coord::Ijk,
            &mut none(),
        )
        .unwrap();
    assert!(r
        .changed
        .hi
        .iter()
        .zip([48u64, 40, 30])
        .all(|(&h, d)| h <= d));
}

#[test]
fn a_starting_segment_is_the_mask_clicks_add_to_it_and_undo_returns_to_it() {
    let vol = volume();
    let dims = vol.geom.dims;
    let n = dims[0] * dims[1] * dims[2];
    let mut s = Segmenter::new(model("tiny-orient"), vol).unwrap();
    s.set_zoom_out(1).unwrap();
    let o = s.add_object();
    // a host's segment: a block away from the click, non-zero bytes of any value
    let mut start = vec![0u8; n];
    for k in 2..6 {
        for j in 3..9 {
            for i in 4..12 {
                start[i + dims[0] * (j + dims[1] * k)] = 255;
            }
        }
    }
    let want: Vec<u8> = start.iter().map(|&v| (v != 0) as u8).collect();
    let r = s.set_mask(o, &start, &mut none()).unwrap();
    assert_eq!(r.voxels, 8 * 6 * 4);
    assert_eq!((r.encoded, r.zoom), (false, 0.0));
    assert_eq!(s.mask_vec(o).unwrap(), want);
    // a positive click adds the model's answer to it
    let r = s
        .click(o, [24.0, 18.0, 15.0], Coord::Ijk, &mut none())
        .unwrap();
    let m = s.mask_vec(o).unwrap();
    assert!(
        m.iter().zip(&want).all(|(&a, &b)| a >= b),
        "the segment is kept"
    );
    assert!(r.voxels > 8 * 6 * 4, "the click added nothing");
    // undo returns to the segment, and once more to nothing
    s.undo(o, &mut none()).unwrap();
    assert_eq!(s.mask_vec(o).unwrap(), want);
    s.undo(o, &mut none()).unwrap();
    assert!(s.mask_vec(o).unwrap().iter().all(|&v| v == 0));
    s.redo(o, &mut none()).unwrap();
    assert_eq!(s.mask_vec(o).unwrap(), want);
    // a buffer of the wrong size changes nothing
    let e = s.set_mask(o, &want[1..], &mut none()).unwrap_err();
    assert_eq!(e.status, Sam3dStatus::InvalidArgument);
    assert_eq!(s.mask_vec(o).unwrap(), want);
}

#[test]
fn zoom_out_is_a_session_setting_reported_per_interaction() {
    let mut s = Segmenter::new(model("tiny-orient"), volume()).unwrap();
    assert_eq!(s.zoom_out(), 4);
    for bad in [0, 3, 8] {
        assert_eq!(
            s.set_zoom_out(bad).unwrap_err().status,
            Sam3dStatus::InvalidArgument
        );
    }
    assert_eq!(s.zoom_out(), 4);
    s.set_zoom_out(1).unwrap();
    let o = s.add_object();
    let off = s
        .click(o, [24.0, 18.0, 15.0], Coord::Ijk, &mut none())
        .unwrap();
    assert_eq!(off.zoom, 1.0);
    let m_off = s.mask_vec(o).unwrap();
    // with zoom-out the answer is either the same (the package's spacing answered) or another one
    // from a coarser level, and the level is reported
    s.set_zoom_out(4).unwrap();
    s.undo(o, &mut none()).unwrap();
    let on = s.redo(o, &mut none()).unwrap();
    assert!([1.0, 2.0, 4.0].contains(&on.zoom), "zoom {}", on.zoom);
    if on.zoom == 1.0 {
        assert_eq!(s.mask_vec(o).unwrap(), m_off);
    }
    assert_eq!(s.object_zoom(o), Some(on.zoom));
    // the coarser levels' regions are cached: the same click set again runs no encoder
    s.undo(o, &mut none()).unwrap();
    let again = s.redo(o, &mut none()).unwrap();
    assert!(!again.encoded);
    assert_eq!(again.zoom, on.zoom);
}

#[test]
fn a_package_trained_with_labels_takes_negative_clicks() {
    let m = model("tiny-labels");
    assert!(m.manifest().prompts.negative_points);
    let mut s = Segmenter::new(m, volume()).unwrap();
    s.set_zoom_out(1).unwrap();
    let o = s.add_object();
    s.click(o, [24.0, 18.0, 15.0], Coord::Ijk, &mut none())
        .unwrap();
    let pos = s.mask_vec(o).unwrap();
    // the same point as a negative click: the decoder sees another label, the mask changes
    let r = s
        .click_labeled(o, [20.0, 18.0, 15.0], Coord::Ijk, false, &mut none())
        .unwrap();
    assert!(!r.encoded, "a negative click reuses the region");
    assert_eq!(s.clicks(o), Some(2));
    let with_neg = s.mask_vec(o).unwrap();
    let mut s2 = Segmenter::new(model("tiny-labels"), volume()).unwrap();
    s2.set_zoom_out(1).unwrap();
    let o2 = s2.add_object();
    s2.click(o2, [24.0, 18.0, 15.0], Coord::Ijk, &mut none())
        .unwrap();
    s2.click(o2, [20.0, 18.0, 15.0], Coord::Ijk, &mut none())
        .unwrap();
    assert_ne!(
        with_neg,
        s2.mask_vec(o2).unwrap(),
        "a negative click must differ from a positive one at the same point"
    );
    s.undo(o, &mut none()).unwrap();
    assert_eq!(s.mask_vec(o).unwrap(), pos);
}

#[test]
fn a_package_declaring_negative_clicks_needs_a_decoder_that_takes_labels() {
    let rt = sam3d::load_runtime(None).unwrap();
    let dir = std::env::temp_dir().join(format!("sam3d-neg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = common::fixture("tiny-orient");
    for f in ["encoder.onnx", "decoder.onnx"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(src.join("sam3d-model.json")).unwrap();
    let claimed = manifest.replace("\"negative_points\": false", "\"negative_points\": true");
    assert_ne!(claimed, manifest);
    std::fs::write(dir.join("sam3d-model.json"), claimed).unwrap();
    let Err(e) = sam3d::Model::open(&rt, &dir, &sam3d::ModelOptions::default()) else {
        panic!("a package claiming negative clicks without `labels` opened");
    };
    assert_eq!(e.status, Sam3dStatus::BadModel);
    assert!(e.message.contains("`labels`"), "{}", e.message);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_negative_click_removes_the_starting_segments_part_it_lies_in() {
    let vol = volume();
    let dims = vol.geom.dims;
    let n = dims[0] * dims[1] * dims[2];
    let mut s = Segmenter::new(model("tiny-labels"), vol).unwrap();
    let o = s.add_object();
    // two separate blocks; a negative click in the first removes it, the second stays
    let mut start = vec![0u8; n];
    let at = |i: usize, j: usize, k: usize| i + dims[0] * (j + dims[1] * k);
    for k in 2..6 {
        for j in 3..9 {
            for i in 4..12 {
                start[at(i, j, k)] = 1;
                start[at(i + 30, j + 25, k + 20)] = 1;
            }
        }
    }
    s.set_mask(o, &start, &mut none()).unwrap();
    let r = s
        .click_labeled(o, [6.0, 5.0, 3.0], Coord::Ijk, false, &mut none())
        .unwrap();
    // negative clicks alone run no model
    assert_eq!((r.encoded, r.zoom, r.voxels), (false, 0.0, 8 * 6 * 4));
    let m = s.mask_vec(o).unwrap();
    assert_eq!(m[at(5, 4, 3)], 0);
    assert_eq!(m[at(35, 29, 23)], 1);
    // a negative click off the segment removes nothing
    s.undo(o, &mut none()).unwrap();
    let r = s
        .click_labeled(o, [20.0, 20.0, 15.0], Coord::Ijk, false, &mut none())
        .unwrap();
    assert_eq!(r.voxels, 2 * 8 * 6 * 4);
}
