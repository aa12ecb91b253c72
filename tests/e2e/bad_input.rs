//! Hostile and broken input on the native port: the broker answers or closes that one
//! connection, keeps its memory bounded, and keeps serving everyone else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rand::RngCore;

use crate::harness::{Node, rss_kib};

fn connect(node: &Node) -> TcpStream {
    let stream = TcpStream::connect(&node.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
}

/// Reads until the server closes the connection (or the timeout), returning what it sent.
fn drain(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[test]
fn garbage_truncated_frames_and_huge_lengths_do_not_hurt_other_clients() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "steady", "--queues", "2"]);
    let mut rng = rand::rng();

    for round in 0..20 {
        // Random bytes.
        let mut garbage = vec![0u8; 64 + round * 97];
        rng.fill_bytes(&mut garbage);
        let mut s = connect(&node);
        let _ = s.write_all(&garbage);
        drop(s);

        // A 4 GiB length prefix followed by some bytes: refused before allocating.
        let mut s = connect(&node);
        let _ = s.write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 1, 0, 0, 0, 0, 0, 7]);
        let _ = drain(&mut s);

        // A frame cut short, then the client disappears.
        let mut s = connect(&node);
        let _ = s.write_all(&[0, 0, 0, 100, 0, 1, 0, 0, 0, 0, 0, 9, 0, 0]);
        drop(s);

        // A well-framed request with an unknown api key gets an error response.
        let mut s = connect(&node);
        let frame = [
            0u8, 0, 0, 16, 0x7F, 0x7F, 0, 0, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        s.write_all(&frame).expect("write");
        let mut header = [0u8; 20];
        s.read_exact(&mut header).expect("an error response");
        assert_eq!(
            &header[8..12],
            &[0, 0, 0, 42],
            "response matched by request id"
        );
        let code = u16::from_be_bytes([header[14], header[15]]);
        assert_eq!(code, 2, "unsupported_api");

        // Meanwhile a normal client works.
        if round % 5 == 0 {
            let body = format!("ok-{round}\n");
            let out = node.cli_with_stdin(&["produce", "steady"], Some(body.as_bytes()));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let out = node.ok(&[
        "consume",
        "steady",
        "--group",
        "g",
        "--from",
        "earliest",
        "--count",
        "4",
        "--idle-timeout",
        "5s",
    ]);
    assert_eq!(out.lines().count(), 4);
    let rss = rss_kib(node.pid());
    assert!(rss < 256 * 1024, "broker RSS {rss} KiB after hostile input");
}
