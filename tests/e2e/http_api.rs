//! The HTTP admin API over real HTTP: topics, error JSON and status codes, groups, message
//! lookup, health and readiness.

use serde_json::{Value, json};

use crate::harness::Node;

/// A small blocking HTTP client for the node's HTTP listener; statuses are not errors.
pub struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    /// A client of `node`'s HTTP listener.
    pub fn new(node: &Node) -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build();
        Http {
            agent: ureq::Agent::new_with_config(config),
            base: node.http_url(),
        }
    }

    fn finish(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, String) {
        let mut response = response.expect("HTTP request");
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().expect("HTTP body");
        (status, body)
    }

    /// `GET path`: the status and the body as text.
    pub fn get_text(&self, path: &str) -> (u16, String) {
        Http::finish(self.agent.get(format!("{}{path}", self.base)).call())
    }

    /// `GET path`: the status and the JSON body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get_text(path);
        (status, parse(&body))
    }

    /// `POST path` with a body: the status and the JSON body.
    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let (status, body) = Http::finish(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .send(body),
        );
        (status, parse(&body))
    }

    /// `DELETE path`: the status and the JSON body (null when empty).
    pub fn delete(&self, path: &str) -> (u16, Value) {
        let (status, body) = Http::finish(self.agent.delete(format!("{}{path}", self.base)).call());
        (status, parse(&body))
    }
}

fn parse(body: &str) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Asserts an error answer: status, numeric code and name.
fn assert_error((status, body): (u16, Value), want_status: u16, code: u64, name: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["error"], name, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[test]
fn probes_and_broker_info() {
    let node = Node::start(&[]);
    let http = Http::new(&node);
    assert_eq!(http.get("/health"), (200, json!({"status": "ok"})));
    assert_eq!(http.get("/ready"), (200, json!({"status": "ready"})));
    let (status, info) = http.get("/api/v1/broker");
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["native_addr"], node.addr.as_str());
    assert_eq!(
        info["http_addr"],
        node.http_addr.as_deref().unwrap_or_default()
    );
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["broker"], "broker-a");
    assert!(
        info["store"]["disk_total_bytes"].as_u64() > Some(0),
        "{info}"
    );
    assert_error(http.get("/api/v1/nothing-here"), 404, 2, "unsupported_api");
}

#[test]
fn topics_create_list_describe_delete_and_errors() {
    let node = Node::start(&[]);
    let http = Http::new(&node);
    let (status, topic) = http.post("/api/v1/topics", r#"{"name": "orders", "queues": 2}"#);
    assert_eq!(status, 201, "{topic}");
    assert_eq!(topic["name"], "orders");
    assert_eq!(topic["queue_count"], 2);
    assert_eq!(
        topic["queues"][1],
        json!({"queue_id": 1, "min_offset": 0, "max_offset": 0, "rate": 0.0})
    );
    // The native side sees the same topic table.
    let listed = node.client_command(&["topic", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("orders"));

    assert_error(
        http.post("/api/v1/topics", r#"{"name": "orders"}"#),
        409,
        11,
        "topic_already_exists",
    );
    assert_error(
        http.post("/api/v1/topics", r#"{"name": "bad name!"}"#),
        400,
        12,
        "invalid_topic_name",
    );
    assert_error(
        http.post("/api/v1/topics", r#"{"name": "q", "queues": 100000}"#),
        400,
        5,
        "invalid_argument",
    );
    assert_error(
        http.post("/api/v1/topics", "{not json"),
        400,
        4,
        "malformed_request",
    );

    let (status, created) = http.post("/api/v1/topics", r#"{"name": "defaults"}"#);
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["queue_count"], 4, "the broker's default_queues");
    let (status, list) = http.get("/api/v1/topics");
    assert_eq!(status, 200);
    let names: Vec<&str> = list["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["defaults", "orders"]);

    let (status, described) = http.get("/api/v1/topics/orders");
    assert_eq!(status, 200);
    assert_eq!(described, topic);
    assert_error(http.get("/api/v1/topics/nope"), 404, 10, "topic_not_found");

    assert_eq!(http.delete("/api/v1/topics/orders"), (204, Value::Null));
    assert_error(
        http.delete("/api/v1/topics/orders"),
        404,
        10,
        "topic_not_found",
    );
    assert_error(
        http.get("/api/v1/topics/orders"),
        404,
        10,
        "topic_not_found",
    );
}

#[test]
fn groups_describe_and_reset_and_messages_by_id_and_key() {
    let node = Node::start(&[]);
    let http = Http::new(&node);
    let (status, _) = http.post("/api/v1/topics", r#"{"name": "pay", "queues": 1}"#);
    assert_eq!(status, 201);
    let id = node
        .ok(&[
            "produce", "pay", "--key", "order-7", "--tag", "eu", "--body", "hello",
        ])
        .trim()
        .to_owned();
    node.cli_with_stdin(&["produce", "pay"], Some(b"a\nb\nc\n"));

    let (status, message) = http.get(&format!("/api/v1/messages/{id}"));
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["id"], id.as_str());
    assert_eq!(message["topic"], "pay");
    assert_eq!(message["key"], "order-7");
    assert_eq!(message["tag"], "eu");
    assert_eq!(message["body"], "hello");
    assert_eq!(message["queue_offset"], 0);
    let (status, found) = http.get("/api/v1/messages?topic=pay&key=order-7");
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(found["messages"][0]["id"], id.as_str());
    assert_error(
        http.get("/api/v1/messages?topic=pay&key=nobody"),
        404,
        22,
        "message_not_found",
    );
    assert_error(
        http.get("/api/v1/messages?topic=pay"),
        400,
        5,
        "invalid_argument",
    );
    assert_error(http.get("/api/v1/messages/XYZ"), 400, 5, "invalid_argument");

    // A group that consumed two of the four messages, then left.
    node.ok(&[
        "consume", "pay", "--group", "billing", "--from", "earliest", "-n", "2",
    ]);
    let (status, groups) = http.get("/api/v1/groups");
    assert_eq!(status, 200);
    assert_eq!(
        groups,
        json!({"total": 1, "groups": ["billing"], "modes": {"billing": ["clustering"]}})
    );
    let (status, group) = http.get("/api/v1/groups/billing");
    assert_eq!(status, 200, "{group}");
    assert_eq!(group["members"], json!([]));
    assert_eq!(group["modes"], json!(["clustering"]));
    assert_eq!(group["total_lag"], 2, "{group}");
    assert_eq!(
        group["queues"][0],
        json!({"topic": "pay", "queue_id": 0, "mode": "clustering", "min_offset": 0,
               "max_offset": 4, "committed_offset": 2, "lag": 2, "owner": null})
    );
    assert_error(
        http.get("/api/v1/groups/nobody"),
        404,
        20,
        "group_not_found",
    );

    let (status, reset) = http.post(
        "/api/v1/groups/billing/reset",
        r#"{"topic": "pay", "to": "earliest"}"#,
    );
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["offsets"], json!([{"queue_id": 0, "offset": 0}]));
    assert_eq!(http.get("/api/v1/groups/billing").1["total_lag"], 4);
    let (status, reset) = http.post(
        "/api/v1/groups/billing/reset",
        r#"{"topic": "pay", "to": "2100-01-01T00:00:00Z"}"#,
    );
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["offsets"], json!([{"queue_id": 0, "offset": 4}]));
    assert_eq!(http.get("/api/v1/groups/billing").1["total_lag"], 0);
    assert_error(
        http.post(
            "/api/v1/groups/billing/reset",
            r#"{"topic": "pay", "to": "soon"}"#,
        ),
        400,
        5,
        "invalid_argument",
    );
    assert_error(
        http.post(
            "/api/v1/groups/billing/reset",
            r#"{"topic": "nope", "to": "latest"}"#,
        ),
        404,
        10,
        "topic_not_found",
    );
    // The CLI (native protocol) sees the reset.
    let described = node.ok(&["group", "describe", "billing"]);
    assert!(described.contains("pay"), "{described}");
}
