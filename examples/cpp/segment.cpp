// Segment a NIfTI volume from one click with the C++ wrapper and write the mask.
//   segment_cpp MODEL_DIR VOLUME.nii.gz I,J,K OUT.nii.gz
#include <cstdio>
#include <iostream>
#include <thread>

#include "sam3d.hpp"

int main(int argc, char** argv) {
    if (argc != 5) {
        std::cerr << "usage: " << argv[0] << " MODEL_DIR VOLUME.nii[.gz] I,J,K OUT.nii[.gz]\n";
        return 2;
    }
    std::array<double, 3> click{};
    if (std::sscanf(argv[3], "%lf,%lf,%lf", &click[0], &click[1], &click[2]) != 3) {
        std::cerr << "click must be I,J,K\n";
        return 2;
    }
    try {
        sam3d::Runtime rt;
        sam3d::Model model(rt, argv[1]);
        // warm the model up while the volume loads: the click below stops the warm-up if it is
        // still running (it then throws SAM3D_STATUS_CANCELLED, which is expected here)
        std::thread warm([&model] {
            try {
                model.warm_up();
            } catch (const sam3d::Error& e) {
                if (e.status() != SAM3D_STATUS_CANCELLED) std::cerr << "warm-up: " << e.what() << "\n";
            }
        });
        // an error before warm.join() below: stop and join it (a joinable std::thread's destructor aborts)
        struct Join {
            std::thread& t;
            const sam3d::Model& m;
            ~Join() { if (t.joinable()) { sam3d_model_cancel_warm_up(m.get()); t.join(); } }
        } join{warm, model};
        auto vol = sam3d::Volume::read_nifti(argv[2]);
        sam3d::Session session(model, vol);
        uint32_t obj = session.add_object();
        Sam3dResult r = session.click(obj, click);
        warm.join();
        session.mask(obj).write_nifti(argv[4]);
        if (r.voxels == 0) std::cerr << "the click found nothing: the mask is empty\n";
        auto info = model.info();
        std::cout << "model " << info.name << ", provider " << info.provider << ", ONNX Runtime " << rt.version()
                  << "\nmask voxels " << r.voxels << "\n";
        // errors carry the status: a click outside the volume
        try {
            session.click(obj, {-100.0, 0.0, 0.0});
        } catch (const sam3d::Error& e) {
            std::cout << "expected error: " << e.what() << "\n";
            if (e.status() != SAM3D_STATUS_OUT_OF_BOUNDS) return 1;
        }
    } catch (const sam3d::Error& e) {
        std::cerr << e.what() << "\n";
        return 1;
    }
    return 0;
}
