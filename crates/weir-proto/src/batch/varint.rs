//! Kafka's variable-length integers: zigzag-encoded, seven bits per byte, least significant
//! group first, the high bit set on every byte but the last (as in Protocol Buffers' `sint`).

use bytes::BufMut;

use super::BatchError;

/// Bytes [`put_varlong`] writes for `value`.
pub fn varlong_len(value: i64) -> usize {
    let mut z = zigzag(value);
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Bytes [`put_varint`] writes for `value`.
pub fn varint_len(value: i32) -> usize {
    varlong_len(i64::from(value))
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Appends `value` as a zigzag varlong.
pub fn put_varlong(dst: &mut impl BufMut, value: i64) {
    let mut z = zigzag(value);
    while z >= 0x80 {
        dst.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    dst.put_u8(z as u8);
}

/// Appends `value` as a zigzag varint.
pub fn put_varint(dst: &mut impl BufMut, value: i32) {
    put_varlong(dst, i64::from(value));
}

/// Reads a zigzag varlong at the start of `*buf` and moves `*buf` past it.
pub fn get_varlong(buf: &mut &[u8]) -> Result<i64, BatchError> {
    let mut z: u64 = 0;
    for (i, byte) in buf.iter().enumerate().take(10) {
        z |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    Err(BatchError::Malformed("varint past the end or too long"))
}

/// Reads a zigzag varint at the start of `*buf` and moves `*buf` past it.
pub fn get_varint(buf: &mut &[u8]) -> Result<i32, BatchError> {
    i32::try_from(get_varlong(buf)?).map_err(|_| BatchError::Malformed("varint out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varlong_round_trips(v in any::<i64>()) {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            prop_assert_eq!(buf.len(), varlong_len(v));
            let mut at: &[u8] = &buf;
            prop_assert_eq!(get_varlong(&mut at).unwrap(), v);
            prop_assert!(at.is_empty());
        }
    }

    #[test]
    fn known_encodings() {
        let mut buf = Vec::new();
        for v in [0i64, -1, 1, -2, 63, -64, 64] {
            put_varlong(&mut buf, v);
        }
        assert_eq!(buf, [0, 1, 2, 3, 0x7E, 0x7F, 0x80, 0x01]);
    }
}
