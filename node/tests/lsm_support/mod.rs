//! Helpers shared by the storage engine's integration tests: finding the live manifest and
//! copying a database directory to damage or reopen the copy.

use std::path::{Path, PathBuf};

/// The manifest `CURRENT` names.
pub fn manifest(dir: &Path) -> PathBuf {
    let current = std::fs::read_to_string(dir.join("CURRENT")).expect("read CURRENT");
    dir.join(current.trim_end())
}

/// Copies every file of a closed database (its `LOCK` excepted) into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("list dir") {
        let entry = entry.expect("dir entry");
        if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy file");
        }
    }
}
