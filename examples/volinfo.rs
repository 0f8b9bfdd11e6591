//! Print a NIfTI volume as libsam3d reads it, as JSON (used by the tests to compare with nibabel).
//!
//! cargo run --example volinfo -- VOLUME.nii.gz [i,j,k ...]

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: volinfo VOLUME.nii[.gz] [i,j,k ...]");
        std::process::exit(2);
    };
    let v = match sam3d::read_nifti(std::path::Path::new(&path)) {
        Ok(v) => v,
        Err(e) => {
            println!(
                "{{\"status\": \"{}\", \"message\": {:?}}}",
                e.status.name(),
                e.message
            );
            std::process::exit(1);
        }
    };
    let data = v.to_vec();
    let sum: f64 = data.iter().map(|&x| x as f64).sum();
    let sumsq: f64 = data.iter().map(|&x| (x as f64) * (x as f64)).sum();
    let samples: Vec<String> = args
        .map(|s| {
            let p: Vec<usize> = s
                .split(',')
                .map(|x| x.parse().expect("integer index"))
                .collect();
            num(v.at(p[0], p[1], p[2]) as f64)
        })
        .collect();
    let m = v.geom.index_to_lps_matrix();
    println!(
        "{{\"status\": \"SAM3D_STATUS_OK\", \"dims\": {:?}, \"index_to_lps\": {:?}, \"sum\": {}, \"sumsq\": {}, \"samples\": [{}]}}",
        v.geom.dims,
        m,
        num(sum),
        num(sumsq),
        samples.join(", ")
    );
}

/// A JSON number, or null for NaN and infinities (a volume may hold them; JSON has no spelling
/// for them).
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}
