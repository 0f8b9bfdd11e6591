//! The engine's unit tests that need ONNX Runtime: a tiny ONNX model written by hand (a few
//! protocol-buffer fields) to check how runs treat the calling thread's floating-point mode.

use super::providers::make_session;
use super::{flushing, ModelOptions};
use ort::value::TensorRef;

/// A protocol-buffer field's value: a varint or length-delimited bytes.
#[derive(Clone, Copy)]
enum F<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

fn field(out: &mut Vec<u8>, number: u64, value: F) {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    match value {
        F::Int(v) => {
            varint(out, number << 3);
            varint(out, v);
        }
        F::Bytes(bytes) => {
            varint(out, number << 3 | 2);
            varint(out, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
    }
}

fn message(fields: &[(u64, F)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        field(&mut out, *n, *v);
    }
    out
}

/// ONNX model `y = x * x`, x and y float32 of shape (4,) (onnx.proto field numbers).
fn square_model() -> Vec<u8> {
    let dim = message(&[(1, F::Int(4))]); // Dimension.dim_value
    let shape = message(&[(1, F::Bytes(&dim))]); // TensorShapeProto.dim
    let tensor = message(&[(1, F::Int(1)), (2, F::Bytes(&shape))]); // elem_type FLOAT, shape
    let ty = message(&[(1, F::Bytes(&tensor))]); // TypeProto.tensor_type
    let info = |name: &[u8]| message(&[(1, F::Bytes(name)), (2, F::Bytes(&ty))]);
    let node = message(&[
        (1, F::Bytes(b"x")),
        (1, F::Bytes(b"x")),
        (2, F::Bytes(b"y")),
        (4, F::Bytes(b"Mul")),
    ]);
    let graph = message(&[
        (1, F::Bytes(&node)),
        (2, F::Bytes(b"square")),
        (11, F::Bytes(&info(b"x"))),
        (12, F::Bytes(&info(b"y"))),
    ]);
    let opset = message(&[(2, F::Int(13))]);
    message(&[(1, F::Int(8)), (7, F::Bytes(&graph)), (8, F::Bytes(&opset))])
}

/// A run flushes subnormals on the calling thread, whichever thread that is, and leaves the
/// thread's mode as it was; ONNX Runtime alone does not (the premise, checked too). One
/// intra-op thread, so the calling thread computes the product.
#[test]
fn runs_flush_subnormals_on_the_calling_thread() {
    let Ok(rt) = crate::runtime::load(None) else {
        panic!("ONNX Runtime: run `make ort` and set SAM3D_ORT_LIBRARY");
    };
    let file = std::env::temp_dir().join(format!("sam3d-square-{}.onnx", std::process::id()));
    std::fs::write(&file, square_model()).unwrap();
    let opts = ModelOptions {
        threads: 1,
        ..Default::default()
    };
    let made = make_session(&rt, &file, &opts, false);
    std::fs::remove_file(&file).ok();
    let (mut session, _, _) = made.unwrap();
    std::thread::spawn(move || {
        let before = crate::fpmode::mode();
        let x = [1e-20f32, 2e-20, 3e-20, 1.0];
        let mut square = |flush: bool| -> Vec<f32> {
            let input = TensorRef::from_array_view(([4i64], &x[..])).unwrap();
            let run = || {
                session.run(ort::inputs!["x" => input]).unwrap()["y"]
                    .try_extract_tensor::<f32>()
                    .unwrap()
                    .1
                    .to_vec()
            };
            if flush {
                flushing(run)
            } else {
                run()
            }
        };
        let plain = square(false);
        assert!(
            plain[0] > 0.0 && plain[0] < f32::MIN_POSITIVE,
            "premise: subnormal {plain:?}"
        );
        assert_eq!(square(true), vec![0.0, 0.0, 0.0, 1.0]);
        assert_eq!(
            crate::fpmode::mode(),
            before,
            "the thread's mode is restored"
        );
    })
    .join()
    .unwrap();
}
