/* Table-driven tests of libsam3d's C API: every bad input gets its own status and a message; the
 * good path works on a borrowed buffer; free(NULL) is a no-op. Built with -Wall -Wextra -Werror
 * and run once more under AddressSanitizer + UndefinedBehaviorSanitizer (see Makefile).
 *   test_c_api MODEL_DIR WORK_DIR        (SAM3D_ORT_LIBRARY points at ONNX Runtime) */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

#include "sam3d.h"

static int passed = 0, failed = 0;

static void expect(const char *what, Sam3dStatus got, Sam3dStatus want) {
    const char *msg = sam3d_last_error();
    int ok = got == want && (want == SAM3D_STATUS_OK || (msg != NULL && msg[0] != '\0'));
    if (ok) {
        passed++;
    } else {
        failed++;
        fprintf(stderr, "FAIL %s: got %s, want %s (message: \"%s\")\n", what, sam3d_status_name(got),
                sam3d_status_name(want), msg ? msg : "(null)");
    }
}

static void check(const char *what, int cond) {
    if (cond) {
        passed++;
    } else {
        failed++;
        fprintf(stderr, "FAIL %s\n", what);
    }
}

/* a NIfTI-1 header: dims, datatype int16, vox_offset 352; then `data_bytes` zero bytes */
static void write_nifti(const char *path, int nx, int ny, int nz, size_t data_bytes) {
    unsigned char h[352];
    memset(h, 0, sizeof h);
    int32_t sizeof_hdr = 348;
    memcpy(h, &sizeof_hdr, 4);
    int16_t dim[8] = {3, (int16_t)nx, (int16_t)ny, (int16_t)nz, 1, 1, 1, 1};
    memcpy(h + 40, dim, sizeof dim);
    int16_t datatype = 4, bitpix = 16;
    memcpy(h + 70, &datatype, 2);
    memcpy(h + 72, &bitpix, 2);
    float pixdim[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    memcpy(h + 76, pixdim, sizeof pixdim);
    float vox_offset = 352;
    memcpy(h + 108, &vox_offset, 4);
    memcpy(h + 344, "n+1", 4);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(h, 1, sizeof h, f);
    for (size_t i = 0; i < data_bytes; i++) fputc(0, f);
    fclose(f);
}

static Sam3dGeometry geometry(uint64_t nx, uint64_t ny, uint64_t nz) {
    Sam3dGeometry g;
    memset(&g, 0, sizeof g);
    g.dims[0] = nx;
    g.dims[1] = ny;
    g.dims[2] = nz;
    g.spacing[0] = g.spacing[1] = 1.5;
    g.spacing[2] = 2.5;
    g.direction[0] = g.direction[4] = g.direction[8] = 1.0;
    return g;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL_DIR WORK_DIR\n", argv[0]);
        return 2;
    }
    const char *model_dir = argv[1];
    char path[4096];

    /* --- a missing ONNX Runtime (first: the runtime loads once per process) */
    char ort[4096] = "";
    const char *env = getenv("SAM3D_ORT_LIBRARY");
    if (env) snprintf(ort, sizeof ort, "%s", env);
    unsetenv("SAM3D_ORT_LIBRARY");
    unsetenv("ORT_DYLIB_PATH");
    Sam3dRuntime *rt = NULL;
    expect("runtime: missing library", sam3d_runtime_new(SAM3D_ABI_VERSION, "/nonexistent/libonnxruntime.so", &rt), SAM3D_STATUS_RUNTIME_MISSING);
    check("runtime: message lists the path tried", strstr(sam3d_last_error(), "/nonexistent/libonnxruntime.so") != NULL);
    check("runtime: output untouched on failure", rt == NULL);
    expect("runtime: NULL out", sam3d_runtime_new(SAM3D_ABI_VERSION, NULL, NULL), SAM3D_STATUS_NULL_POINTER);
    expect("runtime: another ABI", sam3d_runtime_new(SAM3D_ABI_VERSION + 1, NULL, &rt), SAM3D_STATUS_ABI_MISMATCH);
    check("runtime: output untouched on an ABI mismatch", rt == NULL);
    expect("runtime: load", sam3d_runtime_new(SAM3D_ABI_VERSION, ort[0] ? ort : NULL, &rt), SAM3D_STATUS_OK);
    if (!rt) {
        fprintf(stderr, "cannot continue without ONNX Runtime\n");
        return 1;
    }

    /* --- the memory budget: settable, 0 restores the default; a file beyond it is refused */
    check("budget: default", sam3d_memory_budget() == SAM3D_DEFAULT_MEMORY_BUDGET);
    sam3d_set_memory_budget(1000);
    check("budget: set", sam3d_memory_budget() == 1000);
    snprintf(path, sizeof path, "%s/budget.nii", argv[2]);
    write_nifti(path, 20, 20, 20, 20 * 20 * 20 * 2);
    Sam3dVolume *over = NULL;
    expect("budget: volume beyond it", sam3d_volume_read_nifti(path, &over), SAM3D_STATUS_TOO_LARGE);
    check("budget: message names the budget", strstr(sam3d_last_error(), "memory budget") != NULL);
    sam3d_set_memory_budget(0);
    check("budget: 0 restores the default", sam3d_memory_budget() == SAM3D_DEFAULT_MEMORY_BUDGET);
    expect("budget: volume within it", sam3d_volume_read_nifti(path, &over), SAM3D_STATUS_OK);
    sam3d_volume_free(over);
    check("status name: BUSY", strcmp(sam3d_status_name(SAM3D_STATUS_BUSY), "SAM3D_STATUS_BUSY") == 0);

    /* --- models */
    Sam3dModel *model = NULL;
    expect("model: NULL runtime", sam3d_model_open(NULL, model_dir, NULL, &model), SAM3D_STATUS_NULL_POINTER);
    expect("model: NULL dir", sam3d_model_open(rt, NULL, NULL, &model), SAM3D_STATUS_NULL_POINTER);
    expect("model: no package", sam3d_model_open(rt, "/nonexistent-package", NULL, &model), SAM3D_STATUS_BAD_MODEL);
    snprintf(path, sizeof path, "%s/badhash", argv[2]); /* prepared by the Makefile: bytes changed */
    expect("model: wrong hash", sam3d_model_open(rt, path, NULL, &model), SAM3D_STATUS_HASH_MISMATCH);
    snprintf(path, sizeof path, "%s/nograph", argv[2]); /* prepared by the Makefile: encoder.onnx removed */
    expect("model: missing graph", sam3d_model_open(rt, path, NULL, &model), SAM3D_STATUS_BAD_MODEL);
    check("model: message names the missing graph", strstr(sam3d_last_error(), "encoder.onnx") != NULL);
    check("model: output untouched on failure", model == NULL);
    Sam3dModelOptions opts = {0, 7, 1, 0, 0, NULL};
    expect("model: struct_size 0", sam3d_model_open(rt, model_dir, &opts, &model), SAM3D_STATUS_ABI_MISMATCH);
    check("model: the message says what to set", strstr(sam3d_last_error(), "sizeof(Sam3dModelOptions)") != NULL);
    opts.struct_size = (uint32_t)sizeof opts;
    expect("model: bad device", sam3d_model_open(rt, model_dir, &opts, &model), SAM3D_STATUS_INVALID_ARGUMENT);
    opts.device = SAM3D_DEVICE_CPU;
    opts.threads = SAM3D_MAX_THREADS + 1;
    expect("model: threads beyond the limit", sam3d_model_open(rt, model_dir, &opts, &model), SAM3D_STATUS_INVALID_ARGUMENT);
    opts.threads = 1;
    opts.device = SAM3D_DEVICE_CUDA; /* no GPU here: falls back to CPU with a reason */
    expect("model: open (CUDA requested)", sam3d_model_open(rt, model_dir, &opts, &model), SAM3D_STATUS_OK);
    Sam3dModelInfo info;
    expect("model: info", sam3d_model_info(model, &info), SAM3D_STATUS_OK);
    check("model: provider reported", model && strcmp(info.provider, "CPU") == 0 ? info.provider_note[0] != '\0' : model != NULL);
    check("model: licence and hash", model && info.licence[0] != '\0' && strlen(info.hash) == 64);
    expect("model: info NULL out", sam3d_model_info(model, NULL), SAM3D_STATUS_NULL_POINTER);
    expect("model: warm-up NULL", sam3d_model_warm_up(NULL), SAM3D_STATUS_NULL_POINTER);
    expect("model: cancel warm-up NULL", sam3d_model_cancel_warm_up(NULL), SAM3D_STATUS_NULL_POINTER);
    expect("model: cancel warm-up, none running", sam3d_model_cancel_warm_up(model), SAM3D_STATUS_OK);
    expect("model: warm-up", sam3d_model_warm_up(model), SAM3D_STATUS_OK);

    /* GPU settings: checked on every machine; without a GPU TensorRT falls back to CPU */
    Sam3dModel *gmodel = NULL;
    Sam3dModelOptions gopts = {(uint32_t)sizeof(Sam3dModelOptions), SAM3D_DEVICE_TENSOR_RT, 1, 0, 0, NULL};
    Sam3dGpuOptions gpu;
    memset(&gpu, 0, sizeof gpu);
    /* the first version of the struct ended before cuda_tf32: that size is accepted (the field
       beyond it is not read), anything shorter is not */
    gpu.struct_size = (uint32_t)offsetof(Sam3dGpuOptions, cuda_tf32) - 1;
    expect("gpu: struct_size too small", sam3d_model_open_ex(rt, model_dir, &gopts, &gpu, &gmodel),
           SAM3D_STATUS_ABI_MISMATCH);
    gpu.struct_size = (uint32_t)offsetof(Sam3dGpuOptions, cuda_tf32);
    gpu.cuda_tf32 = 12345;
    expect("gpu: first-version struct_size", sam3d_model_open_ex(rt, model_dir, &gopts, &gpu, &gmodel),
           SAM3D_STATUS_OK);
    sam3d_model_free(gmodel);
    gmodel = NULL;
    /* likewise Sam3dModelOptions before bf16 and cache_dir: beyond struct_size nothing is read, not
       even a pointer that would crash if it were */
    Sam3dModelOptions old = {(uint32_t)offsetof(Sam3dModelOptions, bf16), SAM3D_DEVICE_OPEN_VINO, 1, 0, 7,
                             (const char *)(uintptr_t)0x10};
    expect("model: first-version struct_size", sam3d_model_open(rt, model_dir, &old, &gmodel), SAM3D_STATUS_OK);
    Sam3dModelInfo oinfo;
    expect("model: first-version info", sam3d_model_info(gmodel, &oinfo), SAM3D_STATUS_OK);
    check("model: first-version options run fp32", gmodel && strstr(oinfo.provider, "bf16") == NULL);
    sam3d_model_free(gmodel);
    gmodel = NULL;
    /* a size that ends inside cache_dir: the pointer is not half-read */
    old.struct_size = (uint32_t)offsetof(Sam3dModelOptions, cache_dir) + 4;
    expect("model: size inside a pointer", sam3d_model_open(rt, model_dir, &old, &gmodel), SAM3D_STATUS_OK);
    sam3d_model_free(gmodel);
    gmodel = NULL;
    old.struct_size = (uint32_t)offsetof(Sam3dModelOptions, bf16) - 1;
    expect("model: struct_size too small", sam3d_model_open(rt, model_dir, &old, &gmodel), SAM3D_STATUS_ABI_MISMATCH);
    gpu.struct_size = (uint32_t)sizeof gpu;
    gpu.cuda_tf32 = 1;
    gpu.device_id = -1;
    expect("gpu: negative device", sam3d_model_open_ex(rt, model_dir, &gopts, &gpu, &gmodel),
           SAM3D_STATUS_INVALID_ARGUMENT);
    gpu.device_id = 0;
    snprintf(path, sizeof path, "%s/trt-cache-file", argv[2]);
    FILE *cf = fopen(path, "wb");
    if (cf) fclose(cf);
    snprintf(path, sizeof path, "%s/trt-cache-file/engines", argv[2]);
    gpu.trt_cache_dir = path;
    expect("gpu: cache folder under a file", sam3d_model_open_ex(rt, model_dir, &gopts, &gpu, &gmodel),
           SAM3D_STATUS_IO);
    check("gpu: output untouched on failure", gmodel == NULL);
    snprintf(path, sizeof path, "%s/trt-cache", argv[2]);
    gpu.memory_limit_bytes = 1ull << 31;
    gpu.trt_fp16 = 1;
    expect("gpu: open (TensorRT requested)", sam3d_model_open_ex(rt, model_dir, &gopts, &gpu, &gmodel),
           SAM3D_STATUS_OK);
    Sam3dModelInfo ginfo;
    expect("gpu: info", sam3d_model_info(gmodel, &ginfo), SAM3D_STATUS_OK);
    check("gpu: provider or reason", gmodel && (strcmp(ginfo.provider, "TensorRT") == 0 ||
                                                 strstr(ginfo.provider_note, "TensorRT unavailable") != NULL));
    sam3d_model_free(gmodel);

    /* --- volumes from files */
    Sam3dVolume *vol = NULL;
    expect("volume: NULL path", sam3d_volume_read_nifti(NULL, &vol), SAM3D_STATUS_NULL_POINTER);
    snprintf(path, sizeof path, "%s/absent.nii", argv[2]);
    expect("volume: missing file", sam3d_volume_read_nifti(path, &vol), SAM3D_STATUS_IO);
    snprintf(path, sizeof path, "%s/truncated.nii", argv[2]);
    write_nifti(path, 64, 64, 64, 100);
    expect("volume: truncated file", sam3d_volume_read_nifti(path, &vol), SAM3D_STATUS_BAD_VOLUME);
    snprintf(path, sizeof path, "%s/huge.nii", argv[2]);
    write_nifti(path, 30000, 30000, 30000, 16);
    expect("volume: header claiming terabytes", sam3d_volume_read_nifti(path, &vol), SAM3D_STATUS_TOO_LARGE);
    snprintf(path, sizeof path, "%s/garbage.nii", argv[2]);
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs("this is not a NIfTI file at all, just some text that is long enough", f);
        fclose(f);
    }
    expect("volume: garbage file", sam3d_volume_read_nifti(path, &vol), SAM3D_STATUS_BAD_VOLUME);
    check("volume: output untouched on failure", vol == NULL);

    /* --- volumes from a caller's buffer */
    enum { NX = 48, NY = 40, NZ = 30 };
    static float buf[NX * NY * NZ];
    for (int k = 0; k < NZ; k++)
        for (int j = 0; j < NY; j++)
            for (int i = 0; i < NX; i++) {
                double r2 = pow((i - 24) / 8.0, 2) + pow((j - 18) / 6.0, 2) + pow((k - 15) / 4.0, 2);
                buf[i + NX * (j + NY * k)] = (float)(40.0 + 120.0 * exp(-r2) + 3.0 * ((i * 7 + j * 13 + k * 3) % 11));
            }
    Sam3dBufferDesc d;
    memset(&d, 0, sizeof d);
    d.data = buf;
    d.size_bytes = sizeof buf;
    d.dtype = SAM3D_DTYPE_F32;
    d.strides[0] = 4;
    d.strides[1] = 4 * NX;
    d.strides[2] = 4 * NX * NY;
    d.geometry = geometry(NX, NY, NZ);
    Sam3dBufferDesc bad = d;
    expect("buffer: NULL desc", sam3d_volume_from_buffer(NULL, &vol), SAM3D_STATUS_NULL_POINTER);
    bad.data = NULL;
    expect("buffer: NULL data", sam3d_volume_from_buffer(&bad, &vol), SAM3D_STATUS_NULL_POINTER);
    bad = d;
    bad.geometry.dims[1] = 0;
    expect("buffer: zero dimension", sam3d_volume_from_buffer(&bad, &vol), SAM3D_STATUS_INVALID_ARGUMENT);
    bad = d;
    bad.geometry.dims[0] = bad.geometry.dims[1] = bad.geometry.dims[2] = (uint64_t)1 << 40;
    expect("buffer: absurd dimensions", sam3d_volume_from_buffer(&bad, &vol), SAM3D_STATUS_TOO_LARGE);
    bad = d;
    bad.dtype = 42;
    expect("buffer: unknown dtype", sam3d_volume_from_buffer(&bad, &vol), SAM3D_STATUS_INVALID_ARGUMENT);
    bad = d;
    bad.strides[2] = 8 * NX * NY;
    expect("buffer: strides beyond the buffer", sam3d_volume_from_buffer(&bad, &vol), SAM3D_STATUS_INVALID_ARGUMENT);
    bad = d;
    bad.strides[0] = 3;
    expect("buffer: misaligned stride", sam3d_volume_from_buffer(&bad, &vol), SAM3D_STATUS_INVALID_ARGUMENT);
    bad = d;
    bad.geometry.spacing[0] = NAN;
    expect("buffer: NaN spacing", sam3d_volume_from_buffer(&bad, &vol), SAM3D_STATUS_INVALID_ARGUMENT);
    bad = d;
    memset(bad.geometry.direction, 0, sizeof bad.geometry.direction);
    expect("buffer: singular direction", sam3d_volume_from_buffer(&bad, &vol), SAM3D_STATUS_INVALID_ARGUMENT);

    /* NaN voxels: refused when the session is made (policy "error") */
    static float nanbuf[NX * NY * NZ];
    memcpy(nanbuf, buf, sizeof buf);
    nanbuf[100] = NAN;
    Sam3dBufferDesc dn = d;
    dn.data = nanbuf;
    Sam3dVolume *nanvol = NULL;
    Sam3dSession *sess = NULL;
    expect("buffer: NaN voxels accepted as a volume", sam3d_volume_from_buffer(&dn, &nanvol), SAM3D_STATUS_OK);
    expect("session: NaN voxels", sam3d_session_new(model, nanvol, SAM3D_ABI_VERSION, &sess), SAM3D_STATUS_NON_FINITE);
    sam3d_volume_free(nanvol);

    expect("buffer: borrow", sam3d_volume_from_buffer(&d, &vol), SAM3D_STATUS_OK);
    Sam3dGeometry g;
    expect("volume: geometry", sam3d_volume_geometry(vol, &g), SAM3D_STATUS_OK);
    check("volume: geometry round trip", g.dims[0] == NX && g.spacing[2] == 2.5 && g.direction[4] == 1.0);

    /* --- sessions */
    expect("session: ABI mismatch", sam3d_session_new(model, vol, SAM3D_ABI_VERSION + 1, &sess), SAM3D_STATUS_ABI_MISMATCH);
    check("session: library ABI", sam3d_abi_version() == SAM3D_ABI_VERSION);
    expect("session: NULL model", sam3d_session_new(NULL, vol, SAM3D_ABI_VERSION, &sess), SAM3D_STATUS_NULL_POINTER);
    expect("session: new", sam3d_session_new(model, vol, SAM3D_ABI_VERSION, &sess), SAM3D_STATUS_OK);
    /* the package's spacing only: a random model may well choose a coarser level (tested below) */
    expect("session: zoom-out off", sam3d_session_set_zoom_out(sess, 1), SAM3D_STATUS_OK);
    uint32_t obj = 99;
    expect("session: add object", sam3d_session_add_object(sess, &obj), SAM3D_STATUS_OK);
    double inside[3] = {24, 18, 15}, outside[3] = {24, 18, 30.5}, nanp[3] = {NAN, 1, 1};
    Sam3dResult res;
    memset(&res, 0, sizeof res);
    expect("click: NULL point", sam3d_session_click(sess, obj, NULL, SAM3D_COORD_IJK, &res), SAM3D_STATUS_NULL_POINTER);
    expect("click: outside the volume", sam3d_session_click(sess, obj, outside, SAM3D_COORD_IJK, &res), SAM3D_STATUS_OUT_OF_BOUNDS);
    expect("click: NaN coordinate", sam3d_session_click(sess, obj, nanp, SAM3D_COORD_IJK, &res), SAM3D_STATUS_INVALID_ARGUMENT);
    expect("click: bad coordinate kind", sam3d_session_click(sess, obj, inside, 7, &res), SAM3D_STATUS_INVALID_ARGUMENT);
    expect("click: no such object", sam3d_session_click(sess, 5, inside, SAM3D_COORD_IJK, &res), SAM3D_STATUS_INVALID_ARGUMENT);
    expect("undo: nothing to undo", sam3d_session_undo(sess, obj, &res), SAM3D_STATUS_NOTHING_TO_DO);
    expect("click: inside", sam3d_session_click(sess, obj, inside, SAM3D_COORD_IJK, &res), SAM3D_STATUS_OK);
    check("click: mask neither empty nor full", res.voxels > 50 && res.voxels < (uint64_t)NX * NY * NZ / 2);
    check("click: encoder ran", res.encoded == 1);
    static uint8_t maskbuf[NX * NY * NZ];
    expect("mask: wrong buffer size", sam3d_session_get_mask(sess, obj, maskbuf, 10), SAM3D_STATUS_INVALID_ARGUMENT);
    expect("mask: NULL buffer", sam3d_session_get_mask(sess, obj, NULL, sizeof maskbuf), SAM3D_STATUS_NULL_POINTER);
    expect("mask: get", sam3d_session_get_mask(sess, obj, maskbuf, sizeof maskbuf), SAM3D_STATUS_OK);
    uint64_t count = 0;
    for (size_t i = 0; i < sizeof maskbuf; i++) count += maskbuf[i];
    check("mask: count matches the result", count == res.voxels);
    Sam3dMask *mask = NULL;
    expect("mask: handle", sam3d_session_mask(sess, obj, &mask), SAM3D_STATUS_OK);
    const uint8_t *md = NULL;
    size_t mn = 0;
    expect("mask: data", sam3d_mask_data(mask, &md, &mn), SAM3D_STATUS_OK);
    check("mask: handle data equals buffer", mn == sizeof maskbuf && memcmp(md, maskbuf, mn) == 0);
    snprintf(path, sizeof path, "%s/mask.txt", argv[2]);
    expect("mask: write to a non-NIfTI name", sam3d_mask_write_nifti(mask, path), SAM3D_STATUS_INVALID_ARGUMENT);
    expect("mask: write into a missing directory", sam3d_mask_write_nifti(mask, "/nonexistent-dir/m.nii.gz"), SAM3D_STATUS_IO);
    snprintf(path, sizeof path, "%s/mask.nii.gz", argv[2]);
    expect("mask: write", sam3d_mask_write_nifti(mask, path), SAM3D_STATUS_OK);
    double near[3] = {26, 19, 15};
    expect("click: follow-up", sam3d_session_click(sess, obj, near, SAM3D_COORD_IJK, &res), SAM3D_STATUS_OK);
    check("click: follow-up used the cached region", res.encoded == 0);
    expect("undo", sam3d_session_undo(sess, obj, &res), SAM3D_STATUS_OK);
    check("undo: restores the first mask", res.voxels == count);
    expect("redo", sam3d_session_redo(sess, obj, &res), SAM3D_STATUS_OK);
    expect("redo: nothing more", sam3d_session_redo(sess, obj, &res), SAM3D_STATUS_NOTHING_TO_DO);
    expect("cancel: NULL", sam3d_session_cancel(NULL), SAM3D_STATUS_NULL_POINTER);
    /* inference refinements: the fixture's manifest has none; wrong values change nothing */
    uint32_t flips = 0;
    int32_t keep = -1;
    expect("inference: get", sam3d_session_get_inference(sess, &flips, &keep), SAM3D_STATUS_OK);
    check("inference: the package's defaults", flips == 1 && keep == 0);
    expect("inference: NULL session", sam3d_session_set_inference(NULL, 8, 1), SAM3D_STATUS_NULL_POINTER);
    expect("inference: NULL output", sam3d_session_get_inference(sess, NULL, &keep), SAM3D_STATUS_NULL_POINTER);
    expect("inference: 3 flips", sam3d_session_set_inference(sess, 3, 1), SAM3D_STATUS_INVALID_ARGUMENT);
    expect("inference: keep 2", sam3d_session_set_inference(sess, 8, 2), SAM3D_STATUS_INVALID_ARGUMENT);
    expect("inference: get after refusals", sam3d_session_get_inference(sess, &flips, &keep), SAM3D_STATUS_OK);
    check("inference: refusals changed nothing", flips == 1 && keep == 0);
    expect("inference: set 8 flips", sam3d_session_set_inference(sess, 8, 1), SAM3D_STATUS_OK);
    expect("inference: get after set", sam3d_session_get_inference(sess, &flips, &keep), SAM3D_STATUS_OK);
    check("inference: set took", flips == 8 && keep == 1);
    expect("click: with 8 flips", sam3d_session_click(sess, obj, near, SAM3D_COORD_IJK, &res), SAM3D_STATUS_OK);
    check("click: a new flip count encodes again", res.encoded == 1 && res.voxels > 50);
    check("status names", strcmp(sam3d_status_name(SAM3D_STATUS_HASH_MISMATCH), "SAM3D_STATUS_HASH_MISMATCH") == 0 &&
                              strcmp(sam3d_status_name(12345), "?") == 0);

    /* --- prompts beyond a positive click */
    uint32_t prompts = 0;
    expect("prompts: NULL model", sam3d_model_prompts(NULL, &prompts), SAM3D_STATUS_NULL_POINTER);
    expect("prompts: get", sam3d_model_prompts(model, &prompts), SAM3D_STATUS_OK);
    check("prompts: positive, box and mask, no negative",
          prompts == (SAM3D_PROMPT_POSITIVE | SAM3D_PROMPT_BOX | SAM3D_PROMPT_MASK));
    uint32_t o2 = 0;
    expect("prompts: add object", sam3d_session_add_object(sess, &o2), SAM3D_STATUS_OK);
    expect("click_ex: negative on a positive-only package",
           sam3d_session_click_ex(sess, o2, inside, SAM3D_COORD_IJK, SAM3D_LABEL_NEGATIVE, &res), SAM3D_STATUS_UNSUPPORTED);
    check("click_ex: the message names the prompts", strstr(sam3d_last_error(), "positive clicks") != NULL);
    check("status name: unsupported", strcmp(sam3d_status_name(SAM3D_STATUS_UNSUPPORTED), "SAM3D_STATUS_UNSUPPORTED") == 0);
    expect("click_ex: bad label", sam3d_session_click_ex(sess, o2, inside, SAM3D_COORD_IJK, 2, &res), SAM3D_STATUS_INVALID_ARGUMENT);
    expect("click_ex: NULL point", sam3d_session_click_ex(sess, o2, NULL, SAM3D_COORD_IJK, SAM3D_LABEL_POSITIVE, &res), SAM3D_STATUS_NULL_POINTER);
    uint32_t zmax = 0;
    expect("zoom-out: set 4", sam3d_session_set_zoom_out(sess, 4), SAM3D_STATUS_OK);
    expect("zoom-out: get", sam3d_session_get_zoom_out(sess, &zmax), SAM3D_STATUS_OK);
    check("zoom-out: 4", zmax == 4);
    expect("zoom-out: 3 refused", sam3d_session_set_zoom_out(sess, 3), SAM3D_STATUS_INVALID_ARGUMENT);
    expect("zoom-out: off", sam3d_session_set_zoom_out(sess, 1), SAM3D_STATUS_OK);
    expect("zoom-out: NULL output", sam3d_session_get_zoom_out(sess, NULL), SAM3D_STATUS_NULL_POINTER);
    expect("click_ex: positive", sam3d_session_click_ex(sess, o2, inside, SAM3D_COORD_IJK, SAM3D_LABEL_POSITIVE, &res), SAM3D_STATUS_OK);
    double zoom = -1;
    expect("zoom: get", sam3d_session_get_zoom(sess, o2, &zoom), SAM3D_STATUS_OK);
    check("zoom: the package's spacing answered with zoom-out off", zoom == 1.0);
    expect("zoom: no such object", sam3d_session_get_zoom(sess, 77, &zoom), SAM3D_STATUS_INVALID_ARGUMENT);
    double ca[3] = {4, 3, 3}, cb[3] = {44, 37, 27}, flat[3] = {44, 37, 3};
    expect("box: NULL corner", sam3d_session_set_box(sess, o2, ca, NULL, SAM3D_COORD_IJK, &res), SAM3D_STATUS_NULL_POINTER);
    expect("box: flat", sam3d_session_set_box(sess, o2, ca, flat, SAM3D_COORD_IJK, &res), SAM3D_STATUS_INVALID_ARGUMENT);
    expect("box: set", sam3d_session_set_box(sess, o2, ca, cb, SAM3D_COORD_IJK, &res), SAM3D_STATUS_OK);
    expect("box: zoom", sam3d_session_get_zoom(sess, o2, &zoom), SAM3D_STATUS_OK);
    check("box: larger than the crop's view, so zoomed out", zoom > 1.0);
    expect("box: mask", sam3d_session_get_mask(sess, o2, maskbuf, sizeof maskbuf), SAM3D_STATUS_OK);
    int outside_box = 0;
    for (int k = 0; k < NZ; k++)
        for (int j = 0; j < NY; j++)
            for (int i = 0; i < NX; i++)
                if (maskbuf[i + NX * (j + NY * k)] && (i < 4 || i > 44 || j < 3 || j > 37 || k < 3 || k > 27)) outside_box++;
    check("box: the mask lies in the box", outside_box == 0 && res.voxels > 0);
    static uint8_t start[NX * NY * NZ];
    memset(start, 0, sizeof start);
    for (int k = 2; k < 6; k++)
        for (int j = 3; j < 9; j++)
            for (int i = 4; i < 12; i++) start[i + NX * (j + NY * k)] = 1;
    expect("set_mask: wrong size", sam3d_session_set_mask(sess, o2, start, 5, &res), SAM3D_STATUS_INVALID_ARGUMENT);
    expect("set_mask: NULL buffer", sam3d_session_set_mask(sess, o2, NULL, sizeof start, &res), SAM3D_STATUS_NULL_POINTER);
    expect("set_mask: set", sam3d_session_set_mask(sess, o2, start, sizeof start, &res), SAM3D_STATUS_OK);
    check("set_mask: the result counts the segment", res.voxels == 8 * 6 * 4 && res.encoded == 0);
    expect("set_mask: read back", sam3d_session_get_mask(sess, o2, maskbuf, sizeof maskbuf), SAM3D_STATUS_OK);
    check("set_mask: the mask is the segment", memcmp(maskbuf, start, sizeof start) == 0);
    expect("set_mask: undo back to the box", sam3d_session_undo(sess, o2, &res), SAM3D_STATUS_OK);
    expect("set_mask: redo", sam3d_session_redo(sess, o2, &res), SAM3D_STATUS_OK);
    check("set_mask: redo returns the segment", res.voxels == 8 * 6 * 4);

    /* --- free(NULL) is a no-op */
    sam3d_runtime_free(NULL);
    sam3d_model_free(NULL);
    sam3d_volume_free(NULL);
    sam3d_session_free(NULL);
    sam3d_mask_free(NULL);

    sam3d_mask_free(mask);
    sam3d_session_free(sess);
    sam3d_volume_free(vol);
    sam3d_model_free(model);
    sam3d_runtime_free(rt);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
