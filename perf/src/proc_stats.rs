//! CPU time and resident memory of a process, from `/proc`, and which
//! CPUs it runs on: the load tool keeps off the core the measured process
//! (the dataplane's pinned shard, or the relay pinned to the same core)
//! runs on, so both are measured alone on one core.

/// User + system CPU seconds used by `pid` so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks as f64 / hz)
}

/// The parent of `pid` (field 4 of `/proc/PID/stat`).
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resident set size of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Open file descriptors of `pid` (the dataplane holds one UDP socket per session).
pub fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// The one CPU a thread of `pid` is pinned to (the dataplane's shard), if
/// any thread is pinned to exactly one.
pub fn pinned_cpu(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .find_map(|status| {
            let list = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
                .trim();
            list.parse().ok()
        })
}

/// Lets thread `tid` (0: the calling one) run on `cpus` only.
pub fn set_affinity(tid: u32, cpus: &[usize]) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; CPU_SET indexes are bounds-checked first.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if c >= libc::CPU_SETSIZE as usize {
                return Err(format!("cpu {c} out of range"));
            }
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(tid as i32, std::mem::size_of_val(&set), &set) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }
    Ok(())
}

/// Moves the calling thread (and the threads it starts later) off `cpu`,
/// if there is another CPU to run on.
pub fn keep_off(cpu: usize) -> Result<(), String> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let others: Vec<usize> = (0..n).filter(|c| *c != cpu).collect();
    if others.is_empty() {
        return Ok(());
    }
    set_affinity(0, &others)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(super::cpu_seconds(me).is_some());
        assert!(super::rss_bytes(me).unwrap() > 1_000_000);
        let fds = super::open_fds(me).unwrap();
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(super::open_fds(me).unwrap(), fds + 1);
        drop(f);
    }

    #[test]
    fn finds_a_thread_pinned_to_one_cpu() {
        let me = std::process::id();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            super::set_affinity(0, &[0]).unwrap();
            tx.send(()).unwrap();
            let _ = done_rx.recv();
        });
        rx.recv().unwrap();
        assert_eq!(super::pinned_cpu(me), Some(0));
        done_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
