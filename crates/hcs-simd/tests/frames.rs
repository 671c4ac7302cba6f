//! Bad input on the wire: random bytes, a truncated frame, an oversized length, a wrong
//! version or magic, frames out of order, and a property test over random byte streams. Each
//! bad connection is closed with a logged reason; a well-behaved client with a running system
//! keeps being served throughout, and the service's accounting returns to that client alone.
#![cfg(unix)]

mod common;

use common::Daemon;
use hcs::{System, Timeouts};
use hcs_simd::protocol::{
    encode, Call, ClientFrame, Decoder, ServerFrame, MAGIC, MAX_FRAME, PROTOCOL_VERSION,
};
use hcs_simd::ClientDriver;
use proptest::prelude::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"{"Owner":"frames","SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#;

fn hello(version: u32, magic: &str) -> Vec<u8> {
    encode(&ClientFrame::Hello {
        magic: magic.into(),
        version,
    })
    .expect("encode")
}

fn call_frame() -> Vec<u8> {
    encode(&ClientFrame::Call {
        id: 1,
        call: Call::Stats,
    })
    .expect("encode")
}

/// Sends `bytes` on a fresh raw connection (then, with `eof`, shuts its write side), reads
/// until the service closes it, and returns the frames it sent.
fn send_raw(daemon: &Daemon, bytes: &[u8], eof: bool) -> Vec<ServerFrame> {
    let mut s = UnixStream::connect(&daemon.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    // The service may close before everything is written (oversized prefix): that is fine.
    let _ = s.write_all(bytes);
    if eof {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the service did not close the connection: {e}"),
        }
    }
    let mut d = Decoder::new();
    d.push(&got);
    let mut frames = Vec::new();
    while let Some(f) = d
        .next_frame::<ServerFrame>()
        .expect("the service sends valid frames")
    {
        frames.push(f);
    }
    frames
}

struct Bystander {
    client: Arc<ClientDriver>,
    system: System,
}

impl Bystander {
    fn new(daemon: &Daemon) -> Self {
        let client = daemon.client();
        let system = System::create_with(
            client.clone(),
            "bystander",
            CONFIG,
            Timeouts::uniform(Duration::from_secs(10)),
        )
        .expect("create");
        system.start().expect("start");
        Bystander { client, system }
    }
    /// Still served, and the only connection left once the bad ones are cleaned up.
    fn still_served(&self) {
        let props = self
            .system
            .properties_v3("{}")
            .expect("the bystander is still served");
        assert!(props.contains("Running"), "{props}");
        Daemon::wait_stats(&self.client, Duration::from_secs(5), |s| {
            s.connections == 1 && s.systems == 1 && s.live_systems == 1
        });
    }
}

fn wait_log(daemon: &Daemon, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log: {}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn each_kind_of_bad_frame_closes_only_its_connection_with_a_logged_reason() {
    let daemon = Daemon::start(&["--generation", "v2", "--sync"]);
    let b = Bystander::new(&daemon);

    // Random bytes: a small length, then a body that is not JSON.
    assert!(send_raw(
        &daemon,
        b"\x10\x00\x00\x00\x93\x11garbage!\xff\xfe\x00\x01abc",
        false
    )
    .is_empty());
    wait_log(&daemon, "malformed frame");
    b.still_served();

    // An oversized length is refused from its prefix alone, before any body.
    let mut big = ((MAX_FRAME as u32) + 1).to_le_bytes().to_vec();
    big.extend_from_slice(&[b'{'; 16]);
    assert!(send_raw(&daemon, &big, false).is_empty());
    wait_log(&daemon, "oversized frame");
    b.still_served();

    // A truncated frame: a good handshake, then half a call and the end of the stream.
    let mut bytes = hello(PROTOCOL_VERSION, MAGIC);
    let call = call_frame();
    bytes.extend_from_slice(&call[..call.len() / 2]);
    let frames = send_raw(&daemon, &bytes, true);
    assert!(
        matches!(frames.as_slice(), [ServerFrame::Welcome { .. }]),
        "{frames:?}"
    );
    wait_log(&daemon, "truncated frame");
    b.still_served();

    // A wrong version and a wrong magic are refused, with the reason on the wire.
    for (version, magic) in [(PROTOCOL_VERSION + 1, MAGIC), (PROTOCOL_VERSION, "not-hcs")] {
        let frames = send_raw(&daemon, &hello(version, magic), false);
        assert!(
            matches!(frames.as_slice(), [ServerFrame::Refused { reason }] if reason.contains("handshake refused")),
            "{frames:?}"
        );
    }
    wait_log(&daemon, "handshake refused");
    b.still_served();

    // Out of order: a call before the handshake, and a second handshake.
    assert!(send_raw(&daemon, &call_frame(), false).is_empty());
    wait_log(&daemon, "a call before the handshake");
    let mut twice = hello(PROTOCOL_VERSION, MAGIC);
    twice.extend(hello(PROTOCOL_VERSION, MAGIC));
    let frames = send_raw(&daemon, &twice, false);
    assert!(
        matches!(frames.as_slice(), [ServerFrame::Welcome { .. }]),
        "{frames:?}"
    );
    wait_log(&daemon, "a second handshake");
    b.still_served();

    // A well-formed frame that is not a client frame (a server frame sent back).
    let mut bytes = hello(PROTOCOL_VERSION, MAGIC);
    bytes.extend(encode(&ServerFrame::Goodbye { reason: "x".into() }).expect("encode"));
    send_raw(&daemon, &bytes, false);
    b.still_served();

    // A client that goes away holding a system: its handle and registration go, the system
    // (not terminate-on-last-close) stays for others to open.
    let victim = daemon.client();
    let sys = System::create_with(
        victim.clone(),
        "victim",
        CONFIG,
        Timeouts::uniform(Duration::from_secs(10)),
    )
    .expect("create");
    assert_eq!(victim.stats().expect("stats").mine_systems, 1);
    victim.disconnect();
    Daemon::wait_stats(&b.client, Duration::from_secs(5), |s| {
        s.connections == 1 && s.systems == 1 && s.callbacks == 1 && s.live_systems == 2
    });
    drop(sys);
    let v = System::open(b.client.clone(), "victim").expect("open victim");
    v.terminate().expect("terminate");
    v.wait_timeout(Duration::from_secs(10)).expect("wait");
    v.close().expect("close");
    b.still_served();
}

/// Whatever bytes arrive, with or without a good handshake first, the service answers at most
/// a welcome, a refusal or replies, closes that connection, and keeps serving the others. (A
/// hand-driven proptest runner, so that the one service it uses is a local, killed at the end.)
#[test]
fn random_byte_streams_never_hurt_the_service() {
    let daemon = Daemon::start(&["--generation", "v2", "--sync"]);
    let b = Bystander::new(&daemon);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (proptest::collection::vec(any::<u8>(), 0..600), any::<bool>());
    runner
        .run(&strategy, |(bytes, handshake)| {
            let mut stream = if handshake {
                hello(PROTOCOL_VERSION, MAGIC)
            } else {
                Vec::new()
            };
            stream.extend_from_slice(&bytes);
            let frames = send_raw(&daemon, &stream, true);
            for f in &frames {
                prop_assert!(
                    matches!(
                        f,
                        ServerFrame::Welcome { .. } | ServerFrame::Refused { .. } | ServerFrame::Reply { .. }
                    ),
                    "unexpected frame {f:?}"
                );
            }
            b.still_served();
            Ok(())
        })
        .expect("the service survives every stream");
}

proptest! {
    /// The frame decoder, alone: any bytes in any split give frames or a clean error, never a
    /// panic; a stream of valid frames split anywhere decodes to the same frames.
    #[test]
    fn the_decoder_takes_any_bytes_in_any_split(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        splits in proptest::collection::vec(1usize..64, 1..16),
        ids in proptest::collection::vec(any::<u64>(), 0..8),
    ) {
        let mut d = Decoder::new();
        let mut rest: &[u8] = &bytes;
        'feed: for step in splits.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at((*step).min(rest.len()));
            d.push(now);
            rest = later;
            loop {
                match d.next_frame::<ClientFrame>() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
        let frames: Vec<ClientFrame> = ids
            .iter()
            .map(|&id| ClientFrame::Call { id, call: Call::Stats })
            .collect();
        let encoded: Vec<u8> = frames.iter().flat_map(|f| encode(f).expect("encode")).collect();
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let mut rest: &[u8] = &encoded;
        for step in splits.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at((*step).min(rest.len()));
            d.push(now);
            rest = later;
            while let Some(f) = d.next_frame::<ClientFrame>().expect("valid frames") {
                out.push(f);
            }
        }
        prop_assert_eq!(out, frames);
        prop_assert!(d.finish().is_ok());
    }
}

/// A client that attaches descriptors to its bytes (clients never need to) is still read to
/// the end. A Unix stream read stops right after bytes that carried descriptors; an
/// edge-triggered loop that took such a short read for "everything queued" left the rest
/// unread until the client wrote again, so a handshake sent that way hung.
#[test]
fn bytes_that_carry_descriptors_are_still_read_to_the_end() {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::io::IoSlice;
    use std::os::fd::AsFd;

    let daemon = Daemon::start(&[]);
    let bytes = [hello(PROTOCOL_VERSION, MAGIC), call_frame()].concat();
    let (first, rest) = bytes.split_at(3);
    for round in 0..10 {
        let mut s = UnixStream::connect(&daemon.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        let spare = std::fs::File::open("/dev/null").expect("open /dev/null");
        let fds = [spare.as_fd()];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        // Both parts are queued before the service reads: the second right after the first.
        sendmsg(&s, &[IoSlice::new(first)], &mut control, SendFlags::empty())
            .expect("send with a descriptor");
        s.write_all(rest).expect("send the rest");
        let mut d = Decoder::new();
        let mut frames = Vec::new();
        let mut buf = [0u8; 4096];
        while frames.len() < 2 {
            match s.read(&mut buf) {
                Ok(0) => panic!("round {round}: the service closed the connection: {frames:?}"),
                Ok(n) => d.push(&buf[..n]),
                Err(e) => panic!("round {round}: no answer to a handshake and a call sent with a descriptor ({e}); got {frames:?}"),
            }
            while let Some(f) = d.next_frame::<ServerFrame>().expect("valid frames") {
                frames.push(f);
            }
        }
        assert!(matches!(frames[0], ServerFrame::Welcome { .. }), "{frames:?}");
        assert!(
            matches!(frames[1], ServerFrame::Reply { id: 1, .. }),
            "{frames:?}"
        );
    }
}
