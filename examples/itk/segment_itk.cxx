// Segment any image ITK reads (NIfTI, NRRD, MetaImage, ..., or a DICOM series directory) from one
// click in physical coordinates, with libsam3d borrowing the itk::Image buffer (no copy), and write
// the mask with ITK on the input's grid.
//
//   segment_itk MODEL_DIR INPUT(file or DICOM dir) X,Y,Z OUT_MASK [--ras]
//
// The click is an LPS point in mm (ITK's physical space); --ras takes it in RAS (3D Slicer, NIfTI).
#include <array>
#include <cstdio>
#include <iostream>
#include <string>

#include <itkGDCMImageIO.h>
#include <itkGDCMSeriesFileNames.h>
#include <itkImage.h>
#include <itkImageFileReader.h>
#include <itkImageFileWriter.h>
#include <itkImageSeriesReader.h>
#include <itksys/SystemTools.hxx>

#include "sam3d.hpp"

using ImageType = itk::Image<float, 3>;
using MaskType = itk::Image<unsigned char, 3>;

static ImageType::Pointer read_image(const std::string& path) {
    if (itksys::SystemTools::FileIsDirectory(path)) {
        auto names = itk::GDCMSeriesFileNames::New();
        names->SetDirectory(path);
        const auto& series = names->GetSeriesUIDs();
        if (series.empty()) throw std::runtime_error("no DICOM series in " + path);
        auto reader = itk::ImageSeriesReader<ImageType>::New();
        reader->SetImageIO(itk::GDCMImageIO::New());
        reader->SetFileNames(names->GetFileNames(series.front()));
        reader->Update();
        return reader->GetOutput();
    }
    auto reader = itk::ImageFileReader<ImageType>::New();
    reader->SetFileName(path);
    reader->Update();
    return reader->GetOutput();
}

// The itk::Image's buffer and geometry as a libsam3d buffer description (ITK and libsam3d share the
// LPS convention: point = origin + direction * diag(spacing) * index).
static Sam3dBufferDesc describe(const ImageType* image) {
    const auto size = image->GetBufferedRegion().GetSize();
    Sam3dBufferDesc d{};
    d.data = image->GetBufferPointer();
    d.size_bytes = sizeof(float) * size[0] * size[1] * size[2];
    d.dtype = SAM3D_DTYPE_F32;
    d.strides[0] = sizeof(float);
    d.strides[1] = static_cast<int64_t>(sizeof(float) * size[0]);
    d.strides[2] = static_cast<int64_t>(sizeof(float) * size[0] * size[1]);
    for (int a = 0; a < 3; ++a) {
        d.geometry.dims[a] = size[a];
        d.geometry.spacing[a] = image->GetSpacing()[a];
        d.geometry.origin[a] = image->GetOrigin()[a];
        for (int c = 0; c < 3; ++c) d.geometry.direction[3 * a + c] = image->GetDirection()(a, c);
    }
    return d;
}

int main(int argc, char** argv) {
    if (argc < 5 || argc > 6 || (argc == 6 && std::string(argv[5]) != "--ras")) {
        std::cerr << "usage: " << argv[0] << " MODEL_DIR INPUT X,Y,Z OUT_MASK [--ras]\n";
        return 2;
    }
    std::array<double, 3> point{};
    if (std::sscanf(argv[3], "%lf,%lf,%lf", &point[0], &point[1], &point[2]) != 3) {
        std::cerr << "the click must be X,Y,Z in mm\n";
        return 2;
    }
    const Sam3dCoord coord = argc == 6 ? SAM3D_COORD_RAS : SAM3D_COORD_LPS;
    try {
        ImageType::Pointer image = read_image(argv[2]);
        sam3d::Runtime rt;
        sam3d::Model model(rt, argv[1]);
        // borrowed: `image` must outlive the volume and the session (it does: same scope, declared first)
        auto volume = sam3d::Volume::borrow(describe(image));
        sam3d::Session session(model, volume);
        const uint32_t obj = session.add_object();
        const Sam3dResult r = session.click(obj, point, coord);

        auto mask = MaskType::New();
        mask->SetRegions(image->GetBufferedRegion());
        mask->SetOrigin(image->GetOrigin());
        mask->SetSpacing(image->GetSpacing());
        mask->SetDirection(image->GetDirection());
        mask->Allocate();
        const auto n = image->GetBufferedRegion().GetNumberOfPixels();
        session.get_mask(obj, mask->GetBufferPointer(), n);
        auto writer = itk::ImageFileWriter<MaskType>::New();
        writer->SetFileName(argv[4]);
        writer->SetInput(mask);
        writer->Update();
        if (r.voxels == 0) std::cerr << "the click found nothing: the mask is empty\n";
        std::cout << "model " << model.info().name << ", ONNX Runtime " << rt.version() << "\n"
                  << "input " << image->GetBufferedRegion().GetSize() << " voxels, spacing " << image->GetSpacing()
                  << "\nmask voxels " << r.voxels << " -> " << argv[4] << "\n";
    } catch (const sam3d::Error& e) {
        std::cerr << "libsam3d: " << e.what() << "\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
