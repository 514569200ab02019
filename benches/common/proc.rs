//! What the benchmarks and the test harnesses read of processes from /proc: CPU time, memory,
//! and which processes are which.

// Each benchmark includes this file and uses a part of it.
#![allow(dead_code)]

use std::process::Command;

/// User plus system CPU seconds of process `pid` (`"self"` for this one), all threads.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (in parentheses, may hold spaces): utime is the 12th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A line of /proc/self/status (`VmRSS:`, `VmHWM:`), in KiB.
pub fn status_kib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Resets this process's peak resident set size (`VmHWM:`) to the current one and returns
/// the current one (`VmRSS:`), in KiB. Linux 4.0 and later.
pub fn reset_peak() -> f64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:")
}

/// Pids of the processes whose command line (NUL-separated arguments) satisfies `matches`.
pub fn pids_where(matches: impl Fn(&[u8]) -> bool) -> Vec<u32> {
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            matches(&cmdline).then_some(pid)
        })
        .collect()
}
