//! Generates the C header from the C boundary (cbindgen) into OUT_DIR; `SAM3D_WRITE_HEADER=1` also
//! writes include/sam3d.h. The checked-in header is compared with the generated one by tests/header.rs.
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("sam3d.h");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=SAM3D_WRITE_HEADER");
    let mut config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let v = |k: &str| std::env::var(k).unwrap();
    config.after_includes = Some(format!(
        "\n#define SAM3D_VERSION_MAJOR {}\n#define SAM3D_VERSION_MINOR {}\n#define SAM3D_VERSION_PATCH {}\n#define SAM3D_VERSION_STRING \"{}\"",
        v("CARGO_PKG_VERSION_MAJOR"), v("CARGO_PKG_VERSION_MINOR"), v("CARGO_PKG_VERSION_PATCH"), v("CARGO_PKG_VERSION")
    ));
    let bindings = match cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
    {
        Ok(b) => b,
        Err(e) => {
            // a syntax error in the crate is reported by rustc itself with better context
            println!("cargo:warning=cbindgen: {e}");
            return;
        }
    };
    bindings.write_to_file(&out);
    if std::env::var("SAM3D_WRITE_HEADER").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(dir.join("include")).unwrap();
        std::fs::copy(&out, dir.join("include/sam3d.h")).unwrap();
    }
    // SONAME, so hosts link against the ABI, not the file name (an ELF notion: Linux only; a
    // macOS port would set the install name, Windows has neither)
    if std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux") {
        println!(
            "cargo:rustc-cdylib-link-arg=-Wl,-soname,libsam3d.so.{}",
            v("CARGO_PKG_VERSION_MAJOR")
        );
    }
}
