"""From a `Sam3D` to a model package and back: the exported graphs (`graphs`), package writing
(`package`), checkpoint conversion (`convert`), int8 and fp16 variants (`quantize`, `int8`, `fp16`),
the engine's fixture packages (`fixtures`) and a package back to PyTorch (`package_import`)."""
