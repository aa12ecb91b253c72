//! Socket helpers the listeners share.

use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

/// Writes all of `buf`, failing with `TimedOut` if the peer takes no byte for `stall_limit`
/// (a slow reader that keeps taking bytes is never cut off).
pub(crate) async fn write_progressing(
    write: &mut OwnedWriteHalf,
    buf: &[u8],
    stall_limit: Option<Duration>,
) -> std::io::Result<()> {
    let mut written = 0;
    while written < buf.len() {
        let step = write.write(&buf[written..]);
        let n = match stall_limit {
            Some(limit) => tokio::time::timeout(limit, step)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))?,
            None => step.await?,
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        written += n;
    }
    Ok(())
}
