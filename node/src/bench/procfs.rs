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
//! CPU time of the whole process is `utime + stime` of `/proc/self/stat` (fields 14 and 15,
//! every thread, exited ones included), in clock ticks of `USER_HZ`. The kernel reports
//! these in `USER_HZ`, which is 100 on every architecture Strata builds for (x86-64, arm64),
//! whatever the kernel's internal `HZ`; `sysconf(_SC_CLK_TCK)` would say the same without a
//! libc dependency here. Per-thread times are the same fields of `/proc/self/task/<tid>/stat`,
//! with the thread's name in field 2.
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

/// Clock ticks per second of the CPU times in `/proc/<pid>/stat` (`USER_HZ`).
pub const USER_HZ: f64 = 100.0;

/// CPU time (user + system) of this process, all threads, in seconds.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&stat).map(|s| s.cpu_seconds())
}

/// The fields of a `/proc/<pid>/stat` (or `.../task/<tid>/stat`) line this crate reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatLine {
    /// Field 2: the command or thread name, without its parentheses.
    pub name: String,
    /// Field 14: user-mode time, in `USER_HZ` ticks.
    pub utime: u64,
    /// Field 15: kernel-mode time, in `USER_HZ` ticks.
    pub stime: u64,
}

impl StatLine {
    /// `utime + stime` in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        (self.utime + self.stime) as f64 / USER_HZ
    }
}

/// Parses a `stat` line. The name may hold spaces and parentheses, so it is what lies
/// between the first `(` and the last `)`; the numbered fields follow the last `)`.
pub fn parse_stat(line: &str) -> Option<StatLine> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    if close < open {
        return None;
    }
    let name = line[open + 1..close].to_owned();
    // After ")": field 3 (state) is the first; utime is field 14, the 12th after it.
    let mut rest = line[close + 1..].split_whitespace().skip(11);
    let utime = rest.next()?.parse().ok()?;
    let stime = rest.next()?.parse().ok()?;
    Some(StatLine { name, utime, stime })
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

    #[test]
    fn parses_stat_lines_with_awkward_names() {
        // A real line of a thread named "raft (driver) 1", fields 14 and 15 being 1234, 56.
        let line = "4242 (raft (driver) 1) S 1 4242 4242 0 -1 4194368 95 0 0 0 1234 56 0 0 \
                    20 0 9 0 81 12345678 1000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 \
                    17 1 0 0 0 0 0";
        let s = parse_stat(line).expect("parses");
        assert_eq!(s.name, "raft (driver) 1");
        assert_eq!((s.utime, s.stime), (1234, 56));
        assert!((s.cpu_seconds() - 12.9).abs() < 1e-9);
        assert_eq!(parse_stat("12 (x) S 1 2 3"), None, "too short");
        assert_eq!(parse_stat("12 )x( S"), None);
        assert_eq!(parse_stat(""), None);
        let not_numbers = "1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 5 0 0";
        assert_eq!(parse_stat(not_numbers), None);
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
        // Burn some CPU: the process time moves (ticks are 10 ms, so spin past a few).
        let cpu_before = process_cpu_seconds().expect("stat");
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while process_cpu_seconds().expect("stat") < cpu_before + 0.02
            && spin.elapsed() < std::time::Duration::from_secs(10)
        {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(process_cpu_seconds().expect("stat") >= cpu_before + 0.02);
    }
}
