//! Segment a NIfTI volume from one or more clicks and write the mask (`segment --help`).
//!
//! cargo run --release --example segment -- --model DIR --input CT.nii.gz --click 60,70,20 \
//!     --out mask.nii.gz

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sam3d::{load_runtime, read_nifti, write_mask, Model, Segmenter};
use sam3d::{Coord, Device, GpuOptions, ModelOptions, Stage};

struct Args {
    model: PathBuf,
    input: PathBuf,
    out: PathBuf,
    /// (point, positive)
    clicks: Vec<([f64; 3], bool)>,
    bx: Option<([f64; 3], [f64; 3])>,
    init_mask: Option<PathBuf>,
    zoom_out: Option<u32>,
    coord: Coord,
    ort: Option<PathBuf>,
    device: Device,
    threads: usize,
    truth: Option<PathBuf>,
    gpu: GpuOptions,
    bf16: bool,
    cache_dir: Option<PathBuf>,
    flips: Option<u32>,
    keep_clicked: Option<bool>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        model: PathBuf::new(),
        input: PathBuf::new(),
        out: PathBuf::new(),
        clicks: vec![],
        bx: None,
        init_mask: None,
        zoom_out: None,
        coord: Coord::Ijk,
        ort: None,
        device: Device::Cpu,
        threads: 0,
        truth: None,
        gpu: GpuOptions::default(),
        bf16: false,
        cache_dir: None,
        flips: None,
        keep_clicked: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--model" => a.model = v()?.into(),
            "--input" => a.input = v()?.into(),
            "--out" => a.out = v()?.into(),
            "--ort" => a.ort = Some(v()?.into()),
            "--truth" => a.truth = Some(v()?.into()),
            "--gpu-mem-limit-mb" => {
                let mb: usize = v()?
                    .parse()
                    .map_err(|e| format!("--gpu-mem-limit-mb: {e}"))?;
                a.gpu.memory_limit = mb << 20;
            }
            "--trt-cache" => a.gpu.trt_cache_dir = Some(v()?.into()),
            "--trt-fp16" => a.gpu.fp16 = true,
            "--cuda-tf32" => a.gpu.tf32 = true,
            "--bf16" => a.bf16 = true,
            "--openvino-cache" => a.cache_dir = Some(v()?.into()),
            "--flips" => a.flips = Some(v()?.parse().map_err(|e| format!("--flips: {e}"))?),
            "--keep-clicked" => {
                a.keep_clicked = Some(match v()?.as_str() {
                    "0" => false,
                    "1" => true,
                    o => return Err(format!("--keep-clicked {o}: 0 or 1")),
                })
            }
            "--threads" => a.threads = v()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--click" => {
                let s = v()?;
                // X,Y,Z with an optional fourth field: + (positive, the default) or - (negative)
                let (xyz, positive) = match s.rsplit_once(',') {
                    Some((head, "+")) => (head, true),
                    Some((head, "-")) => (head, false),
                    _ => (s.as_str(), true),
                };
                let p = numbers(xyz, 3).map_err(|e| format!("--click {s}: {e}"))?;
                a.clicks.push(([p[0], p[1], p[2]], positive));
            }
            "--box" => {
                let s = v()?;
                let p = numbers(&s, 6).map_err(|e| format!("--box {s}: {e}"))?;
                a.bx = Some(([p[0], p[1], p[2]], [p[3], p[4], p[5]]));
            }
            "--init-mask" => a.init_mask = Some(v()?.into()),
            "--zoom-out" => {
                a.zoom_out = Some(v()?.parse().map_err(|e| format!("--zoom-out: {e}"))?)
            }
            "--coord" => {
                a.coord = match v()?.as_str() {
                    "ijk" => Coord::Ijk,
                    "lps" => Coord::Lps,
                    "ras" => Coord::Ras,
                    o => return Err(format!("--coord {o}: ijk, lps or ras")),
                }
            }
            "--device" => a.device = v()?.parse().map_err(|e| format!("--{e}"))?,
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            o => return Err(format!("unknown argument {o}")),
        }
    }
    if a.model.as_os_str().is_empty()
        || a.input.as_os_str().is_empty()
        || a.out.as_os_str().is_empty()
        || (a.clicks.is_empty() && a.bx.is_none() && a.init_mask.is_none())
    {
        return Err(
            "--model, --input, --out and at least one --click, --box or --init-mask are required"
                .into(),
        );
    }
    Ok(a)
}

/// `n` comma-separated numbers.
fn numbers(s: &str, n: usize) -> Result<Vec<f64>, String> {
    let p: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if p.len() != n {
        return Err(format!("needs {n} comma-separated numbers"));
    }
    Ok(p)
}

fn bar(stage: Stage, done: bool) {
    const NAMES: [&str; 5] = ["load", "resample", "encode", "decode", "paste-back"];
    let i = stage as usize;
    let filled: String = (0..5)
        .map(|s| if s < i || (s == i && done) { '#' } else { '.' })
        .collect();
    eprint!(
        "\r[{filled}] {:<10} {}",
        NAMES[i],
        if done { "done" } else { "..." }
    );
    let _ = std::io::stderr().flush();
    if done && stage == Stage::Paste {
        eprintln!();
    }
}

const HELP: &str = "\
segment: segment a NIfTI volume from clicks with a libsam3d model package and write the mask

usage: segment --model DIR --input VOL --click X,Y,Z [--click X,Y,Z,- ...] --out MASK [options]

required
  --model DIR            model package folder (holds sam3d-model.json), e.g. models/demo-lesion
  --input VOL            volume: .nii, .nii.gz, or a .hdr/.img pair (either name)
  --click X,Y,Z[,+|-]    a click: positive (+, the default) or negative (-, 'not this'; only for
                         packages trained with negative clicks); repeat for more clicks on the same
                         object, applied in order. By default X,Y,Z is a voxel index (IJK: i fastest
                         in the file, voxel centres at integers, fractions allowed); see --coord
  --out MASK             mask to write: .nii or .nii.gz (uint8 0/1 on the input's grid and geometry;
                         written to a temporary file and renamed into place)
  (instead of --click, or with it: --box or --init-mask)

options
  --box X0,Y0,Z0,X1,Y1,Z1  a box prompt, two opposite corners: the crop is placed and sized on the
                         box, its centre is the positive prompt unless a click is given, and the mask
                         is clipped to it (applied before the clicks)
  --init-mask MASK       start from this segment (same grid as the input, non-zero inside); clicks
                         then refine it (applied first)
  --zoom-out 1|2|4       coarsest automatic zoom-out for lesions larger than the crop, as a multiple
                         of the model's spacing (default 4; 1 turns it off)
  --coord ijk|lps|ras    what --click and --box mean: ijk voxel index (default), lps or ras mm
                         (LPS: ITK's physical frame; RAS: NIfTI's and 3D Slicer's)
  --ort LIB              ONNX Runtime library to load (only that file); default: SAM3D_ORT_LIBRARY,
                         ORT_DYLIB_PATH, next to libsam3d, the system search path
  --device cpu|cuda|tensorrt|openvino   execution provider (default cpu; falls back to the CPU
                         provider with the reason)
  --threads N            ONNX Runtime and resampling threads (default 0: all cores; at most 256)
  --flips 1|2|4|8        test-time flips averaged per click (default: the package's choice)
  --keep-clicked 0|1     keep only mask components that contain a click (default: the package's)
  --truth MASK           a reference mask on the same grid: print the Dice of the result against it
  --gpu-mem-limit-mb MB  cap on the CUDA memory arena (and TensorRT's workspace)
  --trt-cache DIR        TensorRT engine and timing cache folder
  --trt-fp16             let TensorRT choose fp16 kernels
  --cuda-tf32            TF32 tensor cores on CUDA (faster, about 1e-3 relative error)
  --bf16                 OpenVINO: bf16 where the CPU has AMX-BF16 or AVX512-BF16 (faster, about
                         1e-2 on probabilities; elsewhere fp32)
  --openvino-cache DIR   OpenVINO: compiled-model cache folder (a later open skips compiling)
  -h, --help             this text

output
  stdout: model, runtime, provider, inference settings, timings, the mask's voxels and volume;
  stderr: a progress bar, and 'the click found nothing: the mask is empty' when the mask is empty
  (the file is still written)

exit status
  0  the mask was written (also when it is empty)
  1  libsam3d refused or failed: the message names the status (SAM3D_STATUS_...) and the reason
  2  the command line is wrong
";

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\nusage: segment --model DIR --input VOL --click X,Y,Z [--click ...] --out MASK [options]\n(segment --help for every option)");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("\nerror: {e}");
        std::process::exit(1);
    }
}

/// A mask file (`flag`'s) that must lie on the input's grid.
fn read_on_grid(flag: &str, path: &Path, vol: &sam3d::Volume) -> sam3d::Result<sam3d::Volume> {
    let m = read_nifti(path)?;
    if m.geom.dims != vol.geom.dims {
        return Err(sam3d::Error::new(
            sam3d::Sam3dStatus::InvalidArgument,
            format!(
                "{flag} {}: grid {:?} differs from the input's {:?}",
                path.display(),
                m.geom.dims,
                vol.geom.dims
            ),
        ));
    }
    Ok(m)
}

fn run(args: Args) -> sam3d::Result<()> {
    let t0 = Instant::now();
    let rt = load_runtime(args.ort.as_deref())?;
    let opts = ModelOptions {
        device: args.device,
        threads: args.threads,
        verify_hashes: true,
        gpu: args.gpu.clone(),
        bf16: args.bf16,
        cache_dir: args.cache_dir.clone(),
    };
    let model = Arc::new(Model::open(&rt, &args.model, &opts)?);
    let t_model = t0.elapsed();
    bar(Stage::Load, false);
    let t = Instant::now();
    let vol = Arc::new(read_nifti(&args.input)?);
    let t_load = t.elapsed();
    bar(Stage::Load, true);
    let mut seg = Segmenter::new(model.clone(), vol.clone())?;
    let (flips, keep) = seg.inference();
    seg.set_inference(
        args.flips.unwrap_or(flips),
        args.keep_clicked.unwrap_or(keep),
    )?;
    if let Some(z) = args.zoom_out {
        seg.set_zoom_out(z)?;
    }
    let obj = seg.add_object();
    let mut times = Vec::new();
    let mut last = None;
    if let Some(path) = &args.init_mask {
        let start = read_on_grid("--init-mask", path, &vol)?;
        let bytes: Vec<u8> = start.to_vec().iter().map(|&v| (v != 0.0) as u8).collect();
        last = Some(seg.set_mask(obj, &bytes, &mut bar)?);
    }
    if let Some((a, b)) = args.bx {
        let t = Instant::now();
        last = Some(seg.set_box(obj, a, b, args.coord, &mut bar)?);
        times.push(("box", t.elapsed()));
    }
    for (c, positive) in &args.clicks {
        let t = Instant::now();
        last = Some(seg.click_labeled(obj, *c, args.coord, *positive, &mut bar)?);
        times.push((if *positive { "click" } else { "click -" }, t.elapsed()));
    }
    let res = last.expect("at least one prompt");
    let mask = seg.mask_vec(obj)?;
    let t = Instant::now();
    write_mask(&args.out, &vol.geom, &mask)?;
    let t_write = t.elapsed();
    if res.voxels == 0 {
        // an empty mask is a valid answer, but the user must hear of it (the file is still written)
        eprintln!("the click found nothing: the mask is empty");
    }
    let sp = vol.geom.spacing;
    let ml = res.voxels as f64 * sp[0] * sp[1] * sp[2] / 1000.0;
    let m = model.manifest();
    println!(
        "model        {} ({}), licence: {}",
        m.name,
        model.package.hash.get(..12).unwrap_or(""),
        m.licence
    );
    println!(
        "runtime      ONNX Runtime {} from {}",
        rt.version(),
        rt.path().display()
    );
    println!(
        "provider     {}{}",
        model.provider,
        if model.provider_note.is_empty() {
            String::new()
        } else {
            format!(" ({})", model.provider_note)
        }
    );
    let (flips, keep) = seg.inference();
    println!(
        "inference    threshold {}, test-time flips {flips}, keep clicked components {}",
        m.threshold,
        if keep { "yes" } else { "no" }
    );
    println!(
        "volume       {:?} voxels, spacing {:.3?} mm",
        vol.geom.dims, sp
    );
    println!(
        "timings      model open {:.3} s, volume load {:.3} s, write {:.3} s",
        t_model.as_secs_f64(),
        t_load.as_secs_f64(),
        t_write.as_secs_f64()
    );
    for (i, (what, t)) in times.iter().enumerate() {
        println!(
            "{:<12} {:.3} s",
            format!("{what} {}", i + 1),
            t.as_secs_f64()
        );
    }
    if res.zoom > 0.0 {
        println!(
            "zoom         {}x the model's spacing answered (zoom-out up to {}x)",
            res.zoom,
            seg.zoom_out()
        );
    }
    println!(
        "mask         {} voxels = {:.2} ml -> {}",
        res.voxels,
        ml,
        args.out.display()
    );
    if let Some(path) = &args.truth {
        let truth = read_on_grid("--truth", path, &vol)?;
        let t = truth.to_vec();
        let (mut both, mut ours, mut theirs) = (0usize, 0usize, 0usize);
        for (m, t) in mask.iter().zip(&t) {
            let (m, t) = (*m > 0, *t > 0.5);
            both += (m && t) as usize;
            ours += m as usize;
            theirs += t as usize;
        }
        let d = if ours + theirs == 0 {
            1.0
        } else {
            2.0 * both as f64 / (ours + theirs) as f64
        };
        println!(
            "dice         {d:.4} against {} ({theirs} voxels)",
            path.display()
        );
    }
    if m.frame.mode == "array" {
        println!("note         this model works on the file's array order (\"array\" frame): results depend on how the file is stored");
    }
    Ok(())
}
