//! Numbers for people: sizes, counts, durations and rates in log lines.

use std::time::Duration;

/// `650.2 MB`, `12.0 kB`, `512 B` (decimal units, as transfer rates use).
pub fn bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().si().to_string()
}

/// `15,234`
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 file`, `3 files`.
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", count(n))
    }
}

/// `2.41 s`
pub fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `270 MB/s`, over the given duration.
pub fn rate(n: u64, d: Duration) -> String {
    let secs = d.as_secs_f64().max(0.001);
    format!("{}/s", bytes((n as f64 / secs) as u64))
}

/// `19%` of the original.
pub fn ratio(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.0}%", part as f64 * 100.0 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(650_200_000), "650.2 MB");
        assert_eq!(bytes(1_500_000_000), "1.5 GB");
        assert_eq!(count(15234), "15,234");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(plural(1, "file"), "1 file");
        assert_eq!(plural(1200, "dir"), "1,200 dirs");
        assert_eq!(seconds(Duration::from_millis(2410)), "2.41 s");
        assert_eq!(rate(270_000_000, Duration::from_secs(1)), "270.0 MB/s");
        assert_eq!(ratio(19, 100), "19%");
    }
}
