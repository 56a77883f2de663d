//! Deleting files: SSTables a compaction replaced, once no reader holds them, and files a
//! crash or an earlier run left behind.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::lsm::error::{IoContext, Result};
use crate::lsm::table::table_file_name;
use crate::lsm::version::FileMeta;

use super::Inner;

pub(super) fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).context(|| format!("listing {}", dir.display()))? {
        let entry = entry.context(|| format!("listing {}", dir.display()))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

pub(super) fn parse_numbered(name: &str, suffix: &str) -> Option<u64> {
    name.strip_suffix(suffix)?.parse().ok()
}

impl Inner {
    /// Deletes replaced files that no reader holds any more.
    pub(super) fn purge_obsolete(&self) {
        let ready: Vec<Arc<FileMeta>> = {
            let mut st = self.state.lock();
            let (ready, keep): (Vec<_>, Vec<_>) = st
                .obsolete
                .drain(..)
                .partition(|f| Arc::strong_count(f) == 1);
            st.obsolete = keep;
            ready
        };
        for f in ready {
            self.table_cache.evict(f.id);
            if let Err(e) = fs::remove_file(table_file_name(&self.dir, f.id)) {
                tracing::warn!(file = f.id, error = %e, "could not delete an obsolete SSTable");
            }
        }
    }

    /// Deletes files a crash or an earlier run left behind: SSTables not in the version,
    /// flushed WALs, old manifests and temporary files.
    pub(super) fn delete_obsolete_files(&self) -> Result<()> {
        let (live, log_number, manifest): (Vec<u64>, u64, u64) = {
            let vs = self.versions.lock();
            (
                vs.current().files().map(|(_, f)| f.id).collect(),
                vs.log_number,
                vs.manifest_number(),
            )
        };
        let current_wal = self.state.lock().mem.wal_number();
        for name in list_dir(&self.dir)? {
            let remove = if let Some(n) = parse_numbered(&name, ".sst") {
                !live.contains(&n)
            } else if let Some(n) = parse_numbered(&name, ".log") {
                n < log_number && n != current_wal
            } else if let Some(n) = name
                .strip_prefix("MANIFEST-")
                .and_then(|n| n.parse::<u64>().ok())
            {
                n != manifest
            } else {
                name.ends_with(".dbtmp")
            };
            if remove {
                tracing::info!(file = %name, "removing a leftover file");
                let path = self.dir.join(&name);
                fs::remove_file(&path).context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
    }
}
