//! The compression codecs of a batch's records, by Kafka's numbers (attributes bits 0–2).
//!
//! The records section of a compressed batch (everything after the 61-byte header) is one
//! compressed stream: gzip (RFC 1952), snappy in the xerial framing the Java client writes
//! (raw snappy is read too, as some clients write it), LZ4 frames, zstd frames. Decompression
//! is bounded: a batch that would expand past the caller's limit is refused, so a small
//! hostile batch cannot make the broker allocate gigabytes.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use super::BatchError;

/// How a batch's records are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Not compressed.
    #[default]
    None = 0,
    /// gzip.
    Gzip = 1,
    /// Snappy (xerial framing).
    Snappy = 2,
    /// LZ4 frames.
    Lz4 = 3,
    /// Zstandard.
    Zstd = 4,
}

impl Compression {
    /// The codec with Kafka's number `code` (attributes bits 0–2).
    pub fn from_code(code: u8) -> Result<Compression, BatchError> {
        Ok(match code {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(BatchError::UnknownCompression(other)),
        })
    }

    /// Kafka's number for this codec.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The codec's name as the CLI and configs spell it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Every codec, `None` first.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown compression {s:?}: none, gzip, snappy, lz4 or zstd"))
    }
}

/// xerial's snappy stream header: magic, version 1, compatible version 1.
const XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// Uncompressed bytes per xerial block (the Java client's default).
const XERIAL_BLOCK: usize = 32 * 1024;
/// zstd level: the Java client's default.
const ZSTD_LEVEL: i32 = 3;
/// LZ4 level (fast mode below 3, as the Java client's default of 9 is HC and slow to write).
const LZ4_LEVEL: u32 = 1;

fn codec_error(codec: Compression, e: impl fmt::Display) -> BatchError {
    BatchError::Compression(format!("{codec}: {e}"))
}

/// Appends `data` compressed with `codec` to `dst`.
pub fn compress(codec: Compression, data: &[u8], dst: &mut Vec<u8>) -> Result<(), BatchError> {
    let err = |e: std::io::Error| codec_error(codec, e);
    match codec {
        Compression::None => dst.extend_from_slice(data),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(dst, flate2::Compression::fast());
            enc.write_all(data).map_err(err)?;
            enc.finish().map_err(err)?;
        }
        Compression::Snappy => {
            dst.extend_from_slice(XERIAL_MAGIC);
            let mut encoder = snap::raw::Encoder::new();
            for block in data.chunks(XERIAL_BLOCK) {
                let at = dst.len();
                dst.resize(at + 4 + snap::raw::max_compress_len(block.len()), 0);
                let n = encoder
                    .compress(block, &mut dst[at + 4..])
                    .map_err(|e| codec_error(codec, e))?;
                dst[at..at + 4].copy_from_slice(&(n as u32).to_be_bytes());
                dst.truncate(at + 4 + n);
            }
        }
        Compression::Lz4 => {
            let mut enc = lz4::EncoderBuilder::new()
                .level(LZ4_LEVEL)
                .block_mode(lz4::BlockMode::Independent)
                .build(dst)
                .map_err(err)?;
            enc.write_all(data).map_err(err)?;
            let (_, finished) = enc.finish();
            finished.map_err(err)?;
        }
        Compression::Zstd => {
            let compressed = zstd::bulk::compress(data, ZSTD_LEVEL).map_err(err)?;
            dst.extend_from_slice(&compressed);
        }
    }
    Ok(())
}

/// Reads all of `reader` into `dst`, refusing to go past `limit` bytes.
fn read_bounded(
    codec: Compression,
    reader: impl Read,
    dst: &mut Vec<u8>,
    limit: usize,
) -> Result<(), BatchError> {
    let mut bounded = reader.take((limit as u64).saturating_add(1));
    bounded
        .read_to_end(dst)
        .map_err(|e| codec_error(codec, e))?;
    if dst.len() > limit {
        return Err(BatchError::TooLargeUncompressed { limit });
    }
    Ok(())
}

/// The decompressed form of `data`, at most `limit` bytes long.
pub fn decompress(codec: Compression, data: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::with_capacity((data.len() * 8).min(limit));
    match codec {
        Compression::None => {
            if data.len() > limit {
                return Err(BatchError::TooLargeUncompressed { limit });
            }
            out.extend_from_slice(data);
        }
        Compression::Gzip => {
            read_bounded(codec, flate2::read::GzDecoder::new(data), &mut out, limit)?
        }
        Compression::Lz4 => read_bounded(
            codec,
            lz4::Decoder::new(data).map_err(|e| codec_error(codec, e))?,
            &mut out,
            limit,
        )?,
        Compression::Zstd => read_bounded(
            codec,
            zstd::stream::read::Decoder::new(data).map_err(|e| codec_error(codec, e))?,
            &mut out,
            limit,
        )?,
        Compression::Snappy => snappy_decompress(data, &mut out, limit)?,
    }
    Ok(out)
}

fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), BatchError> {
    let codec = Compression::Snappy;
    let len = snap::raw::decompress_len(block).map_err(|e| codec_error(codec, e))?;
    if out.len() + len > limit {
        return Err(BatchError::TooLargeUncompressed { limit });
    }
    let at = out.len();
    out.resize(at + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[at..])
        .map_err(|e| codec_error(codec, e))?;
    Ok(())
}

fn snappy_decompress(data: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), BatchError> {
    let Some(mut rest) = data.strip_prefix(&XERIAL_MAGIC[..8]) else {
        return snappy_block(data, out, limit);
    };
    // Version and compatible version follow the 8-byte magic.
    rest = rest
        .get(8..)
        .ok_or(BatchError::Malformed("xerial snappy header"))?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or(BatchError::Malformed("xerial snappy block length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = tail
            .get(..len)
            .ok_or(BatchError::Malformed("xerial snappy block past the end"))?;
        snappy_block(block, out, limit)?;
        rest = &tail[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_codec_round_trips(data in proptest::collection::vec(any::<u8>(), 0..100_000)) {
            for codec in Compression::ALL {
                let mut packed = Vec::new();
                compress(codec, &data, &mut packed).unwrap();
                prop_assert_eq!(decompress(codec, &packed, data.len()).unwrap(), data.clone());
            }
        }
    }

    #[test]
    fn expansion_past_the_limit_is_refused() {
        let data = vec![b'a'; 1 << 20];
        for codec in Compression::ALL {
            let mut packed = Vec::new();
            compress(codec, &data, &mut packed).unwrap();
            assert!(matches!(
                decompress(codec, &packed, 1000),
                Err(BatchError::TooLargeUncompressed { limit: 1000 })
            ));
        }
    }

    #[test]
    fn raw_snappy_is_read_too() {
        let data = b"raw snappy from a client that skips the xerial framing".repeat(10);
        let packed = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &packed, 1 << 20).unwrap(),
            data
        );
    }

    #[test]
    fn names_parse() {
        for codec in Compression::ALL {
            assert_eq!(codec.name().parse::<Compression>().unwrap(), codec);
            assert_eq!(Compression::from_code(codec.code()).unwrap(), codec);
        }
        assert!("brotli".parse::<Compression>().is_err());
    }
}
