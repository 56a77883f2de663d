//! SSTables: immutable sorted files of internal keys, their builder, reader, iterator, and
//! the cache of open tables.
//!
//! # File layout (format version 1)
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
//!   | filter block     | trailer   |   bloom filter over engine keys (see bloom.rs);
//!   +------------------------------+   empty when bloom_bits_per_key = 0; never compressed
//!   | index block      | trailer   |   block format, restart interval 1: one entry per data
//!   +------------------------------+   block, key = the block's last internal key,
//!   | footer (48 bytes)            |   value = varint offset ++ varint size of the block
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
//! ```
//!
//! A block handle `(offset, size)` names the stored bytes of a block; its trailer follows at
//! `offset + size`. A block is compressed only when LZ4 saves at least 1/8 of its size. The
//! masked crc32c is [`masked_crc`] (LevelDB's masking).
//!
//! # Reading
//!
//! [`Table::open`] checks the footer (magic, checksum, version), then reads and verifies the
//! index and filter blocks and keeps both in memory. Data blocks are read on demand with
//! `pread` (so an `Arc<Table>` is shared by threads without a lock), each verified against
//! its checksum, and go through the shared [`BlockCache`] keyed by `(file id, offset)`. Any
//! damage — truncation, bad magic, bad checksum, a handle outside the file, a malformed block
//! — is [`Error::Corruption`] naming the file and the byte offset of the damaged structure.
//!
//! A point lookup ([`Table::get`]) asks the bloom filter, then seeks the index to the first
//! data block whose last key is `>=` the target, then seeks inside that block. Scans use
//! [`TableIterator`], a two-level iterator over the index and the current data block.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::block::{Block, BlockBuilder, BlockIter};
use super::bloom::{BloomBuilder, BloomFilter};
use super::cache::{BlockCache, LruCache};
use super::coding::{masked_crc, put_varint, read_u32, read_u64, Decoder};
use super::error::{Error, IoContext, Result};
use super::iterator::InternalIterator;
use super::key::{compare_internal, kind_of, seq_of, user_part, ValueKind, TRAILER_LEN};
use super::options::{Compression, Options};

/// Size of the fixed footer at the end of every table.
pub const FOOTER_LEN: usize = 48;
/// Size of the trailer after every block: compression type + masked crc32c.
pub const BLOCK_TRAILER_LEN: usize = 5;
/// The format version this code writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The last 8 bytes of every table: "STRATSST".
pub const TABLE_MAGIC: u64 = u64::from_le_bytes(*b"STRATSST");

const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_LZ4: u8 = 1;
/// LZ4 cannot expand data more than ~255x; larger claims are damage, not data.
const LZ4_MAX_RATIO: usize = 255;

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
    fn end_with_trailer(&self) -> Option<u64> {
        self.offset
            .checked_add(self.size)?
            .checked_add(BLOCK_TRAILER_LEN as u64)
    }
}

/// How tables are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableOptions {
    /// Target size of a data block before compression.
    pub block_size: usize,
    /// Entries between restart points in data blocks.
    pub restart_interval: usize,
    /// Bloom filter bits per distinct engine key (0: no filter).
    pub bloom_bits_per_key: usize,
    /// Compression of data and index blocks.
    pub compression: Compression,
}

impl From<&Options> for TableOptions {
    fn from(o: &Options) -> Self {
        TableOptions {
            block_size: o.block_size,
            restart_interval: o.block_restart_interval,
            bloom_bits_per_key: o.bloom_bits_per_key,
            compression: o.compression,
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
    /// Entries that are tombstones ([`ValueKind::Delete`]).
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

/// Writes one table. Entries must be added in increasing [`compare_internal`] order.
///
/// Dropping a builder without calling [`TableBuilder::finish`] leaves a partial file that
/// the caller deletes.
#[derive(Debug)]
pub struct TableBuilder {
    path: PathBuf,
    writer: BufWriter<File>,
    opts: TableOptions,
    offset: u64,
    data_block: BlockBuilder,
    index_block: BlockBuilder,
    bloom: BloomBuilder,
    last_key: Vec<u8>,
    num_entries: u64,
    num_deletions: u64,
    smallest_key: Vec<u8>,
    smallest_seq: u64,
    largest_seq: u64,
}

impl TableBuilder {
    /// Creates (truncating) the file at `path`.
    pub fn new(path: &Path, opts: TableOptions) -> Result<TableBuilder> {
        let file = File::create(path).context(|| format!("creating table {}", path.display()))?;
        Ok(TableBuilder {
            path: path.to_path_buf(),
            writer: BufWriter::with_capacity(64 << 10, file),
            opts,
            offset: 0,
            data_block: BlockBuilder::new(opts.restart_interval),
            index_block: BlockBuilder::new(1),
            bloom: BloomBuilder::new(opts.bloom_bits_per_key),
            last_key: Vec::new(),
            num_entries: 0,
            num_deletions: 0,
            smallest_key: Vec::new(),
            smallest_seq: 0,
            largest_seq: 0,
        })
    }

    /// Appends an entry; `ikey` is an internal key greater than every key added before.
    pub fn add(&mut self, ikey: &[u8], value: &[u8]) -> Result<()> {
        if ikey.len() < TRAILER_LEN {
            return Err(Error::InvalidArgument(format!(
                "internal key of {} bytes has no trailer",
                ikey.len()
            )));
        }
        debug_assert!(
            self.num_entries == 0 || compare_internal(&self.last_key, ikey) == Ordering::Less,
            "table keys must be added in increasing order"
        );
        let seq = seq_of(ikey);
        if self.num_entries == 0 {
            self.smallest_key = ikey.to_vec();
            self.smallest_seq = seq;
            self.largest_seq = seq;
            self.bloom.add_key(user_part(ikey));
        } else {
            self.smallest_seq = self.smallest_seq.min(seq);
            self.largest_seq = self.largest_seq.max(seq);
            if user_part(&self.last_key) != user_part(ikey) {
                self.bloom.add_key(user_part(ikey));
            }
        }
        if kind_of(ikey) == Some(ValueKind::Delete) {
            self.num_deletions += 1;
        }
        self.data_block.add(ikey, value);
        self.last_key.clear();
        self.last_key.extend_from_slice(ikey);
        self.num_entries += 1;
        if self.data_block.estimated_size() >= self.opts.block_size {
            self.flush_data_block()?;
        }
        Ok(())
    }

    /// Entries added so far.
    pub fn num_entries(&self) -> u64 {
        self.num_entries
    }

    /// About how large the file would be if finished now (before the filter).
    pub fn estimated_file_size(&self) -> u64 {
        self.offset
            + self.data_block.estimated_size() as u64
            + self.index_block.estimated_size() as u64
            + FOOTER_LEN as u64
    }

    fn flush_data_block(&mut self) -> Result<()> {
        if self.data_block.is_empty() {
            return Ok(());
        }
        let raw = self.data_block.finish();
        let handle = self.write_block(&raw, self.opts.compression)?;
        let mut encoded = Vec::with_capacity(20);
        handle.encode_to(&mut encoded);
        // The block's last key separates it from the next block: >= all of its keys and
        // < all of the next block's.
        self.index_block.add(&self.last_key, &encoded);
        Ok(())
    }

    fn write_block(&mut self, raw: &[u8], compression: Compression) -> Result<BlockHandle> {
        let compressed;
        let (contents, ty): (&[u8], u8) = match compression {
            Compression::Lz4 => {
                compressed = lz4_flex::block::compress_prepend_size(raw);
                if compressed.len() <= raw.len() - raw.len() / 8 {
                    (&compressed, COMPRESSION_LZ4)
                } else {
                    (raw, COMPRESSION_NONE)
                }
            }
            Compression::None => (raw, COMPRESSION_NONE),
        };
        let crc = masked_crc(&[contents, &[ty]]);
        let path = &self.path;
        let what = || format!("writing table {}", path.display());
        self.writer.write_all(contents).context(what)?;
        self.writer.write_all(&[ty]).context(what)?;
        self.writer.write_all(&crc.to_le_bytes()).context(what)?;
        let handle = BlockHandle {
            offset: self.offset,
            size: contents.len() as u64,
        };
        self.offset += (contents.len() + BLOCK_TRAILER_LEN) as u64;
        Ok(handle)
    }

    /// Writes the last data block, the filter, the index and the footer, and fsyncs the
    /// file. (Making the file's directory entry durable is the caller's business.)
    pub fn finish(mut self) -> Result<TableSummary> {
        self.flush_data_block()?;
        let filter = std::mem::replace(&mut self.bloom, BloomBuilder::new(0)).finish();
        let filter_handle = self.write_block(&filter, Compression::None)?;
        let index = self.index_block.finish();
        let index_handle = self.write_block(&index, self.opts.compression)?;

        let mut footer = Vec::with_capacity(FOOTER_LEN);
        footer.extend_from_slice(&filter_handle.offset.to_le_bytes());
        footer.extend_from_slice(&filter_handle.size.to_le_bytes());
        footer.extend_from_slice(&index_handle.offset.to_le_bytes());
        footer.extend_from_slice(&index_handle.size.to_le_bytes());
        footer.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let crc = masked_crc(&[&footer]);
        footer.extend_from_slice(&crc.to_le_bytes());
        footer.extend_from_slice(&TABLE_MAGIC.to_le_bytes());
        debug_assert_eq!(footer.len(), FOOTER_LEN);

        let path = self.path;
        let what = || format!("writing table {}", path.display());
        self.writer.write_all(&footer).context(what)?;
        self.writer.flush().context(what)?;
        let file = self
            .writer
            .into_inner()
            .map_err(|e| Error::io(what(), e.into_error()))?;
        file.sync_all()
            .context(|| format!("syncing table {}", path.display()))?;
        Ok(TableSummary {
            file_size: self.offset + FOOTER_LEN as u64,
            num_entries: self.num_entries,
            num_deletions: self.num_deletions,
            smallest_key: self.smallest_key,
            largest_key: self.last_key,
            smallest_seq: self.smallest_seq,
            largest_seq: self.largest_seq,
        })
    }
}

/// The result of a point lookup in one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableLookup {
    /// The bloom filter rules the engine key out.
    FilteredOut,
    /// No entry at or after the seek key has the engine key.
    NotFound,
    /// The first entry `>=` the seek key, which has the engine key (it may be a tombstone).
    Found {
        /// Its internal key.
        key: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
    },
}

/// Reads `buf.len()` bytes at `offset`; running off the end of the file is corruption.
fn read_exact_at(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corruption(
                path,
                offset,
                format!("file ends inside a {}-byte read", buf.len()),
            )
        } else {
            Error::io(format!("reading table {}", path.display()), e)
        }
    })
}

/// Reads, verifies and decompresses the block at `handle`, which must end (with its trailer)
/// at or before `limit`.
fn read_block_contents(
    file: &File,
    path: &Path,
    handle: BlockHandle,
    limit: u64,
) -> Result<Vec<u8>> {
    let corrupt = |reason: String| Error::corruption(path, handle.offset, reason);
    match handle.end_with_trailer() {
        Some(end) if end <= limit => {}
        _ => {
            return Err(corrupt(format!(
                "block handle (offset {}, size {}) points outside the {limit}-byte region",
                handle.offset, handle.size
            )))
        }
    }
    // Bounded by `limit`, itself bounded by the file's real size.
    let size = handle.size as usize;
    let mut buf = vec![0u8; size + BLOCK_TRAILER_LEN];
    read_exact_at(file, path, &mut buf, handle.offset)?;
    let ty = buf[size];
    let stored_crc = read_u32(&buf, size + 1).unwrap_or(0);
    if masked_crc(&[&buf[..size], &[ty]]) != stored_crc {
        return Err(corrupt("block checksum mismatch".into()));
    }
    buf.truncate(size);
    match ty {
        COMPRESSION_NONE => Ok(buf),
        COMPRESSION_LZ4 => {
            let (claimed, _) = lz4_flex::block::uncompressed_size(&buf)
                .map_err(|e| corrupt(format!("bad lz4 block: {e}")))?;
            if claimed > size.saturating_mul(LZ4_MAX_RATIO).saturating_add(64) {
                return Err(corrupt(format!(
                    "lz4 block of {size} bytes claims {claimed} uncompressed bytes"
                )));
            }
            let out = lz4_flex::block::decompress_size_prepended(&buf)
                .map_err(|e| corrupt(format!("bad lz4 block: {e}")))?;
            if out.len() != claimed {
                return Err(corrupt(format!(
                    "lz4 block decompressed to {} bytes, expected {claimed}",
                    out.len()
                )));
            }
            Ok(out)
        }
        other => Err(corrupt(format!("unknown compression type {other}"))),
    }
}

/// A table's index, decoded once at open: the last key of every data block, in one buffer,
/// and the block handles. Seeks binary-search it without decoding varints.
#[derive(Debug, Default)]
struct DecodedIndex {
    /// Every block's last key, concatenated.
    keys: Vec<u8>,
    /// Per block: end of its key in `keys`, and its handle.
    entries: Vec<(usize, BlockHandle)>,
}

impl DecodedIndex {
    fn decode(block: &Arc<Block>, path: &Path) -> Result<DecodedIndex> {
        let mut index = DecodedIndex::default();
        let mut it = block.iter();
        it.seek_to_first()?;
        while it.valid() {
            let handle = BlockHandle::decode(it.value()).ok_or_else(|| {
                Error::corruption(
                    path,
                    block.offset(),
                    "malformed block handle in the index block",
                )
            })?;
            index.keys.extend_from_slice(it.key());
            index.entries.push((index.keys.len(), handle));
            it.next()?;
        }
        Ok(index)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn key(&self, i: usize) -> &[u8] {
        let start = i.checked_sub(1).map_or(0, |p| self.entries[p].0);
        &self.keys[start..self.entries[i].0]
    }

    fn handle(&self, i: usize) -> BlockHandle {
        self.entries[i].1
    }

    /// The first block whose last key is `>= target` (`len()` if none).
    fn seek(&self, target: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.entries.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if compare_internal(self.key(mid), target) == std::cmp::Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// An open table: its index and filter in memory, data blocks read on demand.
pub struct Table {
    path: PathBuf,
    file: File,
    file_id: u64,
    file_size: u64,
    index: DecodedIndex,
    /// Offset of the index block (for error messages).
    index_offset: u64,
    filter: BloomFilter,
    /// End of the data blocks (the filter block's offset).
    data_end: u64,
    cache: Option<Arc<BlockCache>>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path)
            .field("file_id", &self.file_id)
            .field("file_size", &self.file_size)
            .field("index_entries", &self.index.len())
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl Table {
    /// Opens table `file_id` at `path`, whose size the manifest recorded as `file_size`,
    /// verifying its footer, index and filter.
    pub fn open(
        path: &Path,
        file_id: u64,
        file_size: u64,
        cache: Option<Arc<BlockCache>>,
    ) -> Result<Table> {
        let corrupt = |offset: u64, reason: String| Error::corruption(path, offset, reason);
        let file = File::open(path).context(|| format!("opening table {}", path.display()))?;
        let actual = file
            .metadata()
            .context(|| format!("reading metadata of table {}", path.display()))?
            .len();
        if actual < file_size {
            return Err(corrupt(
                actual,
                format!("file is truncated: {actual} bytes, expected {file_size}"),
            ));
        }
        let Some(footer_offset) = file_size.checked_sub(FOOTER_LEN as u64) else {
            return Err(corrupt(
                0,
                format!("file of {file_size} bytes is too short to hold a table footer"),
            ));
        };
        let mut footer = [0u8; FOOTER_LEN];
        read_exact_at(&file, path, &mut footer, footer_offset)?;
        let field = |pos: usize| read_u64(&footer, pos).unwrap_or(0);
        if field(40) != TABLE_MAGIC {
            return Err(corrupt(
                footer_offset + 40,
                "bad magic number: not a Strata table".into(),
            ));
        }
        if masked_crc(&[&footer[..36]]) != read_u32(&footer, 36).unwrap_or(0) {
            return Err(corrupt(footer_offset, "footer checksum mismatch".into()));
        }
        let version = read_u32(&footer, 32).unwrap_or(0);
        if version != FORMAT_VERSION {
            return Err(corrupt(
                footer_offset + 32,
                format!("unsupported table format version {version} (this build reads {FORMAT_VERSION})"),
            ));
        }
        let filter_handle = BlockHandle {
            offset: field(0),
            size: field(8),
        };
        let index_handle = BlockHandle {
            offset: field(16),
            size: field(24),
        };
        // Data blocks end where the filter starts; the filter must end by the index, and the
        // index by the footer.
        let index_data = read_block_contents(&file, path, index_handle, footer_offset)?;
        let filter_data = read_block_contents(&file, path, filter_handle, index_handle.offset)?;
        let index_block = Arc::new(Block::new(index_data, path, index_handle.offset)?);
        let index = DecodedIndex::decode(&index_block, path)?;
        Ok(Table {
            path: path.to_path_buf(),
            file,
            file_id,
            file_size,
            index,
            index_offset: index_handle.offset,
            filter: BloomFilter::new(filter_data),
            data_end: filter_handle.offset,
            cache,
        })
    }

    /// The table's file id.
    pub fn file_id(&self) -> u64 {
        self.file_id
    }

    /// The table's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The table's size in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Offset of the index block in the file.
    pub fn index_offset(&self) -> u64 {
        self.index_offset
    }

    /// The data block at `handle`, from the block cache if present.
    fn read_block(&self, handle: BlockHandle, fill_cache: bool) -> Result<Arc<Block>> {
        let key = (self.file_id, handle.offset);
        if let Some(block) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            return Ok(block);
        }
        let data = read_block_contents(&self.file, &self.path, handle, self.data_end)?;
        let block = Arc::new(Block::new(data, &self.path, handle.offset)?);
        if fill_cache {
            if let Some(cache) = &self.cache {
                cache.insert(key, Arc::clone(&block), block.size());
            }
        }
        Ok(block)
    }

    /// Looks up the first entry `>= seek_key` and reports it if its engine key is
    /// `engine_key` (`seek_key` is normally [`super::key::seek_key`]`(engine_key, snapshot)`).
    pub fn get(&self, engine_key: &[u8], seek_key: &[u8], fill_cache: bool) -> Result<TableLookup> {
        if !self.filter.may_contain(engine_key) {
            return Ok(TableLookup::FilteredOut);
        }
        // The first block whose last key is >= seek_key holds the answer; the loop only
        // continues past blocks that turn out empty.
        for i in self.index.seek(seek_key)..self.index.len() {
            let handle = self.index.handle(i);
            let mut it = BlockIter::new(self.read_block(handle, fill_cache)?);
            it.seek(seek_key)?;
            if it.valid() {
                return Ok(if user_part(it.key()) == engine_key {
                    TableLookup::Found {
                        key: it.key().to_vec(),
                        value: it.value().to_vec(),
                    }
                } else {
                    TableLookup::NotFound
                });
            }
        }
        Ok(TableLookup::NotFound)
    }

    /// An unpositioned iterator over the whole table. With `fill_cache = false` it uses
    /// cached blocks but does not add the ones it reads (for long scans).
    pub fn iter(self: &Arc<Self>, fill_cache: bool) -> TableIterator {
        TableIterator {
            table: Arc::clone(self),
            index: None,
            data: None,
            fill_cache,
        }
    }
}

/// A two-level iterator over a table: the index block picks a data block, a [`BlockIter`]
/// walks it. Empty data blocks are skipped in both directions.
#[derive(Debug)]
pub struct TableIterator {
    table: Arc<Table>,
    /// Position in the table's index (`None`: before the first or after the last block).
    index: Option<usize>,
    data: Option<BlockIter>,
    fill_cache: bool,
}

impl TableIterator {
    /// Points `data` at the block the index is on (or at nothing).
    fn load_block(&mut self) -> Result<()> {
        let Some(i) = self.index else {
            self.data = None;
            return Ok(());
        };
        let handle = self.table.index.handle(i);
        if self
            .data
            .as_ref()
            .is_some_and(|d| d.block().offset() == handle.offset)
        {
            return Ok(());
        }
        let block = self.table.read_block(handle, self.fill_cache)?;
        self.data = Some(BlockIter::new(block));
        Ok(())
    }

    fn data_valid(&self) -> bool {
        self.data.as_ref().is_some_and(BlockIter::valid)
    }

    fn skip_forward(&mut self) -> Result<()> {
        while !self.data_valid() {
            let Some(i) = self.index else {
                self.data = None;
                return Ok(());
            };
            self.index = (i + 1 < self.table.index.len()).then_some(i + 1);
            self.load_block()?;
            if let Some(d) = &mut self.data {
                d.seek_to_first()?;
            }
        }
        Ok(())
    }

    fn skip_backward(&mut self) -> Result<()> {
        while !self.data_valid() {
            let Some(i) = self.index else {
                self.data = None;
                return Ok(());
            };
            self.index = i.checked_sub(1);
            self.load_block()?;
            if let Some(d) = &mut self.data {
                d.seek_to_last()?;
            }
        }
        Ok(())
    }

    /// Leaves the iterator invalid if `r` is an error.
    fn guard(&mut self, r: Result<()>) -> Result<()> {
        if r.is_err() {
            self.data = None;
        }
        r
    }

    fn seek_to_first_inner(&mut self) -> Result<()> {
        self.index = (!self.table.index.is_empty()).then_some(0);
        self.load_block()?;
        if let Some(d) = &mut self.data {
            d.seek_to_first()?;
        }
        self.skip_forward()
    }

    fn seek_to_last_inner(&mut self) -> Result<()> {
        self.index = self.table.index.len().checked_sub(1);
        self.load_block()?;
        if let Some(d) = &mut self.data {
            d.seek_to_last()?;
        }
        self.skip_backward()
    }

    fn seek_inner(&mut self, target: &[u8]) -> Result<()> {
        let i = self.table.index.seek(target);
        self.index = (i < self.table.index.len()).then_some(i);
        self.load_block()?;
        if let Some(d) = &mut self.data {
            d.seek(target)?;
        }
        self.skip_forward()
    }

    fn seek_for_prev_inner(&mut self, target: &[u8]) -> Result<()> {
        // The first block whose last key is >= target, or the last block if target is past
        // every key; entries <= target are in it or before it.
        let i = self.table.index.seek(target);
        self.index = if i < self.table.index.len() {
            Some(i)
        } else {
            self.table.index.len().checked_sub(1)
        };
        self.load_block()?;
        if let Some(d) = &mut self.data {
            d.seek_for_prev(target)?;
        }
        self.skip_backward()
    }

    fn next_inner(&mut self) -> Result<()> {
        match &mut self.data {
            Some(d) if d.valid() => d.next()?,
            _ => return Ok(()),
        }
        self.skip_forward()
    }

    fn prev_inner(&mut self) -> Result<()> {
        match &mut self.data {
            Some(d) if d.valid() => d.prev()?,
            _ => return Ok(()),
        }
        self.skip_backward()
    }
}

impl InternalIterator for TableIterator {
    fn valid(&self) -> bool {
        self.data_valid()
    }

    fn key(&self) -> &[u8] {
        self.data.as_ref().map_or(&[], BlockIter::key)
    }

    fn value(&self) -> &[u8] {
        self.data.as_ref().map_or(&[], BlockIter::value)
    }

    fn seek_to_first(&mut self) -> Result<()> {
        let r = self.seek_to_first_inner();
        self.guard(r)
    }

    fn seek_to_last(&mut self) -> Result<()> {
        let r = self.seek_to_last_inner();
        self.guard(r)
    }

    fn seek(&mut self, target: &[u8]) -> Result<()> {
        let r = self.seek_inner(target);
        self.guard(r)
    }

    fn seek_for_prev(&mut self, target: &[u8]) -> Result<()> {
        let r = self.seek_for_prev_inner(target);
        self.guard(r)
    }

    fn next(&mut self) -> Result<()> {
        let r = self.next_inner();
        self.guard(r)
    }

    fn prev(&mut self) -> Result<()> {
        let r = self.prev_inner();
        self.guard(r)
    }
}

/// A bounded cache of open tables by file id, so hot tables keep their file handle, index
/// and filter in memory while the number of open files stays bounded.
#[derive(Debug)]
pub struct TableCache {
    dir: PathBuf,
    tables: LruCache<u64, Arc<Table>>,
    block_cache: Option<Arc<BlockCache>>,
}

impl TableCache {
    /// A cache of up to `capacity` open tables of `dir`, whose data blocks go through
    /// `block_cache`.
    pub fn new(dir: PathBuf, capacity: usize, block_cache: Option<Arc<BlockCache>>) -> Self {
        // Each table is charged 1; keep shards large enough to hold several tables.
        let shards = (capacity / 8).max(1);
        TableCache {
            dir,
            tables: LruCache::with_shards(capacity, shards),
            block_cache,
        }
    }

    /// The open table `file_id` (of size `file_size`), opening it on a miss.
    pub fn get(&self, file_id: u64, file_size: u64) -> Result<Arc<Table>> {
        if let Some(t) = self.tables.get(&file_id) {
            return Ok(t);
        }
        let path = table_file_name(&self.dir, file_id);
        let table = Arc::new(Table::open(
            &path,
            file_id,
            file_size,
            self.block_cache.clone(),
        )?);
        self.tables.insert(file_id, Arc::clone(&table), 1);
        Ok(table)
    }

    /// Forgets table `file_id` (after it is deleted); holders of its `Arc` keep it open.
    pub fn evict(&self, file_id: u64) {
        self.tables.remove(&file_id);
    }

    /// The directory the tables live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The block cache shared by the tables.
    pub fn block_cache(&self) -> Option<&Arc<BlockCache>> {
        self.block_cache.as_ref()
    }

    /// Tables currently open in the cache.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Whether no table is open in the cache.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm::key::{internal_key, seek_key, MAX_SEQ};
    use proptest::prelude::*;

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn build(dir: &Path, file_id: u64, entries: &Entries, opts: TableOptions) -> TableSummary {
        let mut b = TableBuilder::new(&table_file_name(dir, file_id), opts).unwrap();
        for (k, v) in entries {
            b.add(k, v).unwrap();
        }
        assert_eq!(b.num_entries(), entries.len() as u64);
        b.finish().unwrap()
    }

    fn open(dir: &Path, file_id: u64, size: u64, cache: Option<Arc<BlockCache>>) -> Arc<Table> {
        Arc::new(Table::open(&table_file_name(dir, file_id), file_id, size, cache).unwrap())
    }

    fn scan_forward(t: &Arc<Table>) -> Result<Entries> {
        let mut it = t.iter(true);
        let mut out = Vec::new();
        it.seek_to_first()?;
        while it.valid() {
            out.push((it.key().to_vec(), it.value().to_vec()));
            it.next()?;
        }
        Ok(out)
    }

    fn scan_backward(t: &Arc<Table>) -> Result<Entries> {
        let mut it = t.iter(false);
        let mut out = Vec::new();
        it.seek_to_last()?;
        while it.valid() {
            out.push((it.key().to_vec(), it.value().to_vec()));
            it.prev()?;
        }
        out.reverse();
        Ok(out)
    }

    /// Deterministic pseudo-random entries: `n` distinct user keys, 1-3 versions each.
    fn sample_entries(n: usize) -> Entries {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out = Vec::new();
        for i in 0..n {
            let user = format!("\x00key-{:06}-{}", i, rand() % 1000).into_bytes();
            let versions = 1 + rand() % 3;
            for v in 0..versions {
                let seq = 10_000 - i as u64 * 3 - v;
                let kind = if rand() % 5 == 0 {
                    ValueKind::Delete
                } else {
                    ValueKind::Put
                };
                let value = match kind {
                    ValueKind::Delete => Vec::new(),
                    ValueKind::Put => format!("value-{i}-{v}-")
                        .repeat(1 + (rand() % 4) as usize)
                        .into_bytes(),
                };
                out.push((internal_key(&user, seq, kind), value));
            }
        }
        out.sort_by(|a, b| compare_internal(&a.0, &b.0));
        out
    }

    fn small_opts(compression: Compression) -> TableOptions {
        TableOptions {
            block_size: 256,
            restart_interval: 4,
            bloom_bits_per_key: 10,
            compression,
        }
    }

    /// The model answer for `Table::get`.
    fn model_get(
        entries: &Entries,
        engine_key: &[u8],
        target: &[u8],
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let i = entries.partition_point(|(k, _)| compare_internal(k, target) == Ordering::Less);
        entries
            .get(i)
            .filter(|(k, _)| user_part(k) == engine_key)
            .cloned()
    }

    fn check_get(t: &Table, entries: &Entries, engine_key: &[u8], seq: u64) {
        let target = seek_key(engine_key, seq);
        let got = t.get(engine_key, &target, true).unwrap();
        match model_get(entries, engine_key, &target) {
            Some((key, value)) => assert_eq!(got, TableLookup::Found { key, value }),
            None => assert!(
                matches!(got, TableLookup::NotFound | TableLookup::FilteredOut),
                "{got:?}"
            ),
        }
    }

    #[test]
    fn thousands_of_entries_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let entries = sample_entries(3000);
        for (id, compression) in [(1, Compression::None), (2, Compression::Lz4)] {
            let summary = build(dir.path(), id, &entries, small_opts(compression));
            assert_eq!(summary.num_entries, entries.len() as u64);
            assert_eq!(
                summary.num_deletions,
                entries
                    .iter()
                    .filter(|(k, _)| kind_of(k) == Some(ValueKind::Delete))
                    .count() as u64
            );
            assert_eq!(summary.smallest_key, entries[0].0);
            assert_eq!(summary.largest_key, entries[entries.len() - 1].0);
            assert_eq!(
                summary.smallest_seq,
                entries.iter().map(|(k, _)| seq_of(k)).min().unwrap()
            );
            assert_eq!(
                summary.largest_seq,
                entries.iter().map(|(k, _)| seq_of(k)).max().unwrap()
            );
            let path = table_file_name(dir.path(), id);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), summary.file_size);

            let cache = Arc::new(BlockCache::new(1 << 20));
            let t = open(dir.path(), id, summary.file_size, Some(cache.clone()));
            assert_eq!(t.file_id(), id);
            assert_eq!(t.path(), path);
            assert_eq!(t.file_size(), summary.file_size);
            assert_eq!(scan_forward(&t).unwrap(), entries);
            assert_eq!(scan_backward(&t).unwrap(), entries);

            for (k, _) in entries.iter().step_by(7) {
                let user = user_part(k);
                check_get(&t, &entries, user, MAX_SEQ);
                check_get(&t, &entries, user, seq_of(k));
                check_get(&t, &entries, user, seq_of(k).saturating_sub(1));
            }
            // Absent keys are mostly filtered out.
            let filtered = (0..1000)
                .filter(|i| {
                    let user = format!("\x00absent-{i}").into_bytes();
                    let target = seek_key(&user, MAX_SEQ);
                    let got = t.get(&user, &target, true).unwrap();
                    assert_ne!(
                        std::mem::discriminant(&got),
                        std::mem::discriminant(&TableLookup::Found {
                            key: vec![],
                            value: vec![]
                        })
                    );
                    got == TableLookup::FilteredOut
                })
                .count();
            assert!(filtered > 950, "only {filtered} filtered");
        }
        // LZ4 made the compressible table smaller.
        let plain = std::fs::metadata(table_file_name(dir.path(), 1))
            .unwrap()
            .len();
        let lz4 = std::fs::metadata(table_file_name(dir.path(), 2))
            .unwrap()
            .len();
        assert!(lz4 < plain, "lz4 {lz4} vs plain {plain}");
    }

    #[test]
    fn empty_table() {
        let dir = tempfile::tempdir().unwrap();
        let summary = build(dir.path(), 1, &Vec::new(), TableOptions::default());
        assert_eq!(summary.num_entries, 0);
        let t = open(dir.path(), 1, summary.file_size, None);
        assert!(scan_forward(&t).unwrap().is_empty());
        assert!(scan_backward(&t).unwrap().is_empty());
        let mut it = t.iter(true);
        it.seek(b"\x00a\0\0\0\0\0\0\0\x01").unwrap();
        assert!(!it.valid());
        it.seek_for_prev(b"\x00a\0\0\0\0\0\0\0\x01").unwrap();
        assert!(!it.valid());
        let got = t.get(b"\x00a", &seek_key(b"\x00a", 5), true).unwrap();
        assert!(matches!(
            got,
            TableLookup::NotFound | TableLookup::FilteredOut
        ));
    }

    #[test]
    fn block_cache_hits_and_fill_cache() {
        let dir = tempfile::tempdir().unwrap();
        let entries = sample_entries(500);
        let summary = build(dir.path(), 7, &entries, small_opts(Compression::None));
        let cache = Arc::new(BlockCache::new(1 << 20));
        let t = open(dir.path(), 7, summary.file_size, Some(cache.clone()));

        // A scan that does not fill the cache leaves it empty.
        let mut it = t.iter(false);
        it.seek_to_first().unwrap();
        while it.valid() {
            it.next().unwrap();
        }
        assert!(cache.is_empty());

        assert_eq!(scan_forward(&t).unwrap(), entries);
        let blocks = cache.len();
        assert!(blocks > 10);
        let misses = cache.misses();
        assert_eq!(scan_forward(&t).unwrap(), entries);
        assert_eq!(cache.misses(), misses, "second scan must be all hits");
        assert!(cache.hits() >= blocks as u64);
    }

    #[test]
    fn table_cache_opens_once_and_evicts() {
        let dir = tempfile::tempdir().unwrap();
        let entries = sample_entries(50);
        let mut sizes = Vec::new();
        for id in 1..=4 {
            sizes.push(build(dir.path(), id, &entries, TableOptions::default()).file_size);
        }
        let tc = TableCache::new(dir.path().to_path_buf(), 2, None);
        let a = tc.get(1, sizes[0]).unwrap();
        let b = tc.get(1, sizes[0]).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        tc.evict(1);
        let c = tc.get(1, sizes[0]).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        for id in 1..=4 {
            let t = tc.get(id, sizes[id as usize - 1]).unwrap();
            assert_eq!(scan_forward(&t).unwrap(), entries);
        }
        assert!(tc.len() <= 2);
        // Missing file: an I/O error, not a panic.
        assert!(tc.get(99, 100).is_err());
        assert_eq!(
            table_file_name(Path::new("/d"), 42),
            PathBuf::from("/d/000042.sst")
        );
    }

    #[test]
    fn format_constants() {
        assert_eq!(TABLE_MAGIC, 0x5453_5354_4152_5453);
        let dir = tempfile::tempdir().unwrap();
        let summary = build(dir.path(), 1, &sample_entries(10), TableOptions::default());
        let bytes = std::fs::read(table_file_name(dir.path(), 1)).unwrap();
        assert_eq!(&bytes[bytes.len() - 8..], b"STRATSST");
        let f = bytes.len() - FOOTER_LEN;
        assert_eq!(read_u32(&bytes, f + 32), Some(FORMAT_VERSION));
        assert_eq!(summary.file_size, bytes.len() as u64);
    }

    #[test]
    fn tables_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Table>();
        check::<TableCache>();
        check::<TableIterator>();
    }

    /// Opens, scans both ways and probes a table, returning the first error.
    fn read_everything(path: &Path, size: u64, entries: &Entries) -> Result<()> {
        let t = Arc::new(Table::open(path, 1, size, None)?);
        let fwd = scan_forward(&t)?;
        let bwd = scan_backward(&t)?;
        assert_eq!(fwd, bwd);
        for (k, _) in entries.iter().step_by(11) {
            t.get(user_part(k), &seek_key(user_part(k), MAX_SEQ), false)?;
        }
        // Whatever reads succeed must return the real data.
        assert_eq!(&fwd, entries);
        Ok(())
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let entries = sample_entries(300);
        for compression in [Compression::None, Compression::Lz4] {
            let summary = build(dir.path(), 1, &entries, small_opts(compression));
            let path = table_file_name(dir.path(), 1);
            let original = std::fs::read(&path).unwrap();
            let len = original.len();
            let t = open(dir.path(), 1, summary.file_size, None);
            let (filter_off, index_off) = (t.data_end, t.index_offset());
            drop(t);
            // A sample of every region: data, filter, index, footer (all of it).
            let mut positions: Vec<usize> = (0..len).step_by(37).collect();
            positions.extend(filter_off as usize..filter_off as usize + 16);
            positions.extend(index_off as usize..index_off as usize + 16);
            positions.extend(len - FOOTER_LEN..len);
            for pos in positions {
                for bit in [0u8, 5] {
                    let mut damaged = original.clone();
                    damaged[pos] ^= 1 << bit;
                    std::fs::write(&path, &damaged).unwrap();
                    match read_everything(&path, summary.file_size, &entries) {
                        Err(e) => assert!(e.is_corruption(), "byte {pos}: {e}"),
                        Ok(()) => panic!("flip of byte {pos} bit {bit} went unnoticed"),
                    }
                }
            }
            std::fs::write(&path, &original).unwrap();
            read_everything(&path, summary.file_size, &entries).unwrap();
        }
    }

    #[test]
    fn truncation_and_bad_footers_are_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let entries = sample_entries(100);
        let summary = build(dir.path(), 1, &entries, small_opts(Compression::None));
        let path = table_file_name(dir.path(), 1);
        let original = std::fs::read(&path).unwrap();

        // Truncated below the recorded size.
        for keep in [0, 10, 47, 48, original.len() / 2, original.len() - 1] {
            std::fs::write(&path, &original[..keep]).unwrap();
            let err = Table::open(&path, 1, summary.file_size, None).unwrap_err();
            assert!(err.is_corruption(), "{err}");
            // Opening with the truncated length: no footer where it should be.
            let err = Table::open(&path, 1, keep as u64, None).unwrap_err();
            assert!(err.is_corruption(), "{err}");
            assert!(err.to_string().contains(&path.display().to_string()));
        }

        // An unknown format version with a valid checksum gets a clear message.
        let mut v2 = original.clone();
        let f = v2.len() - FOOTER_LEN;
        v2[f + 32..f + 36].copy_from_slice(&2u32.to_le_bytes());
        let crc = masked_crc(&[&v2[f..f + 36]]);
        v2[f + 36..f + 40].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &v2).unwrap();
        let err = Table::open(&path, 1, summary.file_size, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("unsupported table format version 2"),
            "{err}"
        );

        // A checksummed footer whose index handle points past the file.
        let mut bad = original.clone();
        bad[f + 16..f + 24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let crc = masked_crc(&[&bad[f..f + 36]]);
        bad[f + 36..f + 40].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bad).unwrap();
        let err = Table::open(&path, 1, summary.file_size, None).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
    }

    fn arb_entries() -> impl Strategy<Value = Entries> {
        let value = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            (any::<u8>(), 0usize..200).prop_map(|(b, n)| vec![b; n]),
        ];
        proptest::collection::btree_map(
            (
                proptest::collection::vec(0u8..6, 0..10),
                0u64..1000,
                any::<bool>(),
            ),
            value,
            0..400,
        )
        .prop_map(|m| {
            let mut v: Entries = m
                .into_iter()
                .map(|((k, s, put), v)| {
                    let kind = if put {
                        ValueKind::Put
                    } else {
                        ValueKind::Delete
                    };
                    (internal_key(&k, s, kind), v)
                })
                .collect();
            v.sort_by(|a, b| compare_internal(&a.0, &b.0));
            v.dedup_by(|a, b| compare_internal(&a.0, &b.0) == Ordering::Equal);
            v
        })
    }

    fn arb_opts() -> impl Strategy<Value = TableOptions> {
        (
            16usize..2048,
            1usize..17,
            0usize..16,
            prop_oneof![Just(Compression::None), Just(Compression::Lz4)],
        )
            .prop_map(
                |(block_size, restart_interval, bloom_bits_per_key, compression)| TableOptions {
                    block_size,
                    restart_interval,
                    bloom_bits_per_key,
                    compression,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn table_matches_model(
            entries in arb_entries(),
            opts in arb_opts(),
            probes in proptest::collection::vec(
                (proptest::collection::vec(0u8..6, 0..10), 0u64..1001), 0..40),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let summary = build(dir.path(), 3, &entries, opts);
            let t = open(dir.path(), 3, summary.file_size, Some(Arc::new(BlockCache::new(4096))));
            prop_assert_eq!(&scan_forward(&t).unwrap(), &entries);
            prop_assert_eq!(&scan_backward(&t).unwrap(), &entries);

            let mut it = t.iter(true);
            for (user, seq) in probes {
                let target = seek_key(&user, seq);
                let i = entries.partition_point(|(k, _)| compare_internal(k, &target) == Ordering::Less);
                it.seek(&target).unwrap();
                prop_assert_eq!(it.valid(), i < entries.len());
                if i < entries.len() {
                    prop_assert_eq!(it.key(), &entries[i].0[..]);
                    prop_assert_eq!(it.value(), &entries[i].1[..]);
                    it.prev().unwrap();
                    prop_assert_eq!(it.valid(), i > 0);
                    if i > 0 {
                        prop_assert_eq!(it.key(), &entries[i - 1].0[..]);
                        it.next().unwrap();
                        prop_assert_eq!(it.key(), &entries[i].0[..]);
                    }
                }
                it.seek_for_prev(&target).unwrap();
                let j = entries.partition_point(|(k, _)| compare_internal(k, &target) != Ordering::Greater);
                prop_assert_eq!(it.valid(), j > 0);
                if j > 0 {
                    prop_assert_eq!(it.key(), &entries[j - 1].0[..]);
                    it.next().unwrap();
                    prop_assert_eq!(it.valid(), j < entries.len());
                    if j < entries.len() {
                        prop_assert_eq!(it.key(), &entries[j].0[..]);
                    }
                }

                let got = t.get(&user, &target, true).unwrap();
                match model_get(&entries, &user, &target) {
                    Some((key, value)) => prop_assert_eq!(got, TableLookup::Found { key, value }),
                    None => prop_assert!(matches!(got, TableLookup::NotFound | TableLookup::FilteredOut), "{:?}", got),
                }
            }
            // Every stored engine key passes the filter.
            for (k, _) in &entries {
                let got = t.get(user_part(k), &seek_key(user_part(k), MAX_SEQ), false).unwrap();
                prop_assert!(matches!(got, TableLookup::Found { .. }), "{:?}", got);
            }
        }

        #[test]
        fn random_corruption_never_panics(
            entries in arb_entries(),
            opts in arb_opts(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            truncate in proptest::option::of(any::<usize>()),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let summary = build(dir.path(), 1, &entries, opts);
            let path = table_file_name(dir.path(), 1);
            let mut data = std::fs::read(&path).unwrap();
            for (pos, x) in flips {
                let i = pos % data.len();
                data[i] ^= x;
            }
            let mut size = summary.file_size;
            if let Some(t) = truncate {
                data.truncate(t % data.len());
                size = data.len() as u64;
            }
            std::fs::write(&path, &data).unwrap();
            // Either an error or, when the damage happened to cancel out (x == 0), the data.
            if let Ok(t) = Table::open(&path, 1, size, None) {
                let t = Arc::new(t);
                let _ = scan_forward(&t);
                let _ = scan_backward(&t);
                for (k, _) in entries.iter().step_by(5) {
                    let _ = t.get(user_part(k), &seek_key(user_part(k), MAX_SEQ), true);
                }
            }
        }
    }
}
