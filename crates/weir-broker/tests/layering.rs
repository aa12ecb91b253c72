//! The broker crate's layering rules (`src/lib.rs`), checked on the source: features are
//! built from core parts and know no protocol, the core knows no feature, only the write path
//! appends to the store, and nothing but `lib.rs` reaches into start-up.

use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without its comments (so docs may name what the code may not use).
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The `(file, forbidden word)` pairs found: files under `dir` whose code names a word.
fn violations(dir: &Path, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in sources(dir) {
        let code = code(&file);
        for word in forbidden {
            if code.contains(word) {
                found.push(format!("{} uses {word}", file.display()));
            }
        }
    }
    found
}

#[test]
fn features_are_built_from_parts_and_know_no_protocol() {
    let found = violations(
        &src().join("features"),
        &[
            "BrokerState",
            "crate::state",
            "crate::broker",
            "crate::ops",
            "crate::protocols",
            "crate::routing",
            "RequestContext",
            "Reply",
            "pb::",
            "weir_proto::pb",
            "OutFrame",
        ],
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_core_knows_no_feature_and_no_protocol() {
    let mut forbidden = BELOW_FEATURES.to_vec();
    forbidden.push("crate::replication");
    let found = violations(&src().join("core"), &forbidden);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn replication_knows_no_feature_and_no_protocol() {
    let found = violations(&src().join("replication"), BELOW_FEATURES);
    assert!(found.is_empty(), "{found:#?}");
}

/// What neither the core nor the replication layer may use: everything above them.
const BELOW_FEATURES: &[&str] = &[
    "crate::features",
    "crate::state",
    "crate::broker",
    "crate::ops",
    "crate::protocols",
    "crate::routing",
    "pb::",
];

#[test]
fn protocol_neutral_operations_know_no_protocol() {
    let found = violations(
        &src().join("ops"),
        &[
            "crate::protocols",
            "crate::broker",
            "pb::",
            "RequestContext",
        ],
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn only_the_write_path_appends_to_the_store() {
    let write_path = src().join("core").join("message_log.rs");
    // In a broker group the write path goes through Raft, whose log storage writes.
    let raft_log = src().join("replication").join("log_store.rs");
    let found: Vec<String> = violations(
        &src(),
        &[
            "append_now(",
            "append_replicated(",
            "store.append(",
            "Store::append",
        ],
    )
    .into_iter()
    .filter(|v| {
        !v.starts_with(&write_path.display().to_string())
            && !v.starts_with(&raft_log.display().to_string())
    })
    .collect();
    assert!(found.is_empty(), "{found:#?}");
    assert!(code(&write_path).contains("self.store.append_now("));
}

#[test]
fn nothing_but_the_crate_root_reaches_into_start_up() {
    let root = src().join("lib.rs");
    let found: Vec<String> = violations(&src(), &["crate::broker"])
        .into_iter()
        .filter(|v| !v.starts_with(&root.display().to_string()))
        .collect();
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn protobuf_types_stay_in_the_native_protocol() {
    let native = src().join("protocols").join("native");
    let found: Vec<String> = violations(&src(), &["pb::"])
        .into_iter()
        .filter(|v| !v.starts_with(&native.display().to_string()))
        .collect();
    assert!(found.is_empty(), "{found:#?}");
}
