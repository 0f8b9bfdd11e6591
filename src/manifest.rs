//! The model package's manifest (`sam3d-model.json`, contract in docs/model-package.md), validated at load.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{err, Result, Sam3dStatus};
use crate::limits::{MAX_CLICKS, MAX_CROP};

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

/// Largest manifest file read (the real ones are a few KB).
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Whether `name` is a plain relative path inside the package folder: no `..`, no root, no prefix.
fn is_inside_name(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty()
        && !name.contains('\0')
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

impl Manifest {
    /// Parse and validate a manifest's text (errors name the manifest's fields).
    pub fn parse(text: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_str(text)
            .map_err(|e| err(Sam3dStatus::BadModel, format!("{MANIFEST_FILE}: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    pub fn crop(&self) -> Result<usize> {
        self.architecture
            .get("crop")
            .and_then(|v| v.as_u64())
            .map(|c| c as usize)
            .filter(|&c| c > 0 && c <= MAX_CROP)
            .ok_or_else(|| {
                err(
                    Sam3dStatus::BadModel,
                    format!(
                        "manifest: architecture.crop {} is missing or not from 1 to {MAX_CROP}",
                        self.architecture
                            .get("crop")
                            .map(|v| v.to_string())
                            .unwrap_or_default()
                    ),
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

    fn validate(&self) -> Result<()> {
        let bad = |msg: String| err(Sam3dStatus::BadModel, format!("{MANIFEST_FILE}: {msg}"));
        if self.format != FORMAT {
            return Err(bad(format!("format is {:?}, not {FORMAT:?}", self.format)));
        }
        if self.format_version != FORMAT_VERSION {
            return Err(err(
                Sam3dStatus::UnsupportedFormat,
                format!(
                    "{MANIFEST_FILE}: format_version {} is not supported (this library reads {FORMAT_VERSION})",
                    self.format_version
                ),
            ));
        }
        self.crop()?;
        self.frame_mode()?;
        if self.spacing_mm.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(bad("spacing_mm must be positive".into()));
        }
        let i = &self.intensity;
        // negated comparisons: NaN fails them too
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(i.clip[0] < i.clip[1]) || !(i.std > 0.0) || !i.mean.is_finite() {
            return Err(bad(
                "intensity: clip must be increasing, std positive".into()
            ));
        }
        if i.nonfinite != "error" && i.nonfinite != "zero" {
            return Err(bad(format!(
                "intensity.nonfinite {:?} must be \"error\" or \"zero\"",
                i.nonfinite
            )));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(bad("threshold must lie in (0, 1)".into()));
        }
        if !crate::refine::FLIP_COUNTS.contains(&self.inference.test_time_flips) {
            return Err(bad(format!(
                "inference.test_time_flips must be one of {:?}",
                crate::refine::FLIP_COUNTS
            )));
        }
        if !self.prompts.positive_points || self.prompts.max_points == 0 {
            return Err(bad("the engine needs positive point prompts".into()));
        }
        if self.prompts.max_points > MAX_CLICKS {
            return Err(bad(format!(
                "prompts.max_points {} exceeds the limit of {MAX_CLICKS}",
                self.prompts.max_points
            )));
        }
        let enc = &self.graphs.encoder;
        let dec = &self.graphs.decoder;
        if enc.inputs.len() != 1 || enc.inputs[0].name != "crop" {
            return Err(bad("encoder must have the single input `crop`".into()));
        }
        for o in &enc.outputs {
            if !dec.inputs.iter().any(|i| i.name == o.name) {
                return Err(bad(format!(
                    "decoder lacks input `{}` for the encoder's output",
                    o.name
                )));
            }
        }
        if !dec.inputs.iter().any(|i| i.name == "points")
            || !dec.outputs.iter().any(|o| o.name == "prob")
        {
            return Err(bad("decoder must take `points` and give `prob`".into()));
        }
        // the declared interface must agree with the crop before any graph is loaded
        let crop = self.crop()? as i64;
        let declared = |specs: &[TensorSpec], name: &str| {
            specs.iter().find(|t| t.name == name).map(|t| {
                t.shape
                    .iter()
                    .map(|d| d.as_i64().unwrap_or(-1))
                    .collect::<Vec<_>>()
            })
        };
        for (what, got, want) in [
            (
                "encoder input `crop`",
                declared(&enc.inputs, "crop"),
                vec![1, 1, crop, crop, crop],
            ),
            (
                "decoder output `prob`",
                declared(&dec.outputs, "prob"),
                vec![1, crop, crop, crop],
            ),
        ] {
            if let Some(got) = got {
                if !shape_fits(&got, &want) {
                    return Err(bad(format!(
                        "{what} has shape {got:?}, the crop of {crop} needs {want:?}"
                    )));
                }
            }
        }
        for g in [enc, dec] {
            for f in std::iter::once(&g.file).chain(g.data_files.iter()) {
                if !g.sha256.contains_key(f) {
                    return Err(bad(format!("no sha256 for {f}")));
                }
            }
            for (f, digest) in &g.sha256 {
                if !is_inside_name(f) {
                    return Err(bad(format!(
                        "file name {f:?} is not a plain relative path inside the package"
                    )));
                }
                if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(format!("sha256 of {f} is not 64 hexadecimal digits")));
                }
            }
        }
        Ok(())
    }
}

/// Whether a shape matches `want`, where -1 (a symbolic dimension) matches anything.
pub fn shape_fits(got: &[i64], want: &[i64]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(g, w)| *g < 0 || g == w)
}

/// SHA-256 of a regular file, as lowercase hex (a FIFO or device put in a file's place is refused,
/// never waited on).
pub fn sha256_file(path: &Path) -> Result<String> {
    let (mut f, _) = crate::files::open_regular(path)
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
    Ok(hex(&h.finalize()))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A small regular file's text (the manifest): refuses FIFOs, folders and files over the limit.
fn read_small(path: &Path) -> std::result::Result<String, String> {
    let (mut f, len) = crate::files::open_regular(path)?;
    if len > MAX_MANIFEST_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have",
            len
        ));
    }
    let mut text = String::new();
    f.by_ref()
        .take(MAX_MANIFEST_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
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
        let in_dir =
            |e: crate::error::Error| err(e.status, format!("{}: {}", dir.display(), e.message));
        // every file is checked to lie inside the folder before any is opened or hashed: a name
        // or a symbolic link must not make the library read (or print the digest of) another file
        let root = dir
            .canonicalize()
            .map_err(|e| bad(dir, format!("cannot open the package folder: {e}")))?;
        let inside = |file: &str, what: &str| -> Result<PathBuf> {
            let real = dir
                .join(file)
                .canonicalize()
                .map_err(|_| bad(dir, format!("{what} {file} is missing")))?;
            if !real.starts_with(&root) {
                return Err(bad(
                    dir,
                    format!("{what} {file} resolves to a place outside the package folder"),
                ));
            }
            Ok(real)
        };
        let manifest_path = inside(MANIFEST_FILE, "the manifest")?;
        let text = read_small(&manifest_path)
            .map_err(|m| bad(dir, format!("cannot read {MANIFEST_FILE}: {m}")))?;
        let manifest = Manifest::parse(&text).map_err(in_dir)?;
        let mut files = Vec::new();
        for g in [&manifest.graphs.encoder, &manifest.graphs.decoder] {
            for (file, want) in &g.sha256 {
                let real = inside(file, "graph file")?;
                if !real.is_file() {
                    return Err(bad(dir, format!("graph file {file} is not a regular file")));
                }
                files.push((real, want));
            }
        }
        if verify {
            for (p, want) in files {
                let got = sha256_file(&p)?;
                if !got.eq_ignore_ascii_case(want) {
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
        // the digest of the bytes parsed, not of a second read of the file
        let hash = hex(&Sha256::digest(text.as_bytes()));
        Ok(Package {
            dir: dir.to_path_buf(),
            manifest,
            hash,
        })
    }
}
