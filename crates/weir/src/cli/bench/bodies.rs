//! What `weir bench produce` puts in message bodies (`--body`): one repeated byte, which
//! compresses to almost nothing, or JSON log lines that vary from message to message and
//! compress about as well as real application logs do.

use bytes::Bytes;

/// The kind of body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BodyKind {
    /// `x` repeated `--size` times.
    X,
    /// A JSON log line of about `--size` bytes (timestamp, level, service, trace id, message,
    /// amount), different for every message.
    Json,
}

const LEVELS: [&str; 4] = ["info", "info", "warn", "debug"];
const SERVICES: [&str; 5] = ["checkout", "payments", "inventory", "search", "shipping"];
const EVENTS: [&str; 6] = [
    "order paid",
    "cart updated",
    "stock reserved",
    "query served",
    "label printed",
    "retrying upstream call",
];
const WORDS: [&str; 12] = [
    "user", "session", "region", "eu-west", "cache", "hit", "miss", "latency", "ms", "shard",
    "replica", "request",
];

/// A small deterministic generator (xorshift64*), so runs are repeatable.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Body number `n` of `kind`, about `size` bytes long.
pub fn body(kind: BodyKind, n: u64, size: usize) -> Bytes {
    match kind {
        BodyKind::X => Bytes::from(vec![b'x'; size]),
        BodyKind::Json => json_line(n, size),
    }
}

fn json_line(n: u64, size: usize) -> Bytes {
    let r = mix(n.wrapping_add(0x9E37_79B9_7F4A_7C15));
    let pick = |shift: u32, len: usize| ((r >> shift) as usize) % len;
    let millis = 1_700_000_000_000u64 + n * 3 + (r % 3);
    let mut line = format!(
        "{{\"ts\":{millis},\"lvl\":\"{}\",\"svc\":\"{}\",\"trace\":\"{:016x}\",\"msg\":\"{}\",\"n\":{}",
        LEVELS[pick(3, LEVELS.len())],
        SERVICES[pick(7, SERVICES.len())],
        mix(r),
        EVENTS[pick(11, EVENTS.len())],
        (r >> 20) % 100_000,
    );
    if line.len() + 13 < size {
        line.push_str(",\"more\":\"");
        let mut w = r;
        while line.len() + 2 < size {
            w = mix(w);
            line.push_str(WORDS[(w % WORDS.len() as u64) as usize]);
            line.push(' ');
        }
        line.truncate(size - 2);
        line.push('"');
    }
    line.push('}');
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_are_json_of_about_the_size_and_differ() {
        for size in [16, 100, 1024] {
            let a = body(BodyKind::Json, 1, size);
            let b = body(BodyKind::Json, 2, size);
            assert_ne!(a, b);
            let parsed: serde_json::Value = serde_json::from_slice(&a).unwrap();
            assert!(parsed["trace"].is_string());
            if size >= 200 {
                assert!(a.len().abs_diff(size) <= 2, "{size}: {}", a.len());
            }
        }
        assert_eq!(body(BodyKind::X, 0, 5), Bytes::from_static(b"xxxxx"));
    }
}
