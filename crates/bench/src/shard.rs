//! Several load-generator processes. One process can hold about 19,900 sockets here, so
//! a run with more connections (or one that wants more client CPU) uses `--procs K`: the
//! parent spawns K children (the same binary and arguments, plus `--shard I`), each
//! opening its share of the connections from its share of the source addresses. They
//! talk over the children's standard input and output, one line per message:
//!
//! - child: `READY <json>` once its connections are open (and what it measured then);
//! - parent: `GO` (start the measured part), `PHASE <p> <sent> <drain_ms>` (fanout: say
//!   what phase `p` delivered), `STOP` (close everything and exit);
//! - child: `RESULT <json>` with its counters and raw histograms, merged by the parent.
//!
//! Histograms travel as `[[value, count], ...]` and are merged exactly.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// This process's part of `n` connections when it is shard `i` of `k`: how many, and the
/// index of its first.
pub fn share(n: usize, k: usize, i: usize) -> (usize, usize) {
    let base = n / k;
    let extra = n % k;
    let count = base + usize::from(i < extra);
    let first = i * base + i.min(extra);
    (count, first)
}

/// A histogram as JSON pairs.
pub fn hist_json(h: &Histogram<u64>) -> Value {
    Value::Array(
        h.iter_recorded()
            .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

/// Adds JSON pairs into a histogram.
pub fn hist_add(h: &mut Histogram<u64>, pairs: &Value) {
    for pair in pairs.as_array().into_iter().flatten() {
        if let (Some(v), Some(c)) = (pair[0].as_u64(), pair[1].as_u64()) {
            let _ = h.record_n(v.max(1), c);
        }
    }
}

/// Writes a line to the parent.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The parent's commands, read from standard input.
pub struct Commands(Lines<BufReader<tokio::io::Stdin>>);

impl Default for Commands {
    fn default() -> Self {
        Commands(BufReader::new(tokio::io::stdin()).lines())
    }
}

impl Commands {
    /// The next command; `None` when the parent is gone.
    pub async fn next(&mut self) -> Option<String> {
        self.0.next_line().await.ok().flatten()
    }
}

/// The children of a multi-process run.
pub struct Children {
    procs: Vec<Child>,
    stdin: Vec<ChildStdin>,
    stdout: Vec<Lines<BufReader<ChildStdout>>>,
}

impl Children {
    /// Spawns `k` copies of this process with this process's arguments and `--shard I`.
    ///
    /// # Errors
    ///
    /// When a child cannot be started.
    pub fn spawn(k: usize) -> std::io::Result<Children> {
        let exe = std::env::current_exe()?;
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut children = Children {
            procs: Vec::new(),
            stdin: Vec::new(),
            stdout: Vec::new(),
        };
        for i in 0..k {
            let mut child = tokio::process::Command::new(&exe)
                .args(&args)
                .args(["--shard", &i.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(std::io::Error::other("child without pipes"));
            };
            children.stdin.push(stdin);
            children.stdout.push(BufReader::new(stdout).lines());
            children.procs.push(child);
        }
        Ok(children)
    }

    /// CPU meters started now, one per child.
    pub fn cpu_meters(&self) -> Vec<crate::proc::CpuMeter> {
        self.procs
            .iter()
            .filter_map(Child::id)
            .map(crate::proc::CpuMeter::start)
            .collect()
    }

    /// How many children.
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Waits for every child's line starting with `tag` (others are skipped) and returns
    /// the JSON after the tag, one per child; `Null` for a child that said nothing in time.
    pub async fn collect(&mut self, tag: &str, timeout: Duration) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.stdout.len());
        for lines in &mut self.stdout {
            let read = async {
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(rest) = line.strip_prefix(tag) {
                        return serde_json::from_str(rest.trim()).unwrap_or(Value::Null);
                    }
                }
                Value::Null
            };
            out.push(
                tokio::time::timeout(timeout, read)
                    .await
                    .unwrap_or(Value::Null),
            );
        }
        out
    }

    /// Sends a command line to every child.
    pub async fn tell(&mut self, line: &str) {
        for stdin in &mut self.stdin {
            let _ = stdin.write_all(format!("{line}\n").as_bytes()).await;
            let _ = stdin.flush().await;
        }
    }

    /// Tells every child to stop and waits for them (killing any that lingers).
    pub async fn stop(mut self) {
        self.tell("STOP").await;
        for child in &mut self.procs {
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// Sums the numbers of `key` over reports.
pub fn sum(values: &[Value], key: &str) -> u64 {
    values.iter().filter_map(|v| v[key].as_u64()).sum()
}

/// Merges failure maps (`{"reason": count}`).
pub fn merge_counts(values: &[Value], key: &str) -> Value {
    let mut all = serde_json::Map::new();
    for v in values {
        if let Some(m) = v[key].as_object() {
            for (k, n) in m {
                let before = all.get(k).and_then(Value::as_u64).unwrap_or(0);
                all.insert(k.clone(), json!(before + n.as_u64().unwrap_or(0)));
            }
        }
    }
    Value::Object(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shares cover every connection once, the first shards taking the remainder.
    #[test]
    fn shares() {
        assert_eq!(share(10, 3, 0), (4, 0));
        assert_eq!(share(10, 3, 1), (3, 4));
        assert_eq!(share(10, 3, 2), (3, 7));
        assert_eq!(share(2, 3, 2), (0, 2));
    }

    /// Histograms cross processes exactly.
    #[test]
    fn histograms_round_trip() {
        let mut a = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
        for v in [1, 5, 5, 1000, 123_456] {
            a.record(v).unwrap();
        }
        let mut b = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
        hist_add(&mut b, &hist_json(&a));
        assert_eq!(b.len(), a.len());
        assert_eq!(b.value_at_quantile(0.5), a.value_at_quantile(0.5));
        assert_eq!(b.max(), a.max());
    }
}
