//! The record log: the framing shared by the WAL and the manifest.
//!
//! ```text
//!   record := crc: u32 LE | len: u32 LE | payload: len bytes
//!   crc     = masked crc32c(len bytes ++ payload)
//! ```
//!
//! Records are appended whole and never span files. On read, a record that runs past the end
//! of the file is a *torn* write (the process or machine died mid-append); a complete record
//! whose checksum fails is *corrupt*. The WAL truncates its last file at the first torn or
//! corrupt record when no valid record follows it (a torn append: nothing after it was
//! acknowledged as synced), and refuses to open when one does (see `db/recovery.rs`, which
//! uses [`record_at`] to look); the manifest ignores a torn tail but refuses to open on a
//! corrupt record.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::coding::{masked_crc, read_u32};
use super::error::{IoContext, Result};

/// Bytes of framing before each payload.
pub const HEADER_LEN: usize = 8;

/// Largest payload a record may carry.
pub const MAX_RECORD_LEN: usize = u32::MAX as usize;

/// Appends `payload` as one framed record to `buf`.
pub fn encode_record(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    buf.extend_from_slice(&masked_crc(&[&len, payload]).to_le_bytes());
    buf.extend_from_slice(&len);
    buf.extend_from_slice(payload);
}

/// An append-only log file.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    path: PathBuf,
    offset: u64,
    scratch: Vec<u8>,
}

impl LogWriter {
    /// Creates (or truncates) a log file.
    pub fn create(path: &Path) -> Result<LogWriter> {
        let file = File::create(path).context(|| format!("creating log {}", path.display()))?;
        Ok(LogWriter {
            file,
            path: path.to_path_buf(),
            offset: 0,
            scratch: Vec::new(),
        })
    }

    /// Reopens an existing log for appending after its first `valid_len` bytes, cutting
    /// anything after them (a torn tail).
    pub fn reopen_truncated(path: &Path, valid_len: u64) -> Result<LogWriter> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .context(|| format!("opening log {}", path.display()))?;
        file.set_len(valid_len)
            .context(|| format!("truncating log {}", path.display()))?;
        file.sync_all()
            .context(|| format!("syncing log {}", path.display()))?;
        let mut w = LogWriter {
            file,
            path: path.to_path_buf(),
            offset: valid_len,
            scratch: Vec::new(),
        };
        use std::io::Seek;
        w.file
            .seek(std::io::SeekFrom::Start(valid_len))
            .context(|| format!("seeking log {}", path.display()))?;
        w.scratch.clear();
        Ok(w)
    }

    /// Appends records, one per payload, with a single write call. Nothing is durable until
    /// [`LogWriter::sync`].
    pub fn append<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
        self.scratch.clear();
        for p in payloads {
            encode_record(&mut self.scratch, p);
        }
        let result = self.file.write_all(&self.scratch);
        if let Err(e) = result {
            // Cut back any partial record so a later append does not follow garbage.
            let _ = self.file.set_len(self.offset);
            use std::io::Seek;
            let _ = self.file.seek(std::io::SeekFrom::Start(self.offset));
            return Err(super::error::Error::io(
                format!("appending to {}", self.path.display()),
                e,
            ));
        }
        self.offset += self.scratch.len() as u64;
        if self.scratch.capacity() > 1 << 20 {
            self.scratch = Vec::new();
        }
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .context(|| format!("syncing {}", self.path.display()))
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.offset
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// How reading a log ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEnd {
    /// Every byte belonged to a complete, valid record.
    Clean,
    /// The last record is incomplete, starting at `offset`.
    Torn {
        /// Where the incomplete record starts.
        offset: u64,
    },
    /// A complete record at `offset` failed its checksum or has an impossible length.
    Corrupt {
        /// Where the bad record starts.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
}

/// The valid records of a log file, and how it ended.
#[derive(Debug)]
pub struct LogContents {
    /// `(offset, payload)` of each valid record, in order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Length of the valid prefix of the file.
    pub valid_len: u64,
    /// How the file ended.
    pub end: LogEnd,
}

/// Reads every valid record of a log file up to the first damaged one.
pub fn read_log(path: &Path) -> Result<LogContents> {
    let data = std::fs::read(path).context(|| format!("reading log {}", path.display()))?;
    Ok(parse_log(&data))
}

/// Parses log bytes (see [`read_log`]).
pub fn parse_log(data: &[u8]) -> LogContents {
    let mut records = Vec::new();
    let mut pos = 0usize;
    let end = loop {
        if pos == data.len() {
            break LogEnd::Clean;
        }
        let (Some(crc), Some(len)) = (read_u32(data, pos), read_u32(data, pos + 4)) else {
            break LogEnd::Torn { offset: pos as u64 };
        };
        let start = pos + HEADER_LEN;
        let Some(payload) = data.get(start..start + len as usize) else {
            break LogEnd::Torn { offset: pos as u64 };
        };
        if masked_crc(&[&len.to_le_bytes(), payload]) != crc {
            break LogEnd::Corrupt {
                offset: pos as u64,
                reason: "record checksum mismatch".to_string(),
            };
        }
        records.push((pos as u64, payload.to_vec()));
        pos = start + len as usize;
    };
    LogContents {
        records,
        valid_len: pos as u64,
        end,
    }
}

/// The payload of the record at `pos` of `data`, if a complete record with a valid checksum
/// starts there. Recovery uses it to look past a damaged record for valid ones.
pub fn record_at(data: &[u8], pos: usize) -> Option<&[u8]> {
    let crc = read_u32(data, pos)?;
    let len = read_u32(data, pos.checked_add(4)?)?;
    let start = pos.checked_add(HEADER_LEN)?;
    let payload = data.get(start..start.checked_add(len as usize)?)?;
    (masked_crc(&[&len.to_le_bytes(), payload]) == crc).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut w = LogWriter::create(&path).unwrap();
        w.append([b"one".as_slice(), b"two".as_slice()]).unwrap();
        w.append([b"three".as_slice()]).unwrap();
        w.sync().unwrap();
        let c = read_log(&path).unwrap();
        assert_eq!(c.end, LogEnd::Clean);
        assert_eq!(
            c.records.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );

        let data = std::fs::read(&path).unwrap();
        // Every truncation point yields a valid prefix and a torn end (or clean at boundaries).
        for cut in 0..data.len() {
            let c = parse_log(&data[..cut]);
            assert!(c.valid_len as usize <= cut);
            assert!(matches!(c.end, LogEnd::Clean | LogEnd::Torn { .. }));
        }
        // A flipped payload byte is a corrupt record, and nothing after it is returned.
        let mut bad = data.clone();
        bad[HEADER_LEN + 11 + 1] ^= 0x40; // inside "two"
        let c = parse_log(&bad);
        assert_eq!(c.records.len(), 1);
        assert!(matches!(c.end, LogEnd::Corrupt { offset: 11, .. }));
        // The record after the damaged one is still found where it starts, and only there.
        assert_eq!(record_at(&bad, 22), Some(b"three".as_slice()));
        assert_eq!(record_at(&bad, 11), None);
        assert_eq!(record_at(&bad, 23), None);
        assert_eq!(record_at(&bad, bad.len()), None);

        // Reopen after the first record and keep appending.
        let mut w = LogWriter::reopen_truncated(&path, 11).unwrap();
        w.append([b"four".as_slice()]).unwrap();
        let c = read_log(&path).unwrap();
        assert_eq!(c.records.len(), 2);
        assert_eq!(c.records[1].1, b"four".to_vec());
    }

    #[test]
    fn random_bytes_never_panic() {
        use proptest::prelude::*;
        proptest!(|(data in proptest::collection::vec(any::<u8>(), 0..200))| {
            let c = parse_log(&data);
            prop_assert!(c.valid_len as usize <= data.len());
        });
    }
}
