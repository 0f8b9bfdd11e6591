//! The engine's side of `make bench`: times model open, NIfTI load, the first click (resample,
//! encode, decode, paste-back) and follow-up clicks, and prints one JSON record (medians).
//!
//! bench --model DIR --input CT.nii.gz --click I,J,K [--repeat N] [--threads N] [--ort LIB] (all: --help)

use std::sync::Arc;
use std::time::Instant;

use sam3d::{load_runtime, read_nifti, Model, Segmenter, Volume};
use sam3d::{Coord, Device, GpuOptions, ModelOptions, Stage};

/// `x` with `decimals` decimals as a JSON number, or null where it is not finite (a stage that
/// never ran has a NaN median; JSON has no spelling for it).
fn num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "null".into()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

const USAGE: &str = "usage: bench --model DIR --input VOL.nii[.gz] --click I,J,K [--repeat N] [--threads N] \
[--ort LIB] [--device cpu|cuda|tensorrt|openvino] [--bf16] [--gpu-mem-limit-mb MB] [--trt-cache DIR] [--trt-fp16] [--cuda-tf32] \
[--flips 1|2|4|8] [--keep-clicked 0|1] [--zoom-out 1|2|4] [--click-thread opening|pool] [--warm-up]";

/// A command-line mistake: the message and the usage on stderr, exit status 2 (no panic trace).
fn usage_error(msg: &str) -> ! {
    eprintln!("bench: {msg}\n{USAGE}");
    std::process::exit(2)
}

/// `v` parsed as a T, or a usage error naming the flag.
fn parsed<T: std::str::FromStr>(flag: &str, v: &str) -> T {
    v.parse()
        .unwrap_or_else(|_| usage_error(&format!("{flag}: cannot read {v:?}")))
}

/// Per-session timings: stage durations, first and follow-up clicks, peak RSS after the first.
struct Sessions {
    stages: Vec<Vec<f64>>,
    first: Vec<f64>,
    follow: Vec<f64>,
    first_rss: Option<f64>,
}

/// `repeat` segmenter sessions, each a first click (a new encoding) and a follow-up click.
fn sessions(
    model: Arc<Model>,
    vol: Arc<Volume>,
    click: [f64; 3],
    repeat: usize,
    flips: u32,
    keep_clicked: bool,
    zoom_out: u32,
) -> Sessions {
    // stage durations from the progress callback: (stage, start) -> end
    let mut stages: Vec<Vec<f64>> = vec![vec![]; 5];
    let (mut first, mut follow) = (vec![], vec![]);
    let mut first_rss = None;
    for _ in 0..repeat.max(1) {
        let mut seg = Segmenter::new(model.clone(), vol.clone()).expect("session");
        seg.set_inference(flips, keep_clicked).expect("--flips");
        seg.set_zoom_out(zoom_out).expect("--zoom-out");
        let obj = seg.add_object();
        let mut started = [None::<Instant>; 5];
        let mut record = |s: Stage, done: bool| {
            let i = s as usize;
            if done {
                if let Some(t0) = started[i] {
                    stages[i].push(t0.elapsed().as_secs_f64());
                }
            } else {
                started[i] = Some(Instant::now());
            }
        };
        let t = Instant::now();
        let r = seg
            .click(obj, click, Coord::Ijk, &mut record)
            .expect("click");
        first.push(t.elapsed().as_secs_f64());
        assert!(r.encoded);
        // a follow-up click one voxel away: served by the cached encoding (decoder + paste-back)
        let t = Instant::now();
        let near = [click[0] + 1.0, click[1], click[2]];
        let r = seg
            .click(obj, near, Coord::Ijk, &mut |_, _| {})
            .expect("click");
        follow.push(t.elapsed().as_secs_f64());
        assert!(!r.encoded);
        // the peak after one session: later sessions (new encodings) should not raise it much
        first_rss.get_or_insert_with(peak_rss_mb);
    }
    Sessions {
        stages,
        first,
        follow,
        first_rss,
    }
}

/// The sessions' job, run on a thread started before the model opens, as a host's worker pool
/// would (`--click-thread pool`): ONNX Runtime gives the thread that opens the process's first
/// session a floating-point mode that a thread started earlier lacks (`src/fpmode.rs`).
type Job = Box<dyn FnOnce() -> Sessions + Send>;

fn main() {
    let mut model_dir = String::new();
    let mut input = String::new();
    let mut click = [0.0f64; 3];
    let (mut repeat, mut threads, mut ort) = (3usize, 0usize, None::<String>);
    let (mut device, mut gpu) = (Device::Cpu, GpuOptions::default());
    // test-time flips and the component rule: the package's unless given
    let (mut flips, mut keep_clicked) = (None::<u32>, None::<bool>);
    // automatic zoom-out: the engine's default unless given
    let mut zoom_out = 4u32;
    // clicks on the thread that opened the model, or on one started before it (--click-thread)
    let mut pool_thread = false;
    // a warm-up (`Model::warm_up`) after the model opens, before the volume loads
    let mut warm_up = false;
    // OpenVINO in bf16 where the CPU has it
    let mut bf16 = false;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        // flags without a value
        let flag = match k.as_str() {
            "--trt-fp16" => Some(&mut gpu.fp16),
            "--cuda-tf32" => Some(&mut gpu.tf32),
            "--bf16" => Some(&mut bf16),
            "--warm-up" => Some(&mut warm_up),
            _ => None,
        };
        if let Some(flag) = flag {
            *flag = true;
            continue;
        }
        if k == "-h" || k == "--help" {
            println!("{USAGE}");
            return;
        }
        let v = it
            .next()
            .unwrap_or_else(|| usage_error(&format!("{k} needs a value")));
        match k.as_str() {
            "--device" => device = v.parse().unwrap_or_else(|e| usage_error(&format!("--{e}"))),
            "--trt-cache" => gpu.trt_cache_dir = Some(v.into()),
            "--gpu-mem-limit-mb" => gpu.memory_limit = parsed::<usize>(&k, &v) << 20,
            "--model" => model_dir = v,
            "--input" => input = v,
            "--click" => {
                let p: Vec<f64> = v.split(',').map(|x| parsed(&k, x)).collect();
                if p.len() != 3 {
                    usage_error("--click takes I,J,K");
                }
                click = [p[0], p[1], p[2]];
            }
            "--repeat" => repeat = parsed(&k, &v),
            "--flips" => flips = Some(parsed(&k, &v)),
            "--zoom-out" => zoom_out = parsed(&k, &v),
            "--keep-clicked" => keep_clicked = Some(v == "1"),
            "--threads" => threads = parsed(&k, &v),
            "--ort" => ort = Some(v),
            "--click-thread" => {
                pool_thread = match v.as_str() {
                    "opening" => false,
                    "pool" => true,
                    _ => usage_error("--click-thread takes opening or pool"),
                }
            }
            _ => usage_error(&format!("unknown argument {k}")),
        }
    }
    if model_dir.is_empty() || input.is_empty() {
        usage_error("--model and --input are needed");
    }
    // started before ONNX Runtime and the model, like a host's worker pool; waits for its job
    let pool = pool_thread.then(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        (tx, std::thread::spawn(move || rx.recv().map(|job| job())))
    });
    let rt = load_runtime(ort.as_deref().map(std::path::Path::new)).expect("ONNX Runtime");
    let opts = ModelOptions {
        device,
        threads,
        verify_hashes: true,
        gpu,
        bf16,
        cache_dir: None,
    };
    let (mut open, mut load) = (vec![], vec![]);
    let mut model = None;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        model = Some(Arc::new(
            Model::open(&rt, model_dir.as_ref(), &opts).expect("model"),
        ));
        open.push(t.elapsed().as_secs_f64());
    }
    let model = model.unwrap();
    let warm_up_s = warm_up.then(|| {
        let t = Instant::now();
        model.warm_up().expect("warm-up");
        t.elapsed().as_secs_f64()
    });
    // the settings every session of this run uses: the package's unless given
    let inference = &model.manifest().inference;
    let flips = flips.unwrap_or(inference.test_time_flips);
    let keep_clicked = keep_clicked.unwrap_or(inference.keep_clicked_components);
    let mut vol = None;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        vol = Some(Arc::new(read_nifti(input.as_ref()).expect("volume")));
        load.push(t.elapsed().as_secs_f64());
    }
    let vol = vol.unwrap();
    let job = {
        let (model, vol) = (model.clone(), vol.clone());
        move || sessions(model, vol, click, repeat, flips, keep_clicked, zoom_out)
    };
    let Sessions {
        stages,
        first,
        follow,
        first_rss,
    } = match pool {
        None => job(),
        Some((tx, worker)) => {
            tx.send(Box::new(job)).expect("click thread");
            worker.join().expect("click thread").expect("click thread")
        }
    };
    let names = ["load", "resample", "encode", "decode", "paste"];
    let mut stage_json: Vec<String> = (1..5)
        .map(|i| format!("\"{}_s\": {}", names[i], num(median(stages[i].clone()), 6)))
        .collect();
    // the model's first encoding pays for the memory it touches first (page faults: seconds on
    // some virtual machines); later encodings reuse the arena
    let encodes = &stages[2];
    stage_json.push(format!(
        "\"encode_first_s\": {}, \"encode_later_s\": {}",
        num(encodes.first().copied().unwrap_or(f64::NAN), 6),
        // null with one session
        num(median(encodes.get(1..).unwrap_or_default().to_vec()), 6)
    ));
    println!(
        "{{\"model\": \"{}\", \"dims\": {:?}, \"repeat\": {}, \"model_open_s\": {}, \"warm_up_s\": {}, \"nifti_load_s\": {}, \"first_click_s\": {}, \"follow_up_click_s\": {}, {}, \"peak_rss_mb\": {}, \"peak_rss_first_session_mb\": {}, \"provider\": \"{}\", \"test_time_flips\": {}, \"keep_clicked_components\": {}, \"zoom_out\": {}, \"click_thread\": \"{}\"}}",
        model.manifest().name,
        vol.geom.dims,
        repeat,
        num(median(open), 6),
        num(warm_up_s.unwrap_or(f64::NAN), 6),
        num(median(load), 6),
        num(median(first), 6),
        num(median(follow), 6),
        stage_json.join(", "),
        num(peak_rss_mb(), 1),
        num(first_rss.unwrap_or(f64::NAN), 1),
        model.provider,
        flips,
        keep_clicked,
        zoom_out,
        if pool_thread { "pool" } else { "opening" }
    );
}
