//! The machine's state around a measurement: load average, CPU steal, and
//! the CPU that processes other than this harness and its children used
//! meanwhile. Throughput on a shared 2-core machine moves with its other
//! tenants; a figure printed without the state it was taken in cannot be
//! compared with anyone else's.
//!
//! Everything comes from /proc (Linux); where it cannot be read the
//! fields are absent, never made up.

use std::time::Instant;

use serde_json::{json, Value};

/// `USER_HZ`: the unit of every tick count in /proc (100 on Linux for
/// every architecture the kernel exports to user space this way).
const TICKS_PER_S: f64 = 100.0;

/// A 1-minute load average above this before a run marks it busy (the
/// issue that set the targets called a machine quiet below it).
const QUIET_LOAD: f64 = 0.5;

/// Other processes using more than this many cores on average during the
/// run mark it busy.
const QUIET_OTHERS_CORES: f64 = 0.25;

/// CPU stolen by the hypervisor above this share of the run marks it busy.
const QUIET_STEAL: f64 = 0.05;

/// The machine at the start of a measurement.
pub struct Before {
    at: Instant,
    load: Option<[f64; 3]>,
    cpu: Option<CpuTicks>,
    own: Option<u64>,
}

/// Ticks from the first line of /proc/stat.
#[derive(Clone, Copy)]
struct CpuTicks {
    busy: u64,
    steal: u64,
    total: u64,
}

impl Before {
    /// Takes the snapshot the run's figures are compared with.
    pub fn now() -> Before {
        Before { at: Instant::now(), load: load_average(), cpu: cpu_ticks(), own: own_ticks() }
    }

    /// The machine's state over the run, as JSON, and whether it was busy.
    /// Call after every child process has been waited for (their CPU is
    /// then counted as this harness's own, not as another tenant's).
    pub fn after(&self) -> (Value, bool) {
        let elapsed = self.at.elapsed().as_secs_f64().max(1e-9);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let load_after = load_average();
        let delta = self.cpu.zip(cpu_ticks()).map(|(a, b)| CpuTicks {
            busy: b.busy.saturating_sub(a.busy),
            steal: b.steal.saturating_sub(a.steal),
            total: b.total.saturating_sub(a.total).max(1),
        });
        let steal = delta.map(|d| d.steal as f64 / d.total as f64);
        let own = self.own.zip(own_ticks()).map(|(a, b)| b.saturating_sub(a));
        let others = delta.zip(own).map(|(d, own)| d.busy.saturating_sub(own) as f64 / TICKS_PER_S / elapsed);
        let busy = self.load.is_some_and(|l| l[0] > QUIET_LOAD)
            || others.is_some_and(|o| o > QUIET_OTHERS_CORES)
            || steal.is_some_and(|s| s > QUIET_STEAL);
        let state = json!({
            "cores": cores,
            "load_average_before": self.load,
            "load_average_after": load_after,
            "cpu_steal_share": steal,
            "other_processes_cores": others,
            "busy": busy,
        });
        (state, busy)
    }
}

/// One line for a person: the state and, when busy, a warning.
pub fn describe(state: &Value, busy: bool) -> String {
    let num = |k: &str| state[k].as_f64().map_or("?".to_string(), |v| format!("{v:.2}"));
    let load = |k: &str| state[k].as_array().and_then(|a| a.first()).and_then(Value::as_f64);
    let load = |k: &str| load(k).map_or("?".to_string(), |v| format!("{v:.2}"));
    let verdict = match busy {
        true => "BUSY: other work shared the machine; compare ratios from one run, not rates across runs",
        false => "quiet",
    };
    format!(
        "machine: {} cores, load average {} before / {} after, other processes {} cores, steal {}: {verdict}",
        state["cores"],
        load("load_average_before"),
        load("load_average_after"),
        num("other_processes_cores"),
        num("cpu_steal_share"),
    )
}

fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The aggregate CPU line: user nice system idle iowait irq softirq steal ...
fn cpu_ticks() -> Option<CpuTicks> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let (idle, iowait, steal) = (*f.get(3)?, *f.get(4)?, *f.get(7)?);
    // Guest time is already inside user and nice: the first eight fields are the total.
    let total: u64 = f.iter().take(8).sum();
    Some(CpuTicks { busy: total - idle - iowait - steal, steal, total })
}

/// This process's CPU ticks and those of its waited-for children.
fn own_ticks() -> Option<u64> {
    process_ticks("self", true)
}

/// CPU ticks (user + system) of process `pid` ("self" for this one), with
/// its waited-for children's when `children`.
pub fn process_ticks(pid: &str, children: bool) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
    // utime, stime, cutime, cstime are fields 14–17 of the line (11–14 after the name).
    let own = f.get(11)? + f.get(12)?;
    Some(if children { own + f.get(13)? + f.get(14)? } else { own })
}

/// Seconds of CPU in `ticks`.
pub fn ticks_to_s(ticks: u64) -> f64 {
    ticks as f64 / TICKS_PER_S
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine() {
        let before = Before::now();
        assert!(before.load.is_some() && before.cpu.is_some() && before.own.is_some());
        let (state, _) = before.after();
        assert!(state["cores"].as_u64().unwrap() >= 1);
        assert!(state["cpu_steal_share"].as_f64().unwrap() >= 0.0);
        assert!(describe(&state, true).contains("BUSY"));
    }
}
