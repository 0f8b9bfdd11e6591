//! The checked-in C header is the API reference: it equals what cbindgen generates from src/ffi/
//! (`make header`), and every C-visible item in it carries documentation.

const HEADER: &str = include_str!("../include/sam3d.h");

#[test]
fn checked_in_header_matches_generated() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/sam3d.h"));
    assert!(
        generated == HEADER,
        "include/sam3d.h is stale: run `make header` and commit it"
    );
}

/// Every macro the header defines carries the library's prefix (an engine constant leaking out
/// as `MAX_THREADS` would collide with the host's own names).
#[test]
fn every_macro_is_prefixed() {
    let bare: Vec<&str> = HEADER
        .lines()
        .filter(|l| l.starts_with("#define ") && !l.starts_with("#define SAM3D_"))
        .collect();
    assert!(bare.is_empty(), "unprefixed macros: {bare:?}");
}

/// Every function, struct field, enum constant, typedef and macro is preceded by a doc comment,
/// and every function that returns a status says which ones (`@return`).
#[test]
fn every_c_visible_item_is_documented() {
    let lines: Vec<&str> = HEADER.lines().collect();
    let mut undocumented = Vec::new();
    let mut no_statuses = Vec::new();
    let mut doc_start = None;
    for (n, raw) in lines.iter().enumerate() {
        let line = raw.trim();
        if line.starts_with("/**") {
            doc_start = Some(n);
        }
        let is_item = !line.is_empty()
            && !line.starts_with("/*")
            && !line.starts_with('*')
            && !line.starts_with('}')
            && !line.starts_with("#include")
            && !line.starts_with("#if")
            && !line.starts_with("#endif")
            && !line.starts_with("extern \"C\"")
            && !(line.starts_with("#define SAM3D_H"))
            && !(line.starts_with("#define SAM3D_VERSION_"))
            // continuation lines of a multi-line declaration
            && !(n > 0 && !lines[n - 1].trim().ends_with(['{', ';', '/'])
                && !lines[n - 1].trim().is_empty()
                && !lines[n - 1].trim().starts_with('#'));
        if !is_item {
            continue;
        }
        let documented = n > 0 && lines[n - 1].trim() == "*/";
        if !documented {
            undocumented.push(format!("{}: {line}", n + 1));
            continue;
        }
        let is_function = line.contains('(') && !line.starts_with("typedef");
        if is_function && line.trim_start_matches("enum ").starts_with("Sam3dStatus ") {
            let doc = lines[doc_start.unwrap_or(0)..n].join("\n");
            if !doc.contains("@return") {
                no_statuses.push(format!("{}: {line}", n + 1));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "C-visible items without a doc comment (document them in src/ffi/):\n{}",
        undocumented.join("\n")
    );
    assert!(
        no_statuses.is_empty(),
        "exports whose docs do not list their statuses (@return):\n{}",
        no_statuses.join("\n")
    );
}
