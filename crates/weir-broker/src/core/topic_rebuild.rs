//! Rebuilding the topic table from the store when `config/topics.json` is gone.
//!
//! The table is derivable: every topic that ever held a message has consume queues in the
//! store, named by topic and queue id. When the file is missing but the store holds messages,
//! the table is rebuilt from them (each topic gets queues `0..=highest queue id seen`) and
//! written back, with a WARN naming what was rebuilt, instead of starting with no topics while
//! the log still holds every message. A file that exists but cannot be read is not guessed
//! at: the broker refuses to start and says which file (see [`TopicTable::load`]).

use std::collections::BTreeMap;
use std::path::Path;

use crate::core::message_log::MessageLog;

use crate::core::topics::TopicTable;
use crate::error::BrokerError;

/// Loads the topic table, rebuilding it from the log when its file is missing.
pub(crate) fn load_or_rebuild(
    data_dir: &Path,
    log: &MessageLog,
) -> Result<TopicTable, BrokerError> {
    let path = data_dir.join("config").join("topics.json");
    let existed = path
        .try_exists()
        .map_err(|e| BrokerError::io(format!("reading {}", path.display()), e))?;
    let table = TopicTable::load(data_dir)?;
    if existed {
        return Ok(table);
    }
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for (topic, queue_id, offsets) in log.queues() {
        if offsets.max > 0 {
            let queues = seen.entry(topic).or_default();
            *queues = (*queues).max(queue_id.saturating_add(1));
        }
    }
    if seen.is_empty() {
        return Ok(table);
    }
    for (topic, queues) in &seen {
        table.create(topic, *queues).map_err(|e| {
            BrokerError::Config(format!(
                "{} is missing and topic {topic} cannot be rebuilt from the log: {}",
                path.display(),
                e.message
            ))
        })?;
    }
    let rebuilt: Vec<String> = seen
        .iter()
        .map(|(t, q)| format!("{t} ({q} queues)"))
        .collect();
    tracing::warn!(
        file = %path.display(),
        topics = %rebuilt.join(", "),
        "the topic table was missing; rebuilt it from the topics and queues found in the log \
         (queue counts are the highest queue id holding messages + 1)"
    );
    Ok(table)
}
