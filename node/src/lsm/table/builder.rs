//! Writing a table: data blocks cut at `block_size`, then the filter, the index and the
//! footer (the layout is drawn in the parent module).

use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::block::BlockBuilder;
use super::super::bloom::BloomBuilder;
use super::super::coding::masked_crc;
use super::super::error::{Error, IoContext, Result};
use super::super::key::{compare_internal, kind_of, seq_of, user_part, ValueKind, TRAILER_LEN};
use super::super::options::Compression;
use super::super::prefix::{engine_prefix, stored_name, SharedPrefixExtractor};
use super::{
    BlockHandle, TableOptions, TableSummary, BLOCK_TRAILER_LEN, COMPRESSION_LZ4, COMPRESSION_NONE,
    FOOTER_LEN, FOOTER_V2_LEN, FORMAT_VERSION, FORMAT_VERSION_PREFIX, TABLE_MAGIC,
};

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
    prefix_filter: Option<PrefixFilterBuilder>,
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
        let prefix_filter = opts
            .prefix_extractor
            .as_ref()
            .map(|extractor| PrefixFilterBuilder {
                extractor: Arc::clone(extractor),
                bloom: BloomBuilder::new(opts.bloom_bits_per_key),
                last: None,
            });
        Ok(TableBuilder {
            path: path.to_path_buf(),
            writer: BufWriter::with_capacity(64 << 10, file),
            offset: 0,
            data_block: BlockBuilder::new(opts.restart_interval),
            index_block: BlockBuilder::new(1),
            bloom: BloomBuilder::new(opts.bloom_bits_per_key),
            prefix_filter,
            opts,
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
        if let Some(p) = &mut self.prefix_filter {
            p.add(user_part(ikey));
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
            + FOOTER_V2_LEN as u64
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
        let prefix_handle = match self.prefix_filter.take() {
            Some(p) => Some(self.write_block(&p.finish(), Compression::None)?),
            None => None,
        };
        let filter = std::mem::replace(&mut self.bloom, BloomBuilder::new(0)).finish();
        let filter_handle = self.write_block(&filter, Compression::None)?;
        let index = self.index_block.finish();
        let index_handle = self.write_block(&index, self.opts.compression)?;

        let mut footer = Vec::with_capacity(FOOTER_V2_LEN);
        if let Some(h) = prefix_handle {
            footer.extend_from_slice(&h.offset.to_le_bytes());
            footer.extend_from_slice(&h.size.to_le_bytes());
        }
        footer.extend_from_slice(&filter_handle.offset.to_le_bytes());
        footer.extend_from_slice(&filter_handle.size.to_le_bytes());
        footer.extend_from_slice(&index_handle.offset.to_le_bytes());
        footer.extend_from_slice(&index_handle.size.to_le_bytes());
        let (version, footer_len) = match prefix_handle {
            Some(_) => (FORMAT_VERSION_PREFIX, FOOTER_V2_LEN),
            None => (FORMAT_VERSION, FOOTER_LEN),
        };
        footer.extend_from_slice(&version.to_le_bytes());
        let crc = masked_crc(&[&footer]);
        footer.extend_from_slice(&crc.to_le_bytes());
        footer.extend_from_slice(&TABLE_MAGIC.to_le_bytes());
        debug_assert_eq!(footer.len(), footer_len);

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
            file_size: self.offset + footer_len as u64,
            num_entries: self.num_entries,
            num_deletions: self.num_deletions,
            smallest_key: self.smallest_key,
            largest_key: self.last_key,
            smallest_seq: self.smallest_seq,
            largest_seq: self.largest_seq,
        })
    }
}

/// Collects the prefixes of one table's keys for its prefix filter.
struct PrefixFilterBuilder {
    extractor: SharedPrefixExtractor,
    bloom: BloomBuilder,
    /// The prefix added last: keys sharing a prefix are usually adjacent, so each is
    /// hashed once.
    last: Option<Vec<u8>>,
}

impl std::fmt::Debug for PrefixFilterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixFilterBuilder")
            .field("extractor", &self.extractor.name())
            .field("prefixes", &self.bloom.num_keys())
            .finish()
    }
}

impl PrefixFilterBuilder {
    fn add(&mut self, engine_key: &[u8]) {
        let Some(prefix) = engine_prefix(&*self.extractor, engine_key) else {
            return;
        };
        if self.last.as_deref() != Some(prefix) {
            self.bloom.add_key(prefix);
            let last = self.last.get_or_insert_with(Vec::new);
            last.clear();
            last.extend_from_slice(prefix);
        }
    }

    /// The block: `name_len: u8 ++ name ++ bloom filter`.
    fn finish(self) -> Vec<u8> {
        let name = stored_name(&*self.extractor);
        let bloom = self.bloom.finish();
        let mut out = Vec::with_capacity(1 + name.len() + bloom.len());
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&bloom);
        out
    }
}
