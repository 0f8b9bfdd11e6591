//! Engine tests on the tiny fixture packages (random weights, masks neither empty nor full).
//! ONNX Runtime comes from `SAM3D_ORT_LIBRARY` (set by the Makefile) or the usual search.

mod common;

use std::sync::Arc;

use common::{fixture, model, volume};
use sam3d::{load_runtime, Model, Sam3dStatus, Segmenter, Volume};
use sam3d::{Coord, ModelOptions, Stage};

fn none() -> impl FnMut(Stage, bool) {
    |_, _| {}
}

#[test]
fn follow_up_clicks_reuse_the_region_and_undo_redo_restore_masks() {
    let m = model("tiny-orient");
    let mut s = Segmenter::new(m, volume()).unwrap();
    // the package's own spacing only: zoom-out, whose coarser regions a random model may well
    // choose, has its own tests
    s.set_zoom_out(1).unwrap();
    let o = s.add_object();
    let mut stages = Vec::new();
    let r1 = s
        .click(o, [24.0, 18.0, 15.0], Coord::Ijk, &mut |st, done| {
            stages.push((st, done))
        })
        .unwrap();
    assert!(r1.encoded);
    assert!(stages.contains(&(Stage::Encode, true)) && stages.contains(&(Stage::Paste, true)));
    let n = volume().geom.voxel_count().unwrap() as u64;
    assert!(
        r1.voxels > 50 && r1.voxels < n / 2,
        "degenerate mask: {} of {n}",
        r1.voxels
    );
    let m1 = s.mask_vec(o).unwrap();
    assert_eq!(m1.iter().map(|&v| v as u64).sum::<u64>(), r1.voxels);
    // a nearby click stays in the cached region: decoder only
    let r2 = s
        .click(o, [26.0, 19.0, 15.0], Coord::Ijk, &mut none())
        .unwrap();
    assert!(!r2.encoded);
    let m2 = s.mask_vec(o).unwrap();
    assert_ne!(
        m1, m2,
        "a second click must change the mask of a random model"
    );
    // undo restores the first mask exactly, redo the second
    s.undo(o, &mut none()).unwrap();
    assert_eq!(s.mask_vec(o).unwrap(), m1);
    s.redo(o, &mut none()).unwrap();
    assert_eq!(s.mask_vec(o).unwrap(), m2);
    s.undo(o, &mut none()).unwrap();
    let r0 = s.undo(o, &mut none()).unwrap();
    assert_eq!(r0.voxels, 0);
    assert!(s.mask_vec(o).unwrap().iter().all(|&v| v == 0));
    assert_eq!(
        s.undo(o, &mut none()).unwrap_err().status,
        Sam3dStatus::NothingToDo
    );
    // the changed box covers every voxel that changed
    assert!(!r2.changed.is_empty());
}

#[test]
fn objects_share_one_encoding_and_clicks_map_between_frames() {
    let m = model("tiny-orient");
    let vol = volume();
    let mut s = Segmenter::new(m, vol.clone()).unwrap();
    let a = s.add_object();
    let b = s.add_object();
    s.click(a, [24.0, 18.0, 15.0], Coord::Ijk, &mut none())
        .unwrap();
    let rb = s
        .click(b, [22.0, 20.0, 14.0], Coord::Ijk, &mut none())
        .unwrap();
    assert!(
        !rb.encoded,
        "object b's click lies in the region encoded for object a"
    );
    // the same click in LPS and RAS coordinates gives the same mask as in voxel indices
    let idx = [23.4, 17.2, 15.5];
    let lps = vol.geom.index_to_lps(idx);
    let ras = [-lps[0], -lps[1], lps[2]];
    let mut masks = Vec::new();
    for (p, c) in [(idx, Coord::Ijk), (lps, Coord::Lps), (ras, Coord::Ras)] {
        let mut s = Segmenter::new(model("tiny-orient"), vol.clone()).unwrap();
        let o = s.add_object();
        s.click(o, p, c, &mut none()).unwrap();
        masks.push(s.mask_vec(o).unwrap());
    }
    assert_eq!(masks[0], masks[1]);
    assert_eq!(masks[0], masks[2]);
}

#[test]
fn bad_input_gets_specific_statuses() {
    let m = model("tiny-orient");
    let mut s = Segmenter::new(m.clone(), volume()).unwrap();
    let o = s.add_object();
    let e = s
        .click(o, [48.0, 1.0, 1.0], Coord::Ijk, &mut none())
        .unwrap_err();
    assert_eq!(e.status, Sam3dStatus::OutOfBounds);
    let e = s
        .click(o, [f64::NAN, 1.0, 1.0], Coord::Ijk, &mut none())
        .unwrap_err();
    assert_eq!(e.status, Sam3dStatus::InvalidArgument);
    let e = s
        .click(7, [1.0, 1.0, 1.0], Coord::Ijk, &mut none())
        .unwrap_err();
    assert_eq!(e.status, Sam3dStatus::InvalidArgument);
    // NaN voxels with the "error" policy
    let v = volume();
    let mut data = v.to_vec();
    data[5] = f32::NAN;
    data[9] = f32::INFINITY;
    let bad = Arc::new(Volume::new(v.geom, data).unwrap());
    let e = Segmenter::new(m, bad).err().unwrap();
    assert_eq!(e.status, Sam3dStatus::NonFinite);
    assert!(e.message.contains('2'), "{}", e.message);
}

#[test]
fn damaged_packages_are_refused() {
    let rt = load_runtime(None).unwrap();
    let dir = std::env::temp_dir().join(format!("sam3d-pkg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture("tiny-orient");
    for f in ["sam3d-model.json", "encoder.onnx", "decoder.onnx"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let opts = ModelOptions::default();
    // a flipped byte in a graph: hash mismatch
    let mut bytes = std::fs::read(dir.join("decoder.onnx")).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(dir.join("decoder.onnx"), &bytes).unwrap();
    assert_eq!(
        Model::open(&rt, &dir, &opts).err().unwrap().status,
        Sam3dStatus::HashMismatch
    );
    // a missing graph
    std::fs::remove_file(dir.join("decoder.onnx")).unwrap();
    let e = Model::open(&rt, &dir, &opts).err().unwrap();
    assert_eq!(e.status, Sam3dStatus::BadModel);
    assert!(e.message.contains("decoder.onnx"), "{}", e.message);
    // a newer format version
    std::fs::copy(src.join("decoder.onnx"), dir.join("decoder.onnx")).unwrap();
    let text = std::fs::read_to_string(dir.join("sam3d-model.json")).unwrap();
    std::fs::write(
        dir.join("sam3d-model.json"),
        text.replace("\"format_version\": 1", "\"format_version\": 2"),
    )
    .unwrap();
    assert_eq!(
        Model::open(&rt, &dir, &opts).err().unwrap().status,
        Sam3dStatus::UnsupportedFormat
    );
    // not JSON at all
    std::fs::write(dir.join("sam3d-model.json"), "{").unwrap();
    assert_eq!(
        Model::open(&rt, &dir, &opts).err().unwrap().status,
        Sam3dStatus::BadModel
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_model_shared_by_eight_threads_gives_the_single_thread_masks() {
    let m = model("tiny-orient");
    let vol = volume();
    let clicks: Vec<[f64; 3]> = (0..50)
        .map(|t| {
            [
                10.0 + (t * 7 % 30) as f64,
                8.0 + (t * 5 % 25) as f64,
                5.0 + (t * 3 % 20) as f64,
            ]
        })
        .collect();
    let run = |m: Arc<Model>, v: Arc<Volume>, clicks: Vec<[f64; 3]>| -> Vec<u64> {
        let mut s = Segmenter::new(m, v).unwrap();
        clicks
            .iter()
            .map(|c| {
                let o = s.add_object();
                s.click(o, *c, Coord::Ijk, &mut |_, _| {}).unwrap();
                let mask = s.mask_vec(o).unwrap();
                // a cheap fingerprint of the whole mask
                mask.iter()
                    .enumerate()
                    .map(|(i, &b)| (b as u64) * (i as u64 + 1))
                    .sum::<u64>()
            })
            .collect()
    };
    let single = run(m.clone(), vol.clone(), clicks.clone());
    // the fixture's masks are neither empty nor identical: a degenerate model would prove nothing
    let distinct: std::collections::HashSet<_> = single.iter().collect();
    assert!(
        single.iter().all(|&f| f > 0) && distinct.len() > 10,
        "{distinct:?}"
    );
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (m, v, c) = (m.clone(), vol.clone(), clicks.clone());
            std::thread::spawn(move || run(m, v, c))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), single);
    }
}

#[test]
fn cancellation_from_another_thread() {
    let m = model("tiny-orient");
    // a cancel while nothing runs is dropped: the next click runs
    let mut stale = Segmenter::new(m.clone(), volume()).unwrap();
    let o = stale.add_object();
    stale.canceller().cancel();
    stale
        .click(o, [24.0, 18.0, 15.0], Coord::Ijk, &mut none())
        .unwrap();
    let mut s = Segmenter::new(m, volume()).unwrap();
    let o = s.add_object();
    let c = s.canceller();
    // cancel from inside the progress callback of the first stage: the interaction stops
    let e = s
        .click(o, [24.0, 18.0, 15.0], Coord::Ijk, &mut |st, done| {
            if st == Stage::Resample && !done {
                let c = c.clone();
                std::thread::spawn(move || c.cancel()).join().unwrap();
            }
        })
        .unwrap_err();
    assert_eq!(e.status, Sam3dStatus::Cancelled);
    // the next interaction runs normally
    assert!(
        s.click(o, [24.0, 18.0, 15.0], Coord::Ijk, &mut none())
            .unwrap()
            .voxels
            > 0
    );
}

#[test]
fn a_borrowed_int16_buffer_with_padded_rows_gives_the_owned_volume_mask() {
    let m = model("tiny-array");
    let owned = volume();
    let [nx, ny, nz] = owned.geom.dims;
    // int16 voxels, rows padded to nx + 3 elements, slices padded by one extra row
    let (row, slice) = (nx + 3, (nx + 3) * (ny + 1));
    let mut buf = vec![0i16; slice * nz];
    let mut rounded = Vec::with_capacity(nx * ny * nz);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let v = owned.at(i, j, k).round() as i16;
                buf[i + row * j + slice * k] = v;
                rounded.push(v as f32);
            }
        }
    }
    let reference = Arc::new(Volume::new(owned.geom, rounded).unwrap());
    let borrowed = unsafe {
        Volume::borrowed(
            owned.geom,
            buf.as_ptr() as *const u8,
            buf.len() * 2,
            sam3d::Dtype::I16,
            [2, 2 * row as isize, 2 * slice as isize],
        )
    }
    .unwrap();
    let borrowed = Arc::new(borrowed);
    let mut masks = Vec::new();
    for v in [reference, borrowed] {
        let mut s = Segmenter::new(m.clone(), v).unwrap();
        let o = s.add_object();
        s.click(o, [20.0, 15.0, 12.0], Coord::Ijk, &mut none())
            .unwrap();
        masks.push(s.mask_vec(o).unwrap());
    }
    assert!(masks[0].contains(&1));
    assert_eq!(masks[0], masks[1]);
    // a stride that leaves the buffer is refused
    let e = unsafe {
        Volume::borrowed(
            owned.geom,
            buf.as_ptr() as *const u8,
            buf.len() * 2,
            sam3d::Dtype::I16,
            [2, 2 * row as isize, 4 * slice as isize],
        )
    }
    .unwrap_err();
    assert_eq!(e.status, Sam3dStatus::InvalidArgument);
}

/// Without a GPU (CI, this project's machines) every GPU request runs on the CPU, says why, and
/// gives the CPU's masks; the GPU settings are still checked, so a host sees the same errors
/// with or without a GPU.
#[test]
fn gpu_requests_fall_back_to_cpu_with_the_reason_and_the_same_masks() {
    use sam3d::{Device, GpuOptions};
    let rt = load_runtime(None).unwrap();
    let mut s = Segmenter::new(model("tiny-orient"), volume()).unwrap();
    let o = s.add_object();
    s.click(o, [24.0, 18.0, 15.0], Coord::Ijk, &mut none())
        .unwrap();
    let want = s.mask_vec(o).unwrap();

    let tmp = std::env::temp_dir().join(format!("sam3d-trt-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for (device, name) in [(Device::Cuda, "CUDA"), (Device::TensorRt, "TensorRT")] {
        let opts = ModelOptions {
            device,
            threads: 1,
            gpu: GpuOptions {
                device_id: 0,
                memory_limit: 2 << 30,
                fp16: true,
                tf32: true,
                trt_cache_dir: Some(tmp.join("engines")),
            },
            ..Default::default()
        };
        let m = Arc::new(Model::open(&rt, &fixture("tiny-orient"), &opts).unwrap());
        if m.provider == "CPU" {
            assert!(
                m.provider_note
                    .starts_with(&format!("{name} unavailable, running on CPU")),
                "{}",
                m.provider_note
            );
        } else {
            assert_eq!(m.provider, name);
        }
        let provider = m.provider.clone();
        let mut s = Segmenter::new(m, volume()).unwrap();
        let o = s.add_object();
        s.click(o, [24.0, 18.0, 15.0], Coord::Ijk, &mut none())
            .unwrap();
        // the follow-up click reads the cached encoder outputs (IO-bound, kept by the provider)
        s.click(o, [26.0, 19.0, 15.0], Coord::Ijk, &mut none())
            .unwrap();
        s.undo(o, &mut none()).unwrap();
        if provider == "CPU" {
            assert_eq!(
                s.mask_vec(o).unwrap(),
                want,
                "{name} fallback changed the mask"
            );
        }
    }
    assert!(
        tmp.join("engines").is_dir(),
        "TensorRT cache folder not created"
    );

    // settings errors are the same on every machine
    let open_err = |device, gpu| {
        let opts = ModelOptions {
            device,
            gpu,
            ..Default::default()
        };
        Model::open(&rt, &fixture("tiny-orient"), &opts)
            .err()
            .expect("bad GPU settings accepted")
    };
    let bad_id = GpuOptions {
        device_id: -1,
        ..Default::default()
    };
    let e = open_err(Device::Cuda, bad_id);
    assert_eq!(e.status, Sam3dStatus::InvalidArgument, "{}", e.message);
    std::fs::write(tmp.join("a-file"), b"x").unwrap();
    let bad_dir = GpuOptions {
        trt_cache_dir: Some(tmp.join("a-file/engines")),
        ..Default::default()
    };
    let e = open_err(Device::TensorRt, bad_dir);
    assert_eq!(e.status, Sam3dStatus::Io, "{}", e.message);
    assert!(e.message.contains("TensorRT cache folder"), "{}", e.message);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn test_time_flips_and_clicked_components_are_per_session_settings() {
    let m = model("tiny-orient");
    let vol = volume();
    let mut s = Segmenter::new(m, vol.clone()).unwrap();
    // the fixture's manifest has no `inference` block: one pass, every component
    assert_eq!(s.inference(), (1, false));
    let o = s.add_object();
    let click = [24.0, 18.0, 15.0];
    s.click(o, click, Coord::Ijk, &mut none()).unwrap();
    let m1 = s.mask_vec(o).unwrap();
    s.set_inference(8, false).unwrap();
    assert_eq!(s.inference(), (8, false));
    // a new flip count drops the cached region: the same click set encodes again
    s.undo(o, &mut none()).unwrap();
    let r = s.redo(o, &mut none()).unwrap();
    assert!(r.encoded);
    let m8 = s.mask_vec(o).unwrap();
    assert_ne!(
        m1, m8,
        "a random model is not flip-symmetric: 8 flips must change the mask"
    );
    assert_eq!(r.voxels, m8.iter().map(|&v| v as u64).sum::<u64>());
    // a flip count outside 1, 2, 4, 8 changes nothing
    let e = s.set_inference(3, true).unwrap_err();
    assert_eq!(e.status, Sam3dStatus::InvalidArgument);
    assert_eq!(s.inference(), (8, false));
    // the component rule alone keeps the region, and only removes voxels
    s.set_inference(8, true).unwrap();
    s.undo(o, &mut none()).unwrap();
    let r = s.redo(o, &mut none()).unwrap();
    assert!(!r.encoded);
    let mk = s.mask_vec(o).unwrap();
    assert!(mk.iter().zip(&m8).all(|(&k, &a)| k <= a));
    let [nx, ny, _] = vol.geom.dims;
    let at = |v: [usize; 3]| v[0] + nx * (v[1] + ny * v[2]);
    let c = click.map(|v| v as usize);
    if m8[at(c)] == 1 {
        assert_eq!(mk[at(c)], 1, "the clicked voxel's component is kept");
    } else {
        assert_eq!(mk, m8, "no click on the mask: it stays whole");
    }
}

/// A warm-up leaves nothing behind (a click afterwards gives the mask of a model never warmed up);
/// a second warm-up while one runs is refused; a user's click stops a running warm-up and goes
/// ahead with the mask it would have had; `cancel_warm_up` from another thread stops it too.
#[test]
fn warm_up_leaves_no_trace_and_a_click_stops_it() {
    let click = [24.0, 18.0, 15.0];
    let cold = model("tiny-orient");
    let mut s = Segmenter::new(cold, volume()).unwrap();
    let o = s.add_object();
    s.click(o, click, Coord::Ijk, &mut none()).unwrap();
    let want = s.mask_vec(o).unwrap();
    assert!(want.contains(&1));

    let m = model("tiny-orient");
    m.warm_up().unwrap();
    let mut s = Segmenter::new(m.clone(), volume()).unwrap();
    let o = s.add_object();
    s.click(o, click, Coord::Ijk, &mut none()).unwrap();
    assert_eq!(s.mask_vec(o).unwrap(), want);

    // a click while the warm-up waits to encode (here, inside its progress callback)
    let mut clicked = None;
    let mut refused = None;
    let e = m
        .warm_up_with(&mut |st, done| {
            if st == Stage::Encode && !done && clicked.is_none() {
                refused = Some(m.warm_up().unwrap_err().status);
                let mut s = Segmenter::new(m.clone(), volume()).unwrap();
                let o = s.add_object();
                s.click(o, click, Coord::Ijk, &mut none()).unwrap();
                clicked = Some(s.mask_vec(o).unwrap());
            }
        })
        .unwrap_err();
    assert_eq!(e.status, Sam3dStatus::Cancelled);
    assert_eq!(refused, Some(Sam3dStatus::InvalidArgument));
    assert_eq!(clicked.as_deref(), Some(&want[..]));

    // cancelled from another thread at its first stage
    let e = m
        .warm_up_with(&mut |st, done| {
            if st == Stage::Resample && !done {
                let m = m.clone();
                std::thread::spawn(move || m.cancel_warm_up())
                    .join()
                    .unwrap();
            }
        })
        .unwrap_err();
    assert_eq!(e.status, Sam3dStatus::Cancelled);
    // nothing running: cancelling does nothing, and the next warm-up runs to the end
    m.cancel_warm_up();
    m.warm_up().unwrap();
}
