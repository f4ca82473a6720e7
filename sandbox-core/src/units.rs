//! Unit helpers shared by results and policies.

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// Formats a byte count the way the plan's result does: `"12MB"`, `"512KB"`, `"100B"`
/// (binary multiples, rounded to the nearest unit).
pub fn human_bytes(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const GIB: u64 = 1024 * MIB;
    if bytes >= GIB {
        format!("{:.1}GB", bytes as f64 / GIB as f64)
    } else if bytes >= MIB {
        format!("{}MB", (bytes + MIB / 2) / MIB)
    } else if bytes >= KIB {
        format!("{}KB", (bytes + KIB / 2) / KIB)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_plan() {
        assert_eq!(human_bytes(12_582_912), "12MB");
        assert_eq!(human_bytes(MIB), "1MB");
        assert_eq!(human_bytes(4096), "4KB");
        assert_eq!(human_bytes(10), "10B");
        assert_eq!(human_bytes(3 * 1024 * MIB), "3.0GB");
    }
}
