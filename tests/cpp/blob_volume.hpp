// Shared by the C++ tests: the C API test's synthetic volume as a borrowed buffer.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "sam3d.h"

// the C API test's volume: a bright blob in a textured background, 1.5 x 1.5 x 2.5 mm voxels
inline Sam3dBufferDesc blob(std::vector<float>& buf, int nx, int ny, int nz) {
    buf.assign(static_cast<size_t>(nx * ny * nz), 0.0f);
    for (int k = 0; k < nz; k++)
        for (int j = 0; j < ny; j++)
            for (int i = 0; i < nx; i++) {
                double r2 = std::pow((i - 24) / 8.0, 2) + std::pow((j - 18) / 6.0, 2) + std::pow((k - 15) / 4.0, 2);
                buf[static_cast<size_t>(i + nx * (j + ny * k))] =
                    static_cast<float>(40.0 + 120.0 * std::exp(-r2) + 3.0 * ((i * 7 + j * 13 + k * 3) % 11));
            }
    Sam3dBufferDesc d{};
    d.data = buf.data();
    d.size_bytes = buf.size() * sizeof(float);
    d.dtype = SAM3D_DTYPE_F32;
    d.strides[0] = 4;
    d.strides[1] = static_cast<int64_t>(4 * nx);
    d.strides[2] = static_cast<int64_t>(4 * nx * ny);
    d.geometry.dims[0] = static_cast<uint64_t>(nx);
    d.geometry.dims[1] = static_cast<uint64_t>(ny);
    d.geometry.dims[2] = static_cast<uint64_t>(nz);
    d.geometry.spacing[0] = d.geometry.spacing[1] = 1.5;
    d.geometry.spacing[2] = 2.5;
    d.geometry.direction[0] = d.geometry.direction[4] = d.geometry.direction[8] = 1.0;
    return d;
}
