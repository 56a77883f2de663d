//! Prefix extractors: the hook that lets SSTables carry a bloom filter over a *part* of each
//! key, so reads of every version of one user key can skip tables.
//!
//! The engine's whole-key bloom filter answers only "is this exact engine key here?". A
//! layer that stores several versions of a key under `key ++ version` (MVCC's commit
//! records, `encode(user key) ++ !commit_ts`) never knows the exact key it looks for: it
//! seeks to `(user key, ts)` and reads the first entry. A [`PrefixExtractor`] tells the
//! engine which leading bytes of a key identify the thing being versioned. Every table then
//! also stores a *prefix filter* (a bloom filter over `cf id ++ prefix` of its keys, see
//! `table/mod.rs`), and [`super::Db::prefix_iter`] reads only the memtables and the tables
//! whose key range and prefix filter may hold the prefix (RocksDB's prefix extractor and
//! prefix bloom, TiKV's `FixedSuffixSliceTransform` on its write family).
//!
//! The engine knows nothing of the encoding: the extractor is given by the layer above in
//! [`super::Options::prefix_extractor`]. A table records the [`PrefixExtractor::name`] of the
//! extractor that built its prefix filter, and a read uses that filter only when the name
//! matches the current extractor's. Tables written without one (format version 1, or by
//! another extractor) are read without the filter: a changed extractor costs reads, never
//! correctness.

use std::sync::Arc;

use super::key::ColumnFamily;

/// Where the prefix of a key ends, per column family.
///
/// Implementations must be pure: the same `(cf, key)` always gives the same answer for a
/// given [`name`](PrefixExtractor::name). A new answer for some key needs a new name, or
/// tables written before would be read with a filter that lacks their prefixes.
pub trait PrefixExtractor: Send + Sync {
    /// A stable name, stored in every table whose prefix filter this extractor built (at
    /// most 255 bytes; longer names are cut).
    fn name(&self) -> &str;

    /// The length of the prefix of `key` (a key of family `cf`, without the family byte), or
    /// `None` if the key has none: it then goes into no prefix filter, and prefix reads skip
    /// it. A length past the end of the key counts as `None`.
    fn prefix_len(&self, cf: ColumnFamily, key: &[u8]) -> Option<usize>;
}

impl std::fmt::Debug for dyn PrefixExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrefixExtractor({:?})", self.name())
    }
}

/// Longest extractor name a table stores.
pub const MAX_EXTRACTOR_NAME: usize = 255;

/// The name a table stores for `extractor`.
pub(crate) fn stored_name(extractor: &dyn PrefixExtractor) -> &[u8] {
    let name = extractor.name().as_bytes();
    &name[..name.len().min(MAX_EXTRACTOR_NAME)]
}

/// The prefix of an engine key (`cf id ++ key`), family byte included, as prefix filters
/// hash it; `None` if the key has no prefix or no known family.
pub(crate) fn engine_prefix<'a>(
    extractor: &dyn PrefixExtractor,
    engine_key: &'a [u8],
) -> Option<&'a [u8]> {
    let (&id, key) = engine_key.split_first()?;
    let cf = ColumnFamily::from_id(id)?;
    let len = extractor.prefix_len(cf, key)?;
    (len <= key.len()).then(|| &engine_key[..=len])
}

/// A shared extractor, as the options hold it.
pub type SharedPrefixExtractor = Arc<dyn PrefixExtractor>;

/// An extractor for tests: the first `len` bytes of every key of every family (keys shorter
/// than that have no prefix).
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) struct FixedPrefix {
    pub len: usize,
    pub name: String,
}

#[cfg(test)]
impl FixedPrefix {
    pub(crate) fn shared(len: usize) -> SharedPrefixExtractor {
        Arc::new(FixedPrefix {
            len,
            name: format!("test.fixed.{len}"),
        })
    }
}

#[cfg(test)]
impl PrefixExtractor for FixedPrefix {
    fn name(&self) -> &str {
        &self.name
    }

    fn prefix_len(&self, _cf: ColumnFamily, key: &[u8]) -> Option<usize> {
        (key.len() >= self.len).then_some(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct TooLong;

    impl PrefixExtractor for TooLong {
        fn name(&self) -> &str {
            "too-long"
        }
        fn prefix_len(&self, _cf: ColumnFamily, key: &[u8]) -> Option<usize> {
            Some(key.len() + 1)
        }
    }

    #[test]
    fn engine_prefix_includes_the_family_byte_and_rejects_overlong_answers() {
        let fixed = FixedPrefix::shared(2);
        assert_eq!(engine_prefix(&*fixed, b"\x02abc"), Some(&b"\x02ab"[..]));
        assert_eq!(engine_prefix(&*fixed, b"\x02a"), None);
        assert_eq!(engine_prefix(&*fixed, b""), None);
        assert_eq!(engine_prefix(&*fixed, b"\x09abc"), None, "unknown family");
        assert_eq!(engine_prefix(&TooLong, b"\x02abc"), None);
        assert_eq!(stored_name(&*fixed), b"test.fixed.2");
        assert_eq!(
            format!("{:?}", &*fixed as &dyn PrefixExtractor),
            "PrefixExtractor(\"test.fixed.2\")"
        );
    }
}
