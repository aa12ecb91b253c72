//! Refusing to start without the committed offsets of the groups that used this broker.
//!
//! Committed offsets live only in `config/offsets.json`; unlike the topic table they cannot be
//! rebuilt from the log. The file is created (empty) the first time the broker starts, so a
//! missing file beside a log that holds messages means it was lost: starting with no offsets
//! would silently make every group start over (re-deliver or skip, by its start position),
//! whether it left a trace in the log or not. The broker refuses instead, with a one-line
//! explanation that names the groups the log shows (their `%RETRY%<group>` topics); writing
//! `{}` to the file accepts the loss.

use std::collections::BTreeSet;
use std::path::Path;

use weir_proto::names::RETRY_PREFIX;

use crate::core::message_log::MessageLog;
use crate::error::BrokerError;

/// Fails when `config/offsets.json` is missing although the log holds messages.
pub(crate) fn check(data_dir: &Path, log: &MessageLog) -> Result<(), BrokerError> {
    let path = data_dir.join("config").join("offsets.json");
    let exists = path
        .try_exists()
        .map_err(|e| BrokerError::io(format!("reading {}", path.display()), e))?;
    if exists {
        return Ok(());
    }
    let used: Vec<(String, u32, weir_store::QueueOffsets)> = log
        .queues()
        .into_iter()
        .filter(|(_, _, offsets)| offsets.max > 0)
        .collect();
    if used.is_empty() {
        return Ok(());
    }
    let groups: BTreeSet<&str> = used
        .iter()
        .filter_map(|(topic, _, _)| topic.strip_prefix(RETRY_PREFIX))
        .collect();
    let seen = if groups.is_empty() {
        String::from("no group left a trace in the log, but any may have committed here")
    } else {
        format!(
            "consumer groups {} committed here",
            groups.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    Err(BrokerError::Config(format!(
        "{} is missing, but the log holds messages ({seen}): committed offsets are not in the \
         log and cannot be rebuilt; restore the file, or write {{}} to it to let every group \
         start over",
        path.display(),
    )))
}

#[cfg(test)]
mod tests {
    use weir_proto::batch::{BatchBuilder, RecordFields};
    use weir_store::{Store, StoreConfig};

    use super::*;

    #[tokio::test]
    async fn a_lost_offsets_file_is_refused_when_groups_committed()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(StoreConfig::new(dir.path()))?;
        let log = MessageLog::new(store.clone());
        // An empty broker starts, and the file is created.
        check(dir.path(), &log)?;
        crate::features::groups::offsets::OffsetTable::load(dir.path())?;
        assert!(dir.path().join("config/offsets.json").exists());
        let retry_topic = format!("{RETRY_PREFIX}billing");
        let batch = BatchBuilder::single(
            &retry_topic,
            &RecordFields {
                value: Some(b"again"),
                ..Default::default()
            },
            &[],
        )?;
        log.append(&retry_topic, 0, batch).await?;
        check(dir.path(), &log)?;
        std::fs::remove_file(dir.path().join("config/offsets.json"))?;
        let refused = check(dir.path(), &log).err().map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("consumer groups billing")),
            "{refused:?}"
        );
        std::fs::write(dir.path().join("config/offsets.json"), "{}")?;
        check(dir.path(), &log)?;
        Ok(())
    }

    #[tokio::test]
    async fn a_lost_offsets_file_is_refused_whenever_the_log_holds_messages()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(StoreConfig::new(dir.path()))?;
        let log = MessageLog::new(store.clone());
        let batch = BatchBuilder::single(
            "orders",
            &RecordFields {
                value: Some(b"paid"),
                ..Default::default()
            },
            &[],
        )?;
        log.append("orders", 0, batch).await?;
        // Pull consumers leave no trace in the log: a lost file is refused all the same.
        let refused = check(dir.path(), &log).err().map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("offsets.json is missing") && e.contains("{}")),
            "{refused:?}"
        );
        std::fs::create_dir_all(dir.path().join("config"))?;
        std::fs::write(dir.path().join("config/offsets.json"), "{}")?;
        check(dir.path(), &log)?;
        Ok(())
    }
}
