//! Views of host-wide `/proc` entries as the sandbox should see them: memory and CPUs of its own
//! limits, no load, no host counters, a boot id of its own. Each is a small file the setup child
//! writes into the instance's private directory and binds read-only over the entry. (Uptime needs
//! no file: the sandbox has a time namespace whose clocks start near zero.)

use vana_sandbox_core::host::PROC_VIRTUALISED_FILES;
use vana_sandbox_core::Limits;

/// `(entry under /proc, content)` for every entry of [`PROC_VIRTUALISED_FILES`].
pub(crate) fn views(limits: &Limits) -> Vec<(&'static str, Vec<u8>)> {
    PROC_VIRTUALISED_FILES
        .iter()
        .filter_map(|&entry| Some((entry, view(entry, limits)?.into_bytes())))
        .collect()
}

fn view(entry: &str, limits: &Limits) -> Option<String> {
    Some(match entry {
        "meminfo" => meminfo(limits.memory.get()),
        "stat" => stat(cpu_count(limits)),
        "loadavg" => "0.00 0.00 0.00 1/1 1\n".into(),
        "sys/kernel/random/boot_id" => boot_id(),
        _ => return None,
    })
}

/// CPUs the sandbox shows: its CPU limit rounded up, at most the host's.
fn cpu_count(limits: &Limits) -> usize {
    // The host's count reads cgroup files; it is taken once per process.
    static HOST: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let host = *HOST.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    (limits.cpus.get().ceil() as usize).clamp(1, host)
}

/// `/proc/meminfo` of a machine with `bytes` of memory, all of it free, and no swap.
fn meminfo(bytes: u64) -> String {
    let kb = bytes / 1024;
    let mut out = String::with_capacity(1024);
    for (key, value) in [
        ("MemTotal", kb),
        ("MemFree", kb),
        ("MemAvailable", kb),
        ("Buffers", 0),
        ("Cached", 0),
        ("SwapCached", 0),
        ("Active", 0),
        ("Inactive", 0),
        ("Active(anon)", 0),
        ("Inactive(anon)", 0),
        ("Active(file)", 0),
        ("Inactive(file)", 0),
        ("Unevictable", 0),
        ("Mlocked", 0),
        ("SwapTotal", 0),
        ("SwapFree", 0),
        ("Dirty", 0),
        ("Writeback", 0),
        ("AnonPages", 0),
        ("Mapped", 0),
        ("Shmem", 0),
        ("KReclaimable", 0),
        ("Slab", 0),
        ("SReclaimable", 0),
        ("SUnreclaim", 0),
        ("KernelStack", 0),
        ("PageTables", 0),
        ("CommitLimit", kb),
        ("Committed_AS", 0),
        ("VmallocTotal", 0),
        ("VmallocUsed", 0),
        ("HugePages_Total", 0),
        ("HugePages_Free", 0),
        ("Hugepagesize", 2048),
    ] {
        let unit = if key.starts_with("HugePages_") {
            ""
        } else {
            " kB"
        };
        out.push_str(&format!("{:<16}{value:>8}{unit}\n", format!("{key}:")));
    }
    out
}

/// `/proc/stat` with `cpus` idle CPUs and zeroed counters (no host boot time, forks, interrupts).
fn stat(cpus: usize) -> String {
    let zero = "0 0 0 0 0 0 0 0 0 0";
    let mut out = format!("cpu  {zero}\n");
    for i in 0..cpus {
        out.push_str(&format!("cpu{i} {zero}\n"));
    }
    out.push_str("intr 0\nctxt 0\nbtime 0\nprocesses 0\nprocs_running 1\nprocs_blocked 0\nsoftirq 0 0 0 0 0 0 0 0 0 0 0\n");
    out
}

/// A random boot id (UUID v4 text), per instance.
fn boot_id() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom into a local buffer of the given length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // No entropy source (never on Linux ≥ 3.17): a fixed id still hides the host's.
        b = [0x42; 16];
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}\n",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_sized_to_the_limits() {
        let limits = Limits {
            memory: vana_sandbox_core::Bytes(64 << 20),
            ..Limits::default()
        };
        let v = views(&limits);
        assert_eq!(
            v.len(),
            PROC_VIRTUALISED_FILES.len(),
            "an entry without a view"
        );
        let mem = String::from_utf8(v[0].1.clone()).unwrap_or_default();
        assert!(mem.starts_with("MemTotal:          65536 kB\n"), "{mem}");
        let stat = String::from_utf8(v[1].1.clone()).unwrap_or_default();
        assert_eq!(stat.lines().filter(|l| l.starts_with("cpu")).count(), 2);
        assert!(stat.contains("btime 0\n") && stat.contains("processes 0\n"));
        let id = String::from_utf8(v[3].1.clone()).unwrap_or_default();
        assert_eq!(id.len(), 37);
        assert_ne!(id, boot_id());
    }
}
