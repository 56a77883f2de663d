//! What the kernel says this process did: bytes written and peak memory, from `/proc/self`.
//!
//! Write amplification is measured from outside the engines, the same way for every engine:
//! the delta of `wchar` in `/proc/self/io` (bytes passed to `write`, `pwrite`, `writev` and
//! friends by every thread of the process, whether or not they reach the disk yet) divided by
//! the bytes of keys and values the workload wrote. It counts WAL, SSTables, manifests and
//! compaction rewrites alike, and no engine can leave something out of it. It does not see
//! writes through `mmap`, which neither engine uses for writing.
//!
//! Peak memory is `VmHWM` ("high water mark" of the resident set) in `/proc/self/status`.
//! Writing `5` to `/proc/self/clear_refs` resets it (Linux 4.0+), which lets a run report the
//! peak of each engine separately.
//!
//! Off Linux, or where `/proc` is hidden, every reader returns `None` and the benchmark
//! prints `-`.

use std::fs;

/// `wchar` of `/proc/self/io`: bytes this process has passed to write system calls.
pub fn bytes_written() -> Option<u64> {
    let io = fs::read_to_string("/proc/self/io").ok()?;
    parse_field(&io, "wchar:")
}

/// `VmHWM` of `/proc/self/status`, in bytes: the peak resident set size.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    parse_field(&status, "VmHWM:").map(|kib| kib * 1024)
}

/// `VmRSS` of `/proc/self/status`, in bytes: the current resident set size.
pub fn rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    parse_field(&status, "VmRSS:").map(|kib| kib * 1024)
}

/// CPU time of the calling thread in nanoseconds (the first field of
/// `/proc/thread-self/schedstat`): unlike wall time, it does not count time spent waiting for
/// a core on a busy machine.
pub fn thread_cpu_ns() -> Option<u64> {
    let stat = fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Resets the peak RSS to the current RSS; false if the kernel did not allow it.
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The number after `name` on the line that starts with it (`wchar: 123`, `VmHWM:  4 kB`).
fn parse_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_fields() {
        let io = "rchar: 6976\nwchar: 1234\nsyscr: 10\n";
        assert_eq!(parse_field(io, "wchar:"), Some(1234));
        assert_eq!(parse_field(io, "rchar:"), Some(6976));
        assert_eq!(parse_field(io, "nope:"), None);
        let status = "Name:\tx\nVmHWM:\t    1948 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_field(status, "VmHWM:"), Some(1948));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let before = bytes_written().expect("wchar");
        // A write syscall of 4 KiB to a file moves wchar by at least that much.
        let dir = std::env::temp_dir().join(format!("strata-procfs-test-{}", std::process::id()));
        fs::write(&dir, vec![0u8; 4096]).unwrap();
        let after = bytes_written().expect("wchar");
        fs::remove_file(&dir).unwrap();
        assert!(after >= before + 4096);
        let peak = peak_rss_bytes().expect("VmHWM");
        assert!(peak >= rss_bytes().expect("VmRSS") / 2);
        assert!(peak > 0);
    }
}
