//! The partitions a member of a `consumer` group was assigned, read from the opaque
//! assignment its leader computed (Kafka's `ConsumerProtocolAssignment`, versions 0–3, which
//! are not flexible), for the admin views. Only the partition list is read:
//!
//! ```text
//! version           i16
//! topic count       i32, then per topic:
//!   name            i16 length + UTF-8 bytes
//!   partition count i32, then that many i32 partitions
//! user data         i32 length + bytes (-1: null)      not read
//! ```
//!
//! Bounds are checked before each read; counts are not trusted for allocation.

/// The (topic, partitions) of an assignment, or `None` if it is not a consumer-protocol
/// assignment (another protocol type, or malformed).
pub fn consumer_assignment(bytes: &[u8]) -> Option<Vec<(String, Vec<u32>)>> {
    let mut r = Reader { bytes };
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return None;
    }
    let topics = usize::try_from(r.i32()?).ok()?;
    let mut out = Vec::new();
    for _ in 0..topics {
        let len = usize::try_from(r.i16()?).ok()?;
        let name = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
        let count = usize::try_from(r.i32()?).ok()?;
        let mut partitions = Vec::with_capacity(count.min(r.bytes.len() / 4));
        for _ in 0..count {
            partitions.push(u32::try_from(r.i32()?).ok()?);
        }
        out.push((name, partitions));
    }
    Some(out)
}

/// Big-endian reads over a slice.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An assignment as a Kafka consumer's leader encodes it.
    fn encode(version: i16, topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (name, partitions) in topics {
            b.extend((name.len() as i16).to_be_bytes());
            b.extend(name.as_bytes());
            b.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes());
        b
    }

    #[test]
    fn reads_the_partitions_of_each_topic() {
        let bytes = encode(1, &[("orders", &[0, 2]), ("audit", &[1])]);
        assert_eq!(
            consumer_assignment(&bytes),
            Some(vec![
                ("orders".to_owned(), vec![0, 2]),
                ("audit".to_owned(), vec![1])
            ])
        );
        assert_eq!(consumer_assignment(&encode(0, &[])), Some(vec![]));
    }

    #[test]
    fn refuses_what_is_not_an_assignment() {
        let bytes = encode(1, &[("orders", &[0, 2])]);
        assert_eq!(consumer_assignment(&bytes[..9]), None);
        assert_eq!(consumer_assignment(&encode(9, &[])), None);
        assert_eq!(consumer_assignment(&encode(1, &[("t", &[-1])])), None);
        // A huge count in a short buffer: no allocation by the count, just `None`.
        let mut huge = 0i16.to_be_bytes().to_vec();
        huge.extend(1i32.to_be_bytes());
        huge.extend(1i16.to_be_bytes());
        huge.push(b't');
        huge.extend(i32::MAX.to_be_bytes());
        assert_eq!(consumer_assignment(&huge), None);
    }
}
