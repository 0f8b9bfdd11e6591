//! The model package's manifest (`sam3d-model.json`, contract in `onnx/README.md`), validated at load.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{err, Result, Sam3dStatus};

pub const FORMAT: &str = "sam3d-model";
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "sam3d-model.json";

#[derive(Debug, Clone, Deserialize)]
pub struct Frame {
    pub mode: String,
    pub orientation: Option<String>,
    pub array_transpose: Option<[usize; 3]>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Intensity {
    pub clip: [f64; 2],
    pub mean: f64,
    pub std: f64,
    #[serde(default = "default_nonfinite")]
    pub nonfinite: String,
}

fn default_nonfinite() -> String {
    "error".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct Prompts {
    pub positive_points: bool,
    #[serde(default)]
    pub negative_points: bool,
    #[serde(default)]
    pub boxes: bool,
    pub max_points: usize,
}

/// Optional refinements the package's authors chose on training data (absent: none). A host may
/// change them per session (`sam3d_session_set_inference`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Inference {
    /// crop flips averaged per click (1, 2, 4 or 8; `refine::FLIP_COUNTS`)
    pub test_time_flips: u32,
    /// keep only the mask's components that contain a click
    pub keep_clicked_components: bool,
}

impl Default for Inference {
    fn default() -> Self {
        Inference {
            test_time_flips: 1,
            keep_clicked_components: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GraphSpec {
    pub file: String,
    #[serde(default)]
    pub data_files: Vec<String>,
    pub sha256: BTreeMap<String, String>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Graphs {
    pub encoder: GraphSpec,
    pub decoder: GraphSpec,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub licence: String,
    #[serde(default)]
    pub provenance: String,
    pub architecture: serde_json::Map<String, serde_json::Value>,
    pub frame: Frame,
    pub spacing_mm: [f64; 3],
    pub intensity: Intensity,
    #[serde(default)]
    pub pad_value_normalised: f64,
    pub threshold: f64,
    #[serde(default)]
    pub inference: Inference,
    pub prompts: Prompts,
    pub opset: u32,
    pub graphs: Graphs,
}

fn bad(dir: &Path, msg: impl std::fmt::Display) -> crate::error::Error {
    err(Sam3dStatus::BadModel, format!("{}: {}", dir.display(), msg))
}

/// Which frame the model works in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FrameMode {
    /// Reorient by permutation and flips so that (D, H, W) increase towards these LPS unit vectors.
    Orient([[f64; 3]; 3]),
    /// No reorientation: the file's array (i, j, k) transposed by this permutation.
    Array([usize; 3]),
}

/// LPS unit vector of an ITK-style orientation letter (the direction an axis increases towards).
fn letter_lps(c: char) -> Option<[f64; 3]> {
    Some(match c {
        'L' => [1.0, 0.0, 0.0],
        'R' => [-1.0, 0.0, 0.0],
        'P' => [0.0, 1.0, 0.0],
        'A' => [0.0, -1.0, 0.0],
        'S' => [0.0, 0.0, 1.0],
        'I' => [0.0, 0.0, -1.0],
        _ => return None,
    })
}

impl Manifest {
    pub fn crop(&self) -> Result<usize> {
        self.architecture
            .get("crop")
            .and_then(|v| v.as_u64())
            .map(|c| c as usize)
            .filter(|&c| c > 0 && c <= 1024)
            .ok_or_else(|| {
                err(
                    Sam3dStatus::BadModel,
                    "manifest: architecture.crop missing or invalid",
                )
            })
    }

    pub fn frame_mode(&self) -> Result<FrameMode> {
        match self.frame.mode.as_str() {
            "orient" => {
                let code = self.frame.orientation.as_deref().unwrap_or("");
                let v: Vec<[f64; 3]> = code.chars().filter_map(letter_lps).collect();
                let axes: Vec<usize> = v
                    .iter()
                    .map(|u| u.iter().position(|x| *x != 0.0).unwrap())
                    .collect();
                if code.len() != 3
                    || v.len() != 3
                    || axes[0] == axes[1]
                    || axes[1] == axes[2]
                    || axes[0] == axes[2]
                {
                    return Err(err(
                        Sam3dStatus::BadModel,
                        format!(
                            "manifest: orientation {code:?} is not a 3-letter code like \"RAS\""
                        ),
                    ));
                }
                Ok(FrameMode::Orient([v[0], v[1], v[2]]))
            }
            "array" => {
                let t = self.frame.array_transpose.ok_or_else(|| {
                    err(
                        Sam3dStatus::BadModel,
                        "manifest: array mode needs array_transpose",
                    )
                })?;
                let mut seen = [false; 3];
                for &a in &t {
                    if a > 2 || seen[a] {
                        return Err(err(
                            Sam3dStatus::BadModel,
                            format!("manifest: array_transpose {t:?} is not a permutation"),
                        ));
                    }
                    seen[a] = true;
                }
                Ok(FrameMode::Array(t))
            }
            m => Err(err(
                Sam3dStatus::BadModel,
                format!("manifest: unknown frame mode {m:?}"),
            )),
        }
    }

    fn validate(&self, dir: &Path) -> Result<()> {
        if self.format != FORMAT {
            return Err(bad(
                dir,
                format!("format is {:?}, not {FORMAT:?}", self.format),
            ));
        }
        if self.format_version != FORMAT_VERSION {
            return Err(err(
                Sam3dStatus::UnsupportedFormat,
                format!(
                    "{}: format_version {} is not supported (this library reads {FORMAT_VERSION})",
                    dir.display(),
                    self.format_version
                ),
            ));
        }
        self.crop()?;
        self.frame_mode()?;
        if self.spacing_mm.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(bad(dir, "spacing_mm must be positive"));
        }
        let i = &self.intensity;
        // negated comparisons: NaN fails them too
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(i.clip[0] < i.clip[1]) || !(i.std > 0.0) || !i.mean.is_finite() {
            return Err(bad(dir, "intensity: clip must be increasing, std positive"));
        }
        if i.nonfinite != "error" && i.nonfinite != "zero" {
            return Err(bad(
                dir,
                format!(
                    "intensity.nonfinite {:?} must be \"error\" or \"zero\"",
                    i.nonfinite
                ),
            ));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(bad(dir, "threshold must lie in (0, 1)"));
        }
        if !crate::refine::FLIP_COUNTS.contains(&self.inference.test_time_flips) {
            return Err(bad(
                dir,
                format!(
                    "inference.test_time_flips must be one of {:?}",
                    crate::refine::FLIP_COUNTS
                ),
            ));
        }
        if !self.prompts.positive_points || self.prompts.max_points == 0 {
            return Err(bad(dir, "the engine needs positive point prompts"));
        }
        let enc = &self.graphs.encoder;
        let dec = &self.graphs.decoder;
        if enc.inputs.len() != 1 || enc.inputs[0].name != "crop" {
            return Err(bad(dir, "encoder must have the single input `crop`"));
        }
        for o in &enc.outputs {
            if !dec.inputs.iter().any(|i| i.name == o.name) {
                return Err(bad(
                    dir,
                    format!("decoder lacks input `{}` for the encoder's output", o.name),
                ));
            }
        }
        if !dec.inputs.iter().any(|i| i.name == "points")
            || !dec.outputs.iter().any(|o| o.name == "prob")
        {
            return Err(bad(dir, "decoder must take `points` and give `prob`"));
        }
        for g in [enc, dec] {
            for f in std::iter::once(&g.file).chain(g.data_files.iter()) {
                if !g.sha256.contains_key(f) {
                    return Err(bad(dir, format!("no sha256 for {f}")));
                }
            }
        }
        Ok(())
    }
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| err(Sam3dStatus::BadModel, format!("{}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| err(Sam3dStatus::Io, format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A loaded package directory: its manifest, with every file checked against its SHA-256.
#[derive(Debug, Clone)]
pub struct Package {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// SHA-256 of the manifest file itself: identifies the package as a whole.
    pub hash: String,
}

impl Package {
    pub fn open(dir: &Path, verify: bool) -> Result<Package> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad(dir, format!("cannot read {MANIFEST_FILE}: {e}")))?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| bad(dir, format!("{MANIFEST_FILE}: {e}")))?;
        manifest.validate(dir)?;
        for g in [&manifest.graphs.encoder, &manifest.graphs.decoder] {
            for (file, want) in &g.sha256 {
                let p = dir.join(file);
                if !p.is_file() {
                    return Err(bad(dir, format!("graph file {file} is missing")));
                }
                if verify {
                    let got = sha256_file(&p)?;
                    if &got != want {
                        return Err(err(
                            Sam3dStatus::HashMismatch,
                            format!(
                                "{}: sha256 {got} does not match the manifest's {want}",
                                p.display()
                            ),
                        ));
                    }
                }
            }
        }
        let hash = sha256_file(&path)?;
        Ok(Package {
            dir: dir.to_path_buf(),
            manifest,
            hash,
        })
    }
}
