//! `weir damaged`: list the damaged ranges a broker found on its disk (the answer of its
//! `GET /api/v1/damaged`), one per line.

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

/// List the data a broker found damaged on disk and isolated.
#[derive(Debug, Args)]
pub struct DamagedArgs {
    /// The broker's HTTP listener, HOST:PORT.
    #[arg(long, env = "WEIR_HTTP", default_value = "127.0.0.1:9877")]
    http: String,
    /// Print the JSON answer as it came.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Deserialize)]
struct DamagedList {
    damaged: Vec<DamagedRange>,
}

#[derive(Debug, Deserialize)]
struct DamagedRange {
    kind: String,
    topic: Option<String>,
    queue_id: Option<u32>,
    from: u64,
    to: u64,
    reason: String,
}

/// Runs `weir damaged`.
pub async fn run(args: DamagedArgs) -> Result<()> {
    let url = format!("http://{}/api/v1/damaged", args.http);
    let body = tokio::task::spawn_blocking(move || -> Result<String> {
        let mut response = ureq::get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        Ok(response.body_mut().read_to_string()?)
    })
    .await??;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let list: DamagedList = serde_json::from_str(&body).context("reading the answer")?;
    if list.damaged.is_empty() {
        println!("no damaged data found");
        return Ok(());
    }
    for range in list.damaged {
        match (range.kind.as_str(), range.topic, range.queue_id) {
            ("queue", Some(topic), Some(queue)) => println!(
                "queue {topic}:{queue} offsets {}..{} ({} messages) {}",
                range.from,
                range.to,
                range.to.saturating_sub(range.from),
                range.reason
            ),
            _ => println!(
                "log bytes {}..{} ({} bytes) {}",
                range.from,
                range.to,
                range.to.saturating_sub(range.from),
                range.reason
            ),
        }
    }
    Ok(())
}
