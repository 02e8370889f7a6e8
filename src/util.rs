//! Small helpers shared by several modules: randomness, hashing, atomic file writes, clocks.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    SystemRandom::new().fill(&mut buf).expect("the operating system's random number generator failed");
    buf
}

/// `n` random bytes as lowercase hex (`2n` characters).
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    SystemRandom::new().fill(&mut buf).expect("the operating system's random number generator failed");
    hex(&buf)
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().try_into().expect("SHA-256 digests are 32 bytes")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Replaces `path` with `data` so that readers see the old or the new file, never a torn one:
/// write a temporary file in the same directory, fsync it, rename it over, fsync the directory.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", random_hex(6)));
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is only durable once the directory entry is on disk.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a UTC time as [`iso8601`] writes it, or shorter (`2024-01-31`, `2024-01-31T12:34`,
/// `2024-01-31T12:34:56Z`, with `.mmm`), or Unix milliseconds: Unix milliseconds.
pub fn parse_time(s: &str) -> Option<u64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once(['T', ' ']).unwrap_or((s, ""));
    let mut d = date.split('-');
    let (year, month, day): (i64, i64, i64) =
        (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    if d.next().is_some() || !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (hms, millis) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').filter(|p| !p.is_empty());
    let mut part = |max: u64| -> Option<u64> {
        match t.next() {
            None => Some(0),
            Some(p) if p.len() == 2 => p.parse().ok().filter(|v| *v <= max),
            Some(_) => None,
        }
    };
    let (h, m, sec) = (part(23)?, part(59)?, part(60)?);
    if t.next().is_some() {
        return None;
    }
    let ms: u64 = match millis {
        "" => 0,
        m if m.len() <= 3 && m.bytes().all(|b| b.is_ascii_digit()) => {
            m.parse::<u64>().ok()? * 10u64.pow(3 - m.len() as u32)
        }
        _ => return None,
    };
    // Days-from-civil (Howard Hinnant), the inverse of `iso8601`'s.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(((days * 86_400 + h * 3600 + m * 60 + sec) * 1000) + ms)
}

/// Formats a Unix time in milliseconds as ISO-8601 UTC (`2024-01-31T12:34:56.789Z`).
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), valid for every date after 1970.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_back_as_written() {
        for ms in [0u64, 951_782_400_000, 1_706_704_496_789, 4_102_444_799_999] {
            assert_eq!(parse_time(&iso8601(ms)), Some(ms), "{}", iso8601(ms));
        }
        assert_eq!(parse_time("2024-01-31"), parse_time("2024-01-31T00:00:00.000Z"));
        assert_eq!(parse_time("1706704496789"), Some(1_706_704_496_789));
        for bad in ["", "2024-13-01", "2024-01-31T25:00", "yesterday", "2024-01-31T12:3", "2024-01-31T12:34:56.1234"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn iso8601_formats_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_795_833_748_123), "2026-11-28T02:42:28.123Z");
    }

    #[test]
    fn hex_and_random() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        let a = random_hex(12);
        assert_eq!(a.len(), 24);
        assert_ne!(a, random_hex(12));
    }

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        atomic_write(&p, b"one", 0o600).unwrap();
        atomic_write(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
