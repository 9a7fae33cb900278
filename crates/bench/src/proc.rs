//! Readings from `/proc`.

/// Resident set size of `pid` in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User plus system CPU time of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU used by `pid` between two readings, as a share of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pid: u32,
    start_cpu: f64,
    start: std::time::SystemTime,
}

impl CpuMeter {
    /// Starts measuring `pid`.
    pub fn start(pid: u32) -> CpuMeter {
        CpuMeter {
            pid,
            start_cpu: cpu_seconds(pid).unwrap_or(0.0),
            start: std::time::SystemTime::now(),
        }
    }

    /// CPU seconds used since the start.
    pub fn seconds(&self) -> f64 {
        cpu_seconds(self.pid).unwrap_or(self.start_cpu) - self.start_cpu
    }

    /// Average CPU since the start, in cores (1.0 = one core busy).
    pub fn cores(&self) -> f64 {
        let wall = self.start.elapsed().map_or(0.0, |d| d.as_secs_f64());
        let cpu = cpu_seconds(self.pid).unwrap_or(self.start_cpu) - self.start_cpu;
        if wall > 0.0 {
            cpu / wall
        } else {
            0.0
        }
    }
}
