//! SSTables: immutable sorted files of internal keys.
//!
//! One file per part: `builder.rs` writes a table, `reader.rs` opens and verifies one (and
//! keeps a bounded cache of open tables), `iter.rs` walks one; this module holds the format
//! constants and the small types they share.
//!
//! # File layout (format versions 1 and 2)
//!
//! Version 2 adds a *prefix filter* block before the filter block and a 64-byte footer that
//! names it; the builder writes it only when the options carry a prefix extractor
//! ([`crate::lsm::prefix`]), and version 1 otherwise, so a table that needs no prefix filter
//! is byte for byte what older builds wrote and read.
//!
//! ```text
//!   offset 0
//!   +------------------------------+
//!   | data block 0     | trailer   |   entries in compare_internal order, prefix-compressed
//!   +------------------------------+   (see block.rs), cut at ~block_size bytes
//!   | data block 1     | trailer   |
//!   | ...                          |
//!   | data block n-1   | trailer   |
//!   +------------------------------+
//!   | prefix filter    | trailer   |   version 2 only: name_len u8 ++ extractor name ++ bloom
//!   +------------------------------+   filter over `cf id ++ prefix` of the keys; never
//!   |                              |   compressed
//!   | filter block     | trailer   |   bloom filter over engine keys (see bloom.rs);
//!   +------------------------------+   empty when bloom_bits_per_key = 0; never compressed
//!   | index block      | trailer   |   block format, restart interval 1: one entry per data
//!   +------------------------------+   block, key = the block's last internal key,
//!   | footer (48 or 64 bytes)      |   value = varint offset ++ varint size of the block
//!   +------------------------------+
//!   offset file_size
//!
//!   block trailer (5 bytes), after the stored block bytes of length `size`:
//!     +0  u8      compression type: 0 = none, 1 = lz4 (lz4_flex block format with the
//!                 uncompressed length prepended as u32 LE)
//!     +1  u32 LE  masked crc32c over (stored block bytes ++ compression type byte)
//!
//!   footer (48 bytes, all integers little-endian), at file_size - 48:
//!     +0   u64  filter block offset
//!     +8   u64  filter block size (stored bytes, excluding the 5-byte trailer)
//!     +16  u64  index block offset
//!     +24  u64  index block size (stored bytes, excluding the 5-byte trailer)
//!     +32  u32  format version (= 1)
//!     +36  u32  masked crc32c of footer bytes 0..36
//!     +40  u64  magic: the ASCII bytes "STRATSST" (u64 LE 0x5453_5354_4152_5453)
//!
//!   footer of version 2 (64 bytes), at file_size - 64: the prefix filter's handle first,
//!   then the version-1 fields shifted by 16; the version, checksum and magic keep their
//!   place relative to the end of the file, so a reader finds the version before it knows
//!   the footer's length:
//!     +0   u64  prefix filter block offset
//!     +8   u64  prefix filter block size
//!     +16  u64  filter block offset         +24  u64  filter block size
//!     +32  u64  index block offset          +40  u64  index block size
//!     +48  u32  format version (= 2)
//!     +52  u32  masked crc32c of footer bytes 0..52
//!     +56  u64  magic
//! ```
//!
//! A block handle `(offset, size)` names the stored bytes of a block; its trailer follows at
//! `offset + size`. A block is compressed only when LZ4 saves at least 1/8 of its size. The
//! masked crc32c is [`masked_crc`] (LevelDB's masking).
//!
//! # Reading
//!
//! [`Table::open`] checks the footer (magic, checksum, version), then reads and verifies the
//! index, filter and prefix filter blocks and keeps them in memory. Data blocks are read on demand with
//! `pread` (so an `Arc<Table>` is shared by threads without a lock), each verified against
//! its checksum, and go through the shared [`BlockCache`] keyed by `(file id, offset)`. Any
//! damage — truncation, bad magic, bad checksum, a handle outside the file, a malformed block
//! — is [`Error::Corruption`] naming the file and the byte offset of the damaged structure.
//!
//! A point lookup ([`Table::get`]) asks the bloom filter, then seeks the index to the first
//! data block whose last key is `>=` the target, then seeks inside that block. Scans use
//! [`TableIterator`], a two-level iterator over the index and the current data block.

mod builder;
mod iter;
mod reader;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use super::coding::{put_varint, Decoder};
use super::options::{Compression, Options};
use super::prefix::SharedPrefixExtractor;
#[cfg(doc)]
use super::{cache::BlockCache, coding::masked_crc, error::Error};

pub use builder::TableBuilder;
pub use iter::TableIterator;
pub use reader::{Table, TableCache, TableLookup};

/// Size of the footer at the end of a format-1 table.
pub const FOOTER_LEN: usize = 48;
/// Size of the footer at the end of a format-2 table (with a prefix filter).
pub const FOOTER_V2_LEN: usize = 64;
/// Size of the trailer after every block: compression type + masked crc32c.
pub const BLOCK_TRAILER_LEN: usize = 5;
/// The format of tables without a prefix filter.
pub const FORMAT_VERSION: u32 = 1;
/// The format of tables with a prefix filter; this code reads both.
pub const FORMAT_VERSION_PREFIX: u32 = 2;
/// The last 8 bytes of every table: "STRATSST".
pub const TABLE_MAGIC: u64 = u64::from_le_bytes(*b"STRATSST");

pub(super) const COMPRESSION_NONE: u8 = 0;
pub(super) const COMPRESSION_LZ4: u8 = 1;
/// LZ4 cannot expand data more than ~255x; larger claims are damage, not data.
pub(super) const LZ4_MAX_RATIO: usize = 255;

/// The path of table `file_id` in `dir`: `000042.sst`.
pub fn table_file_name(dir: &Path, file_id: u64) -> PathBuf {
    dir.join(format!("{file_id:06}.sst"))
}

/// The position of a block's stored bytes in a table file (excluding its trailer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHandle {
    /// Offset of the block's first byte.
    pub offset: u64,
    /// Length of the stored (possibly compressed) bytes.
    pub size: u64,
}

impl BlockHandle {
    /// Appends `varint offset ++ varint size`.
    pub fn encode_to(&self, buf: &mut Vec<u8>) {
        put_varint(buf, self.offset);
        put_varint(buf, self.size);
    }

    /// Decodes a handle that must fill `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Option<BlockHandle> {
        let mut d = Decoder::new(bytes);
        let offset = d.varint()?;
        let size = d.varint()?;
        d.is_empty().then_some(BlockHandle { offset, size })
    }

    /// Offset just past the block's trailer, if it does not overflow.
    pub(super) fn end_with_trailer(&self) -> Option<u64> {
        self.offset
            .checked_add(self.size)?
            .checked_add(BLOCK_TRAILER_LEN as u64)
    }
}

/// How tables are written.
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// Target size of a data block before compression.
    pub block_size: usize,
    /// Entries between restart points in data blocks.
    pub restart_interval: usize,
    /// Bloom filter bits per distinct engine key (0: no filter).
    pub bloom_bits_per_key: usize,
    /// Compression of data and index blocks.
    pub compression: Compression,
    /// Builds a prefix filter (and a format-2 table) when set.
    pub prefix_extractor: Option<SharedPrefixExtractor>,
}

impl From<&Options> for TableOptions {
    fn from(o: &Options) -> Self {
        TableOptions {
            block_size: o.block_size,
            restart_interval: o.block_restart_interval,
            bloom_bits_per_key: o.bloom_bits_per_key,
            compression: o.compression,
            prefix_extractor: o.prefix_extractor.clone(),
        }
    }
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions::from(&Options::default())
    }
}

/// What a finished table holds, for the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    /// Size of the file in bytes.
    pub file_size: u64,
    /// Entries written.
    pub num_entries: u64,
    /// Entries that are tombstones ([`crate::lsm::key::ValueKind::Delete`]).
    pub num_deletions: u64,
    /// First internal key (empty if the table is empty).
    pub smallest_key: Vec<u8>,
    /// Last internal key (empty if the table is empty).
    pub largest_key: Vec<u8>,
    /// Smallest sequence number of any entry.
    pub smallest_seq: u64,
    /// Largest sequence number of any entry.
    pub largest_seq: u64,
}
