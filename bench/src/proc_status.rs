//! Memory figures of a process, read from `/proc/PID/status` (Linux only).

use anyhow::{Context, Result, bail};

/// Resident memory figures of one process, in KiB.
///
/// The kernel labels these fields `kB`, but the unit is 1024 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryStatus {
    /// Current resident set size (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size since the process started (`VmHWM`).
    pub peak_rss_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` of process `pid`.
pub fn read_memory_status(pid: u32) -> Result<MemoryStatus> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
    parse_memory_status(&text).with_context(|| format!("invalid contents in {path}"))
}

/// Parses the text of a `/proc/PID/status` file.
pub fn parse_memory_status(text: &str) -> Result<MemoryStatus> {
    let rss_kib = find_kib_field(text, "VmRSS")?;
    let peak_rss_kib = find_kib_field(text, "VmHWM")?;
    Ok(MemoryStatus {
        rss_kib,
        peak_rss_kib,
    })
}

/// Returns the value of a line such as `VmRSS:\t   12345 kB`.
fn find_kib_field(text: &str, name: &str) -> Result<u64> {
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key != name {
            continue;
        }
        let Some(number) = value.trim().strip_suffix("kB") else {
            bail!("field {name} has no kB unit: {line:?}");
        };
        return number
            .trim()
            .parse()
            .with_context(|| format!("field {name} is not an integer: {line:?}"));
    }
    bail!("field {name} not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tcrier\nVmPeak:\t  20000 kB\nVmHWM:\t    9000 kB\nVmRSS:\t    8500 kB\nThreads:\t3\n";

    #[test]
    fn parses_rss_and_peak() {
        let status = parse_memory_status(STATUS).unwrap();
        assert_eq!(status.rss_kib, 8500);
        assert_eq!(status.peak_rss_kib, 9000);
    }

    #[test]
    fn missing_field_is_error() {
        let error = parse_memory_status("Name:\tcrier\nVmRSS:\t 1 kB\n").unwrap_err();
        assert!(error.to_string().contains("VmHWM"), "{error}");
    }

    #[test]
    fn reads_own_process() {
        let status = read_memory_status(std::process::id()).unwrap();
        assert!(status.rss_kib > 0);
        assert!(status.peak_rss_kib >= status.rss_kib);
    }
}
