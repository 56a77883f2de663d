//! The storage engine's one error type.
//!
//! Every failure a disk or a caller can cause is a value of [`Error`], never a panic. A
//! checksum mismatch is [`Error::Corruption`] naming the file and byte offset; a full disk is
//! [`Error::NoSpace`]; a failed background flush or compaction puts the engine into a
//! read-only state whose writes return [`Error::Background`] until the cause clears.

use std::path::{Path, PathBuf};

/// Result alias for the storage engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the storage engine.
#[derive(Debug, thiserror::Error, Clone)]
pub enum Error {
    /// Data on disk does not match its checksum or cannot be decoded.
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        /// The file holding the damaged bytes.
        file: PathBuf,
        /// The byte offset in that file where the damage was detected.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The device is out of space; the write was not applied and reads still work.
    #[error("no space left on device while {context}")]
    NoSpace {
        /// What the engine was doing.
        context: String,
    },
    /// Any other I/O failure.
    #[error("I/O error while {context}: {message}")]
    Io {
        /// What the engine was doing.
        context: String,
        /// The operating system's message.
        message: String,
        /// The kind of I/O error, for callers that branch on it.
        kind: std::io::ErrorKind,
    },
    /// The caller passed something the engine does not accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A background flush or compaction failed; writes are refused until it recovers.
    #[error("engine is read-only after a background error: {0}")]
    Background(String),
    /// The engine has been closed.
    #[error("engine is closed")]
    Closed,
}

impl Error {
    /// Wraps an I/O error with what the engine was doing, mapping a full disk to
    /// [`Error::NoSpace`].
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Error {
        let context = context.into();
        if err.kind() == std::io::ErrorKind::StorageFull || err.raw_os_error() == Some(28) {
            return Error::NoSpace { context };
        }
        Error::Io {
            context,
            message: err.to_string(),
            kind: err.kind(),
        }
    }

    /// A corruption error at `offset` of `file`.
    pub fn corruption(file: &Path, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corruption {
            file: file.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }

    /// Whether the error says data on disk is damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }
}

/// Adds context to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    /// Converts the I/O error into [`Error`], describing what was being done.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}
