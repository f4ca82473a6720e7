//! Reading the host's cgroup layout from `/proc/self/mountinfo` and `/proc/self/cgroup`: never a
//! panic, whatever the files hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (mountinfo, cgroup) = text.split_once('\0').unwrap_or((&text, ""));
    let detected = vana_sandbox_native::cgroup::detect::parse(mountinfo, cgroup);
    let _ = vana_sandbox_native::cgroup::detect::choose(&detected);
});
