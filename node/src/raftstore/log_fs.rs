//! The raft log's files, with the space they grow into written ahead as zeros (D173).
//!
//! raft-engine grows a log file 2 MiB at a time with `fallocate`, which reserves blocks as
//! *unwritten* extents. Every later `fdatasync` that covers new data in such an extent must
//! also turn that part of the extent into a written one, a change to the inode's block map:
//! on ext4 that is a synchronous inode write and a metadata-buffer write on top of the data
//! write and the cache flush, four waits for the disk instead of two (seen in the raft
//! driver's context switches: `ext4_write_inode` and `fsync_buffers_list` under
//! `fdatasync`). Here the space is instead written with zeros and synced once when it is
//! reserved, so the fsyncs of the appends that follow only overwrite blocks that exist.
//!
//! ```text
//!   raft-engine: capacity < written + len ─► allocate(capacity, 2 MiB)
//!   here:        pwrite zeros over [capacity, capacity + 2 MiB), fdatasync   (once per 2 MiB)
//!   appends:     pwrite data over zeros, fdatasync: data + flush, no block-map change
//! ```
//!
//! What a reader sees is the same either way (the reserved tail reads as zeros, and
//! raft-engine truncates it when it closes a file), so recovery and recycling are
//! unchanged. Everything else is raft-engine's own file system.

use std::io::{Result, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use raft_engine::env::{DefaultFileSystem, FileSystem, Handle, Permission, WriteExt};

/// The zeros written over reserved space, a piece at a time.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

type Fd = <DefaultFileSystem as FileSystem>::Handle;

/// raft-engine's default file system, reserving space by writing it (see the module).
#[derive(Debug, Default, Clone, Copy)]
pub struct ZeroFilledFileSystem;

impl FileSystem for ZeroFilledFileSystem {
    type Handle = Fd;
    type Reader = <DefaultFileSystem as FileSystem>::Reader;
    type Writer = ZeroFillingWriter;

    fn create<P: AsRef<Path>>(&self, path: P) -> Result<Self::Handle> {
        DefaultFileSystem.create(path)
    }

    fn open<P: AsRef<Path>>(&self, path: P, perm: Permission) -> Result<Self::Handle> {
        DefaultFileSystem.open(path, perm)
    }

    fn delete<P: AsRef<Path>>(&self, path: P) -> Result<()> {
        DefaultFileSystem.delete(path)
    }

    fn rename<P: AsRef<Path>>(&self, src_path: P, dst_path: P) -> Result<()> {
        DefaultFileSystem.rename(src_path, dst_path)
    }

    fn new_reader(&self, handle: Arc<Self::Handle>) -> Result<Self::Reader> {
        DefaultFileSystem.new_reader(handle)
    }

    fn new_writer(&self, handle: Arc<Self::Handle>) -> Result<Self::Writer> {
        Ok(ZeroFillingWriter {
            inner: DefaultFileSystem.new_writer(Arc::clone(&handle))?,
            fd: handle,
        })
    }
}

/// raft-engine's writer, but `allocate` writes the space instead of reserving it.
pub struct ZeroFillingWriter {
    inner: <DefaultFileSystem as FileSystem>::Writer,
    fd: Arc<Fd>,
}

impl std::fmt::Debug for ZeroFillingWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroFillingWriter").finish_non_exhaustive()
    }
}

impl Write for ZeroFillingWriter {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> Result<()> {
        self.inner.flush()
    }
}

impl Seek for ZeroFillingWriter {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        self.inner.seek(pos)
    }
}

impl WriteExt for ZeroFillingWriter {
    fn truncate(&mut self, offset: usize) -> Result<()> {
        self.inner.truncate(offset)
    }

    /// Writes zeros over `[offset, offset + size)` and syncs them, leaving the writer's
    /// position where it was. A failure leaves the space partly written, which is what a
    /// failed `fallocate` leaves too: raft-engine logs it and writes on (its appends then
    /// allocate as they go).
    fn allocate(&mut self, offset: usize, size: usize) -> Result<()> {
        let end = offset + size;
        let mut at = offset;
        while at < end {
            let n = ZEROS.len().min(end - at);
            let written = self.fd.write(at, &ZEROS[..n])?;
            if written == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero));
            }
            at += written;
        }
        self.fd.sync()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, Write};
    use std::sync::Arc;

    use raft_engine::env::{FileSystem, WriteExt};

    use super::ZeroFilledFileSystem;

    /// `allocate` writes zeros over the range asked for (and nothing else), the file grows
    /// to cover it, and the next write lands where the writer stood.
    #[test]
    fn allocate_writes_zeros_ahead_and_keeps_the_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let fs = ZeroFilledFileSystem;
        let fd = Arc::new(fs.create(&path).expect("create"));
        let mut w = fs.new_writer(Arc::clone(&fd)).expect("writer");
        std::fs::write(&path, vec![7u8; 100]).expect("old bytes past the data");
        w.write_all(b"head").expect("write");
        w.allocate(4, 200_000).expect("allocate");
        w.write_all(b"tail").expect("write after allocate");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len(), 200_004, "the file covers the allocated range");
        assert_eq!(
            &bytes[..8],
            b"headtail",
            "the write after allocate went on from 4"
        );
        assert!(bytes[8..].iter().all(|&b| b == 0), "the rest is zeros");
        assert_eq!(w.stream_position().expect("position"), 8);
    }
}
