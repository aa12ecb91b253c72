//! The API versions the Kafka listener speaks, and `ApiVersions`.
//!
//! Both the old (non-flexible) and the new (flexible) versions are offered: kafka-python and
//! aiokafka speak only the old ones. Fetch ≥ 13 and Produce ≥ 12 (topic ids, KIP-890) and the
//! transaction APIs are not offered.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

/// (API, lowest version, highest version) for every API served.
pub(crate) const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
];

/// Whether `version` of `api` is served.
pub(crate) fn supports(api: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|&(key, min, max)| key == api && (min..=max).contains(&version))
}

/// The `ApiVersions` answer: every API served, or `UNSUPPORTED_VERSION` (35) with the same
/// list when the request's version is not one of ours (the client then retries with v0).
pub(crate) fn api_versions(version_supported: bool) -> ApiVersionsResponse {
    let api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(if version_supported { 0 } else { 35 })
        .with_api_keys(api_keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_ranges_are_ones_the_codec_knows() {
        for &(key, min, max) in SUPPORTED {
            let valid = key.valid_versions();
            assert!(
                valid.min <= min && max <= valid.max,
                "{key:?} {min}..={max} outside {valid:?}"
            );
        }
    }
}
