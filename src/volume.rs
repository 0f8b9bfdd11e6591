//! A volume: geometry plus voxels, i fastest, either owned float32 (read from a file) or a caller's
//! buffer borrowed without a copy (any of the common dtypes, any strides).

use crate::error::{err, Result, Sam3dStatus};
use crate::geometry::Geometry;

/// Element type of a borrowed buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    F64,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::F64 => 8,
        }
    }
}

/// A caller's buffer. The caller keeps it alive and unchanged while the volume exists.
#[derive(Debug, Clone, Copy)]
/// Its fields are private: only `Volume::borrowed`, which checks them, makes one.
pub struct Borrowed {
    ptr: *const u8,
    dtype: Dtype,
    /// byte strides of i, j, k
    strides: [isize; 3],
    /// the dimensions the strides were checked for (a volume's public `geom` may be changed)
    dims: [usize; 3],
}

// SAFETY: the pointer is only read, and the C API documents that the buffer stays valid and
// unchanged while the volume exists, so any thread may read it.
unsafe impl Send for Borrowed {}
// SAFETY: as for Send: shared reads of memory nobody writes.
unsafe impl Sync for Borrowed {}

#[derive(Debug, Clone)]
pub enum Voxels {
    Owned(Vec<f32>),
    Borrowed(Borrowed),
}

#[derive(Debug, Clone)]
pub struct Volume {
    pub geom: Geometry,
    pub voxels: Voxels,
    /// Voxels with NaN or +-Inf (counted once, when the volume is made).
    pub nonfinite: usize,
}

impl Volume {
    pub fn new(geom: Geometry, data: Vec<f32>) -> Result<Self> {
        let n = geom.voxel_count()?;
        if data.len() != n {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!("{} voxels for dimensions {:?}", data.len(), geom.dims),
            ));
        }
        let nonfinite = data.iter().filter(|v| !v.is_finite()).count();
        Ok(Volume {
            geom,
            voxels: Voxels::Owned(data),
            nonfinite,
        })
    }

    /// Borrow a caller's buffer. Checks that every voxel address lies inside `[ptr, ptr + len)`.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that stay valid while the volume exists.
    pub unsafe fn borrowed(
        geom: Geometry,
        ptr: *const u8,
        len: usize,
        dtype: Dtype,
        strides: [isize; 3],
    ) -> Result<Self> {
        geom.voxel_count()?;
        let esize = dtype.size() as isize;
        if strides.iter().any(|&s| s <= 0 || s % esize != 0) {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!(
                    "strides {strides:?} must be positive multiples of the element size {esize}"
                ),
            ));
        }
        // no two voxels may share bytes: along the axes in stride order, each stride must pass the
        // whole extent of the axes before it (a 2^32-voxel volume on a 128 KB buffer otherwise)
        let mut order = [0, 1, 2];
        order.sort_by_key(|&a| strides[a]);
        let mut extent = esize as i128;
        for &a in order.iter().filter(|&&a| geom.dims[a] > 1) {
            if (strides[a] as i128) < extent {
                return Err(err(
                    Sam3dStatus::InvalidArgument,
                    format!(
                        "strides {strides:?} with dimensions {:?} make voxels overlap",
                        geom.dims
                    ),
                ));
            }
            extent = strides[a] as i128 * geom.dims[a] as i128;
        }
        // the highest byte any voxel's value ends at, in 128-bit arithmetic: three spans that each
        // fit in 64 bits can overflow 64 bits together (strides near i64::MAX / 3)
        let end = (0..3)
            .map(|a| strides[a] as i128 * (geom.dims[a] as i128 - 1))
            .sum::<i128>()
            + esize as i128;
        if end > len as i128 {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!(
                    "strides {strides:?} with dimensions {:?} reach byte {end}, beyond the \
                     {len}-byte buffer",
                    geom.dims
                ),
            ));
        }
        let b = Borrowed {
            ptr,
            dtype,
            strides,
            dims: geom.dims,
        };
        let mut v = Volume {
            geom,
            voxels: Voxels::Borrowed(b),
            nonfinite: 0,
        };
        if matches!(dtype, Dtype::F32 | Dtype::F64) {
            let [nx, ny, nz] = geom.dims;
            let mut count = 0;
            for k in 0..nz {
                for j in 0..ny {
                    for i in 0..nx {
                        count += !v.at(i, j, k).is_finite() as usize;
                    }
                }
            }
            v.nonfinite = count;
        }
        Ok(v)
    }

    #[inline]
    pub fn at(&self, i: usize, j: usize, k: usize) -> f32 {
        match &self.voxels {
            Voxels::Owned(d) => {
                let [nx, ny, _] = self.geom.dims;
                d[i + nx * (j + ny * k)]
            }
            // SAFETY: (i, j, k) lies inside the dimensions `borrowed` checked every voxel's bytes
            // against (asserted), so the read stays in the caller's buffer; reads are unaligned-safe.
            Voxels::Borrowed(b) => unsafe {
                let [nx, ny, nz] = b.dims;
                assert!(i < nx && j < ny && k < nz, "voxel index outside the volume");
                let p = b.ptr.offset(
                    i as isize * b.strides[0]
                        + j as isize * b.strides[1]
                        + k as isize * b.strides[2],
                );
                match b.dtype {
                    Dtype::U8 => *p as f32,
                    Dtype::I8 => *(p as *const i8) as f32,
                    Dtype::U16 => (p as *const u16).read_unaligned() as f32,
                    Dtype::I16 => (p as *const i16).read_unaligned() as f32,
                    Dtype::U32 => (p as *const u32).read_unaligned() as f32,
                    Dtype::I32 => (p as *const i32).read_unaligned() as f32,
                    Dtype::F32 => (p as *const f32).read_unaligned(),
                    Dtype::F64 => (p as *const f64).read_unaligned() as f32,
                }
            },
        }
    }

    /// Owned voxels (i fastest); a borrowed buffer is copied.
    pub fn to_vec(&self) -> Vec<f32> {
        match &self.voxels {
            Voxels::Owned(d) => d.clone(),
            Voxels::Borrowed(_) => {
                let [nx, ny, nz] = self.geom.dims;
                let mut out = Vec::with_capacity(nx * ny * nz);
                for k in 0..nz {
                    for j in 0..ny {
                        for i in 0..nx {
                            out.push(self.at(i, j, k));
                        }
                    }
                }
                out
            }
        }
    }
}
