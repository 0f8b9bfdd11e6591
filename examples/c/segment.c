/* Segment a NIfTI volume from one click with libsam3d's C API and write the mask.
 *   segment_c MODEL_DIR VOLUME.nii.gz I,J,K OUT.nii.gz
 * ONNX Runtime is found through SAM3D_ORT_LIBRARY (or the other places sam3d_runtime_new tries). */
#include <stdio.h>
#include <stdlib.h>

#include "sam3d.h"

static void progress(int32_t stage, int32_t done, void *user) {
    static const char *names[] = {"load", "resample", "encode", "decode", "paste-back"};
    (void)user;
    if (stage >= 0 && stage < 5) fprintf(stderr, "%s %s\n", names[stage], done ? "done" : "...");
}

#define CHECK(call)                                                                               \
    do {                                                                                          \
        Sam3dStatus st_ = (call);                                                                 \
        if (st_ != SAM3D_STATUS_OK) {                                                             \
            fprintf(stderr, "%s failed: %s: %s\n", #call, sam3d_status_name(st_), sam3d_last_error()); \
            rc = 1;                                                                               \
            goto done;                                                                            \
        }                                                                                         \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL_DIR VOLUME.nii[.gz] I,J,K OUT.nii[.gz]\n", argv[0]);
        return 2;
    }
    double click[3];
    if (sscanf(argv[3], "%lf,%lf,%lf", &click[0], &click[1], &click[2]) != 3) {
        fprintf(stderr, "click must be I,J,K\n");
        return 2;
    }
    int rc = 0;
    Sam3dRuntime *rt = NULL;
    Sam3dModel *model = NULL;
    Sam3dVolume *vol = NULL;
    Sam3dSession *sess = NULL;
    Sam3dMask *mask = NULL;
    Sam3dModelInfo info;
    Sam3dResult res;
    uint32_t obj = 0;

    CHECK(sam3d_runtime_new(SAM3D_ABI_VERSION, NULL, &rt));
    CHECK(sam3d_model_open(rt, argv[1], NULL, &model));
    CHECK(sam3d_model_info(model, &info));
    CHECK(sam3d_volume_read_nifti(argv[2], &vol));
    CHECK(sam3d_session_new(model, vol, SAM3D_ABI_VERSION, &sess));
    CHECK(sam3d_session_set_progress(sess, progress, NULL));
    CHECK(sam3d_session_add_object(sess, &obj));
    CHECK(sam3d_session_click(sess, obj, click, SAM3D_COORD_IJK, &res));
    CHECK(sam3d_session_mask(sess, obj, &mask));
    CHECK(sam3d_mask_write_nifti(mask, argv[4]));
    if (res.voxels == 0) fprintf(stderr, "the click found nothing: the mask is empty\n");
    printf("model %s (%s), provider %s, ONNX Runtime %s\n", info.name, info.licence, info.provider,
           sam3d_runtime_version(rt));
    printf("mask voxels %llu, encoder ran %d\n", (unsigned long long)res.voxels, res.encoded);
done:
    sam3d_mask_free(mask);
    sam3d_session_free(sess);
    sam3d_volume_free(vol);
    sam3d_model_free(model);
    sam3d_runtime_free(rt);
    return rc;
}
