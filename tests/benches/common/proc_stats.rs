//! From /proc: what a process costs (CPU time, resident memory), and how busy the
//! machine was.

use std::fs;

use anyhow::{Context as _, Result, bail};

/// User + system CPU seconds of the processes, from `/proc/<pid>/stat` (all threads).
pub fn cpu_seconds(pids: &[u32]) -> Result<f64> {
    // USER_HZ, the unit of /proc/<pid>/stat times, is 100 on Linux.
    const CLOCK_TICKS_PER_SEC: f64 = 100.0;
    let mut ticks = 0u64;
    for pid in pids {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) start after ") ".
        let after = stat
            .rsplit_once(") ")
            .context("malformed /proc/pid/stat")?
            .1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
        ticks += fields.get(11).context("utime")?.parse::<u64>()?;
        ticks += fields.get(12).context("stime")?.parse::<u64>()?;
    }
    #[expect(clippy::cast_precision_loss, reason = "a CPU-time figure")]
    Ok(ticks as f64 / CLOCK_TICKS_PER_SEC)
}

/// Resident set size now (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS")
}

/// The part of the resident set mapped from files (`RssFile`: code and read-only data
/// of the binary and its libraries), in KiB.
pub fn file_rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "RssFile")
}

/// Peak resident set size (`VmHWM`) since start or [`reset_peak_rss`], in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmHWM")
}

/// Starts `VmHWM` over from the current RSS (`clear_refs` 5, Linux ≥ 4.0).
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    fs::write(&path, "5").with_context(|| format!("cannot reset the peak RSS in {path}"))
}

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{field} in /proc/{pid}/status is not a number"))
}

/// KiB as MiB, for printing.
#[expect(clippy::cast_precision_loss, reason = "a memory figure")]
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Seconds since boot, and idle seconds summed over all CPUs (`/proc/uptime`).
///
/// Idle time is measured exactly on a tickless kernel, while the busy fields of
/// `/proc/stat` are sampled at each tick and miss short wake-ups: at 1,000 req/s they
/// showed the machine 2% busy while ztunnel alone used 8%. So busy time is derived as
/// wall time × CPUs − idle time.
pub fn uptime_and_idle() -> Result<(f64, f64)> {
    let text = fs::read_to_string("/proc/uptime")?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(up)), Some(Ok(idle))) => Ok((up, idle)),
        _ => bail!("malformed /proc/uptime: {text:?}"),
    }
}

/// The share of all CPUs' time that was busy between two [`uptime_and_idle`]
/// readings.
pub fn busy_share(before: (f64, f64), after: (f64, f64), cpus: usize) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a CPU count")]
    let capacity = (after.0 - before.0) * cpus as f64;
    if capacity <= 0.0 {
        return f64::NAN;
    }
    (1.0 - (after.1 - before.1) / capacity).clamp(0.0, 1.0)
}

/// The 1-minute load average and the number of CPUs: how much else competed with the
/// benchmark (which counts itself).
pub fn load_average() -> Result<(f64, usize)> {
    let text = fs::read_to_string("/proc/loadavg")?;
    let one_minute = text
        .split_whitespace()
        .next()
        .context("empty /proc/loadavg")?
        .parse()?;
    Ok((one_minute, cpus()))
}

/// How many CPUs the machine has.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
