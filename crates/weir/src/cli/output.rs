//! How client commands print: messages as text or JSON lines, and aligned tables.

use std::io::Write;

use serde_json::{Map, Value, json};
use weir_client::ReceivedMessage;
use weir_proto::batch::{HEADER_DELIVER_MS, HEADER_TAGS};

/// How messages are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The body only, as UTF-8 (invalid sequences replaced).
    Text,
    /// One JSON object per line with every field.
    Json,
}

/// A message as one JSON object: topic, queue, offset, id, key, tag, properties, body,
/// born_timestamp, store_timestamp, deliver_at (0 unless delayed).
pub fn message_json(message: &ReceivedMessage) -> Value {
    // The headers but the tag and the deliver-at time (printed as fields of their own); a
    // null value is null, a binary one is shown lossily.
    let properties: Map<String, Value> = message
        .headers
        .iter()
        .filter(|(k, _)| k != HEADER_TAGS && k != HEADER_DELIVER_MS)
        .map(|(k, v)| {
            let value = match v {
                Some(v) => Value::String(String::from_utf8_lossy(v).into_owned()),
                None => Value::Null,
            };
            (k.clone(), value)
        })
        .collect();
    json!({
        "topic": message.topic,
        "queue": message.queue_id,
        "offset": message.queue_offset,
        "id": message.id.as_ref().map(ToString::to_string),
        "key": message.key,
        "tag": message.tag,
        "properties": properties,
        "body": String::from_utf8_lossy(&message.body),
        "born_timestamp": message.born_timestamp,
        "store_timestamp": message.store_timestamp,
        "deliver_at": message.deliver_at,
    })
}

/// Writes `message` as one line in `format`.
pub fn write_message(
    out: &mut impl Write,
    message: &ReceivedMessage,
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Text => {
            out.write_all(String::from_utf8_lossy(&message.body).as_bytes())?;
            out.write_all(b"\n")
        }
        Format::Json => writeln!(out, "{}", message_json(message)),
    }
}

/// Writes a message this process consumed as one line in `format`. The JSON form adds
/// `consumed_at_us`: the wall-clock time of the write in microseconds since the Unix epoch, so
/// the output of several consumers can be merged in the order they processed messages.
pub fn write_consumed(
    out: &mut impl Write,
    message: &ReceivedMessage,
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Text => write_message(out, message, format),
        Format::Json => {
            let mut line = message_json(message);
            line["consumed_at_us"] = json!(now_us());
            writeln!(out, "{line}")
        }
    }
}

/// Wall-clock microseconds since the Unix epoch (0 before it).
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Prints rows under `headers`, columns padded to their widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(out, "{}", line(headers.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}
