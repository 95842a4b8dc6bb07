//! Positioned writes and in-kernel copies between files, so several threads can fill one
//! output file at known offsets and bytes that are already in a file never pass through
//! loratool's memory.
//!
//! On Linux, [`copy_range`] uses `copy_file_range(2)` with explicit offsets (no shared file
//! position): the kernel copies page-cache pages directly, or shares extents on filesystems
//! that support it. Where the call is unavailable (other systems, kernels or filesystem pairs
//! that refuse it) the bytes go through a buffer with positioned reads and writes.

use std::fs::File;
use std::io;

/// Write all of `buf` at `offset` of `file` (the file position is not used or moved).
pub fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            let n = std::os::windows::fs::FileExt::seek_write(
                file,
                &buf[done..],
                offset + done as u64,
            )?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            done += n;
        }
        Ok(())
    }
}

/// Fill all of `buf` from `offset` of `file`.
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            let n = std::os::windows::fs::FileExt::seek_read(
                file,
                &mut buf[done..],
                offset + done as u64,
            )?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

/// Start writing `len` bytes of `file` from `offset` back to storage without waiting for it
/// (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`; elsewhere nothing). A hint: the final
/// fsync then has less left to wait for, because the disk works while the rest of the file is
/// produced. Errors are ignored (the fsync reports real ones).
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for the lifetime of the borrowed `File`; the call
        // reads or writes no memory of this process.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Copy `len` bytes from `src` at `src_offset` to `dst` at `dst_offset`.
pub fn copy_range(
    src: &File,
    src_offset: u64,
    dst: &File,
    dst_offset: u64,
    len: u64,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    let done = kernel_copy(src, src_offset, dst, dst_offset, len)?;
    #[cfg(not(target_os = "linux"))]
    let done = 0;
    if done < len {
        buffered_copy(src, src_offset + done, dst, dst_offset + done, len - done)?;
    }
    Ok(())
}

/// As much of the copy as `copy_file_range` does; 0 when the kernel refuses it outright (the
/// caller then copies through a buffer).
#[cfg(target_os = "linux")]
fn kernel_copy(
    src: &File,
    src_offset: u64,
    dst: &File,
    dst_offset: u64,
    len: u64,
) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let (mut off_in, mut off_out) = (src_offset as libc::loff_t, dst_offset as libc::loff_t);
    let mut done = 0u64;
    while done < len {
        // at most 1 GiB per call, as the kernel caps single copies anyway
        let chunk = (len - done).min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the lifetime of the borrowed `File`s, and the
        // offset pointers are valid for the call; no memory of this process is read or written.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                chunk,
                0,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                // not supported for these files: fall back (nothing or a prefix was copied)
                Some(
                    libc::ENOSYS | libc::EXDEV | libc::EINVAL | libc::EOPNOTSUPP | libc::EPERM,
                ) => Ok(done),
                Some(libc::EINTR) => continue,
                _ => Err(err),
            };
        }
        if n == 0 {
            // the source ended early
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        done += n as u64;
    }
    Ok(done)
}

fn buffered_copy(
    src: &File,
    src_offset: u64,
    dst: &File,
    dst_offset: u64,
    len: u64,
) -> io::Result<()> {
    let mut buf = vec![0u8; (len.min(1 << 20)) as usize];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        read_at(src, &mut buf[..n], src_offset + done)?;
        write_at(dst, &buf[..n], dst_offset + done)?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    #[test]
    fn copies_ranges_to_offsets_and_fills_gaps_with_writes() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&src_path, &data).unwrap();
        let src = File::open(&src_path).unwrap();
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("dst"))
            .unwrap();
        // out of order, as parallel writers do
        copy_range(&src, 100_000, &dst, 50_000, 100_000).unwrap();
        write_at(&dst, b"head", 0).unwrap();
        copy_range(&src, 4, &dst, 4, 49_996).unwrap();
        buffered_copy(&src, 0, &dst, 150_000, 10).unwrap();
        let mut got = Vec::new();
        (&dst).seek(SeekFrom::Start(0)).unwrap();
        (&dst).read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), 150_010);
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[4..50_000], &data[4..50_000]);
        assert_eq!(&got[50_000..150_000], &data[100_000..200_000]);
        assert_eq!(&got[150_000..], &data[..10]);
        // a range past the end of the source is an error, not a short file
        assert!(copy_range(&src, 199_990, &dst, 0, 100).is_err());
    }
}
