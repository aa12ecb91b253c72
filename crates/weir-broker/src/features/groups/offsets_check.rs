//! Refusing to start without the committed offsets of groups that used this broker.
//!
//! Committed offsets live only in `config/offsets.json`; unlike the topic table they cannot be
//! rebuilt from the log. The file is created (empty) the first time the broker starts, so a
//! missing file means it was lost. When it is missing but the log shows that consumer groups
//! committed here (their `%RETRY%<group>` topics hold messages: push consumers in clustering
//! mode, which commit offsets), starting with no offsets would silently make those groups
//! start over (re-deliver or skip, by their start position). The broker refuses instead, with
//! a one-line explanation; writing `{}` to the file accepts the loss.

use std::collections::BTreeSet;
use std::path::Path;

use crate::core::message_log::MessageLog;

use crate::error::BrokerError;
use weir_proto::names::RETRY_PREFIX;

/// Fails when `config/offsets.json` is missing although groups consumed from this broker.
pub(crate) fn check(data_dir: &Path, log: &MessageLog) -> Result<(), BrokerError> {
    let path = data_dir.join("config").join("offsets.json");
    let exists = path
        .try_exists()
        .map_err(|e| BrokerError::io(format!("reading {}", path.display()), e))?;
    if exists {
        return Ok(());
    }
    let groups: BTreeSet<String> = log
        .queues()
        .into_iter()
        .filter(|(_, _, offsets)| offsets.max > 0)
        .filter_map(|(topic, _, _)| topic.strip_prefix(RETRY_PREFIX).map(str::to_owned))
        .collect();
    if groups.is_empty() {
        return Ok(());
    }
    Err(BrokerError::Config(format!(
        "{} is missing, but consumer groups {} used this broker: their committed offsets are \
         not in the log and cannot be rebuilt; restore the file, or write {{}} to it to let \
         them start over",
        path.display(),
        groups.into_iter().collect::<Vec<_>>().join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use weir_proto::record::{RecordFields, encode};
    use weir_store::{Store, StoreConfig};

    use super::*;

    #[tokio::test]
    async fn a_lost_offsets_file_is_refused_when_groups_committed()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(StoreConfig::new(dir.path()))?;
        let log = MessageLog::new(store.clone());
        // A broker with no groups starts, and the file is created.
        check(dir.path(), &log)?;
        crate::features::groups::offsets::OffsetTable::load(dir.path())?;
        assert!(dir.path().join("config/offsets.json").exists());
        let mut batch = BytesMut::new();
        let retry_topic = format!("{RETRY_PREFIX}billing");
        encode(
            &RecordFields {
                topic: &retry_topic,
                body: b"again",
                ..Default::default()
            },
            &mut batch,
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
}
