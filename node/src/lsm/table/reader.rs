//! Reading a table: the footer, index and filter are verified and kept in memory at open;
//! data blocks are read on demand through the block cache. Also the bounded cache of open
//! tables.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::block::{Block, BlockIter};
use super::super::bloom::BloomFilter;
use super::super::cache::{BlockCache, LruCache};
use super::super::coding::{masked_crc, read_u32, read_u64};
use super::super::error::{Error, IoContext, Result};
use super::super::iterator::InternalIterator;
use super::super::key::{compare_internal, user_part};
use super::{
    table_file_name, BlockHandle, TableIterator, BLOCK_TRAILER_LEN, COMPRESSION_LZ4,
    COMPRESSION_NONE, FOOTER_LEN, FOOTER_V2_LEN, FORMAT_VERSION, FORMAT_VERSION_PREFIX,
    LZ4_MAX_RATIO, TABLE_MAGIC,
};

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
pub(super) struct DecodedIndex {
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

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn key(&self, i: usize) -> &[u8] {
        let start = i.checked_sub(1).map_or(0, |p| self.entries[p].0);
        &self.keys[start..self.entries[i].0]
    }

    pub(super) fn handle(&self, i: usize) -> BlockHandle {
        self.entries[i].1
    }

    /// The first block whose last key is `>= target` (`len()` if none).
    pub(super) fn seek(&self, target: &[u8]) -> usize {
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

/// A table's prefix filter and the name of the extractor that built it.
#[derive(Debug)]
struct PrefixFilter {
    extractor: Vec<u8>,
    filter: BloomFilter,
}

impl PrefixFilter {
    /// Decodes `name_len: u8 ++ name ++ bloom filter`.
    fn decode(mut data: Vec<u8>) -> Option<PrefixFilter> {
        let len = usize::from(*data.first()?);
        let name = data.get(1..1 + len)?.to_vec();
        data.drain(..1 + len);
        Some(PrefixFilter {
            extractor: name,
            filter: BloomFilter::new(data),
        })
    }
}

/// An open table: its index and filter in memory, data blocks read on demand.
pub struct Table {
    path: PathBuf,
    file: File,
    file_id: u64,
    file_size: u64,
    pub(super) index: DecodedIndex,
    /// Offset of the index block (for error messages).
    index_offset: u64,
    filter: BloomFilter,
    /// The prefix filter of a format-2 table.
    prefix_filter: Option<PrefixFilter>,
    /// End of the data blocks (the offset of the first filter block).
    pub(super) data_end: u64,
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
    /// verifying its footer, index, filter and prefix filter.
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
        // The last 48 bytes hold the version, checksum and magic of either footer.
        let Some(tail_offset) = file_size.checked_sub(FOOTER_LEN as u64) else {
            return Err(corrupt(
                0,
                format!("file of {file_size} bytes is too short to hold a table footer"),
            ));
        };
        let mut tail = [0u8; FOOTER_LEN];
        read_exact_at(&file, path, &mut tail, tail_offset)?;
        if read_u64(&tail, FOOTER_LEN - 8) != Some(TABLE_MAGIC) {
            return Err(corrupt(
                file_size - 8,
                "bad magic number: not a Strata table".into(),
            ));
        }
        let version = read_u32(&tail, FOOTER_LEN - 16).unwrap_or(0);
        let footer_len = match version {
            FORMAT_VERSION => FOOTER_LEN,
            FORMAT_VERSION_PREFIX => FOOTER_V2_LEN,
            _ => 0,
        };
        let footer_offset = file_size.checked_sub(footer_len as u64);
        let footer = match footer_offset {
            Some(offset) if footer_len == FOOTER_LEN => (offset, tail.to_vec()),
            Some(offset) if footer_len > 0 => {
                let mut footer = vec![0u8; footer_len];
                read_exact_at(&file, path, &mut footer, offset)?;
                (offset, footer)
            }
            _ => (tail_offset, tail.to_vec()),
        };
        let (footer_offset, footer) = footer;
        let crc_at = footer.len() - 12;
        if masked_crc(&[&footer[..crc_at]]) != read_u32(&footer, crc_at).unwrap_or(0) {
            return Err(corrupt(footer_offset, "footer checksum mismatch".into()));
        }
        if footer_len == 0 || file_size < footer_len as u64 {
            return Err(corrupt(
                file_size - 16,
                format!(
                    "unsupported table format version {version} (this build reads \
                     {FORMAT_VERSION} and {FORMAT_VERSION_PREFIX})"
                ),
            ));
        }
        let handle_at = |pos: usize| BlockHandle {
            offset: read_u64(&footer, pos).unwrap_or(0),
            size: read_u64(&footer, pos + 8).unwrap_or(0),
        };
        let base = footer_len - FOOTER_LEN;
        let prefix_handle = (version == FORMAT_VERSION_PREFIX).then(|| handle_at(0));
        let filter_handle = handle_at(base);
        let index_handle = handle_at(base + 16);
        // Data blocks end where the (prefix) filter starts; each filter must end by the next
        // block, and the index by the footer.
        let index_data = read_block_contents(&file, path, index_handle, footer_offset)?;
        let filter_data = read_block_contents(&file, path, filter_handle, index_handle.offset)?;
        let (prefix_filter, data_end) = match prefix_handle {
            Some(h) => {
                let data = read_block_contents(&file, path, h, filter_handle.offset)?;
                let pf = PrefixFilter::decode(data)
                    .ok_or_else(|| corrupt(h.offset, "malformed prefix filter block".into()))?;
                (Some(pf), h.offset)
            }
            None => (None, filter_handle.offset),
        };
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
            prefix_filter,
            data_end,
            cache,
        })
    }

    /// Whether the table may hold a key whose prefix (family byte included, see
    /// [`crate::lsm::prefix`]) is `prefix` by the extractor named `extractor`: `false` only
    /// when the table has a prefix filter built by that extractor and the filter rules the
    /// prefix out.
    pub fn may_contain_prefix(&self, extractor: &[u8], prefix: &[u8]) -> bool {
        match &self.prefix_filter {
            Some(pf) if pf.extractor == extractor => pf.filter.may_contain(prefix),
            _ => true,
        }
    }

    /// The name of the extractor that built the table's prefix filter, if it has one.
    pub fn prefix_extractor_name(&self) -> Option<&[u8]> {
        self.prefix_filter
            .as_ref()
            .map(|pf| pf.extractor.as_slice())
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
    pub(super) fn read_block(&self, handle: BlockHandle, fill_cache: bool) -> Result<Arc<Block>> {
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
    /// `engine_key` (`seek_key` is normally [`crate::lsm::key::seek_key`]`(engine_key, snapshot)`).
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
        TableIterator::new(Arc::clone(self), fill_cache)
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
