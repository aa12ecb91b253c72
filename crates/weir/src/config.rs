//! Configuration of `weir serve`, from lowest to highest precedence: built-in defaults, the
//! TOML file (`--config`, else `./weir.toml` when present), `WEIR_<KEY>` environment variables
//! (for example `WEIR_FLUSH=sync`, `WEIR_DEFAULT_QUEUES=8`), then command-line flags.
//!
//! Keys are the fields of [`BrokerConfig`], all at the top level of the file; docs/operations.md
//! lists them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use weir_broker::BrokerConfig;

/// The file read when `--config` is not given, if it exists.
const DEFAULT_CONFIG_FILE: &str = "weir.toml";
/// The HTTP listener of `weir serve` unless configured otherwise (the library opens none).
const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9877";
/// The Kafka listener of `weir serve` unless configured otherwise (the library opens none).
const DEFAULT_KAFKA_LISTEN: &str = "127.0.0.1:9092";

/// Settings given as command-line flags; each one set overrides every other source.
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--flush`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush: Option<String>,
    /// `--advertised-addr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_addr: Option<String>,
    /// `--http`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
    /// `--kafka`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_listen: Option<String>,
    /// `--dashboard`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<bool>,
}

/// Builds the broker's configuration from every source.
pub fn load(file: Option<&Path>, flags: FlagOverrides) -> anyhow::Result<BrokerConfig> {
    let defaults = BrokerConfig {
        http_listen: Some(DEFAULT_HTTP_LISTEN.to_owned()),
        kafka_listen: Some(DEFAULT_KAFKA_LISTEN.to_owned()),
        ..BrokerConfig::default()
    };
    let known_keys: Vec<String> = match figment::value::Value::serialize(&defaults) {
        Ok(figment::value::Value::Dict(_, dict)) => dict.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let mut figment = Figment::from(Serialized::defaults(defaults));
    match file {
        Some(path) => {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            figment = figment.merge(Toml::file(path));
        }
        None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
            figment = figment.merge(Toml::file(DEFAULT_CONFIG_FILE));
        }
        None => {}
    }
    let env = Env::prefixed("WEIR_").filter(move |key| {
        known_keys
            .iter()
            .any(|k| k.eq_ignore_ascii_case(key.as_str()))
    });
    figment
        .merge(env)
        .merge(Serialized::defaults(flags))
        .extract()
        .context("invalid configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1111\"\ndefault_queues = 7\n").unwrap();
        let config = load(
            Some(&path),
            FlagOverrides {
                listen: Some("127.0.0.1:2222".into()),
                ..FlagOverrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:2222");
        assert_eq!(config.default_queues, 7);
        assert_eq!(config.http_listen.as_deref(), Some(DEFAULT_HTTP_LISTEN));
    }

    #[test]
    fn the_http_flag_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, "http_listen = \"127.0.0.1:1111\"\n").unwrap();
        let from_file = load(Some(&path), FlagOverrides::default()).unwrap();
        assert_eq!(from_file.http_listen.as_deref(), Some("127.0.0.1:1111"));
        let flags = FlagOverrides {
            http_listen: Some("127.0.0.1:0".into()),
            ..FlagOverrides::default()
        };
        let config = load(Some(&path), flags).unwrap();
        assert_eq!(config.http_listen.as_deref(), Some("127.0.0.1:0"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        assert!(load(Some(&path), FlagOverrides::default()).is_err());
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        assert!(
            load(
                Some(Path::new("/nonexistent/weir.toml")),
                FlagOverrides::default()
            )
            .is_err()
        );
    }
}
