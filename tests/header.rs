//! The checked-in C header equals the one cbindgen generates from src/ffi.rs (`make header`).
#[test]
fn checked_in_header_matches_generated() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/sam3d.h"));
    let checked_in = include_str!("../include/sam3d.h");
    assert!(
        generated == checked_in,
        "include/sam3d.h is stale: run `make header` and commit it"
    );
}
