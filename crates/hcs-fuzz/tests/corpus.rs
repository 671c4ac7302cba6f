//! Replays the committed corpus of every fuzz target (`fuzz/corpus/<target>/`) and every input
//! that once crashed one (`fuzz/regressions/<target>/`) through the target's body, on stable and
//! without libFuzzer, so `cargo test --workspace` keeps them passing.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `dir`, sorted; none when the directory does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target` over every corpus and regression input; returns how many ran and the failures.
fn replay(name: &str, target: hcs_fuzz::Target) -> (usize, Vec<String>) {
    let mut ran = 0;
    let mut failures = Vec::new();
    for kind in ["corpus", "regressions"] {
        for path in inputs(&fuzz_dir().join(kind).join(name)) {
            let data = std::fs::read(&path).expect("a readable corpus file");
            ran += 1;
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    (ran, failures)
}

#[test]
fn every_target_passes_its_corpus_and_regressions() {
    let mut failures = Vec::new();
    for &(name, target) in hcs_fuzz::TARGETS {
        let (ran, failed) = replay(name, target);
        assert!(
            !inputs(&fuzz_dir().join("corpus").join(name)).is_empty(),
            "fuzz/corpus/{name}/ is missing or empty"
        );
        eprintln!("{name}: {ran} inputs, {} failed", failed.len());
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "inputs that fail their target: {failures:#?}"
    );
}

#[test]
fn every_cargo_fuzz_target_calls_the_body_of_the_same_name() {
    for &(name, _) in hcs_fuzz::TARGETS {
        let path = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            source.contains(&format!("hcs_fuzz::{name}(")),
            "{} does not call hcs_fuzz::{name}",
            path.display()
        );
    }
}

/// The `simd_frames` seeds, built from the protocol types of this build: each is a chunk size
/// (the target's first byte), then frames (whole, or cut or oversized on purpose).
#[cfg(unix)]
fn simd_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use hcs_simd::protocol::{
        encode, Call, CallResult, ClientFrame, Generation, ServerFrame, Value, MAGIC, MAX_FRAME,
        PROTOCOL_VERSION,
    };
    let hello = encode(&ClientFrame::Hello {
        magic: MAGIC.into(),
        version: PROTOCOL_VERSION,
    })
    .expect("encode");
    let create = encode(&ClientFrame::Call {
        id: 1,
        call: Call::Create {
            id: "demo".into(),
            configuration: r#"{"SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#.into(),
            ctx: 7,
        },
    })
    .expect("encode");
    let stats = encode(&ClientFrame::Call {
        id: 9,
        call: Call::Stats,
    })
    .expect("encode");
    let reply_err = encode(&ServerFrame::Reply {
        id: 4,
        result: CallResult::Err {
            code: 0x8007_0006,
            document: Some(r#"{"Error":-2147024890,"ErrorMessage":"The handle is invalid."}"#.into()),
        },
    })
    .expect("encode");
    let reply_process = encode(&ServerFrame::Reply {
        id: 4,
        result: CallResult::Ok {
            value: Value::Process {
                handle: Some(3),
                pid: 1,
                stdin: false,
                stdout: true,
                stderr: false,
            },
            document: None,
            pending: false,
        },
    })
    .expect("encode");
    let welcome = encode(&ServerFrame::Welcome {
        version: PROTOCOL_VERSION,
        generation: Generation::V2,
        pid: 42,
    })
    .expect("encode");
    let notify = encode(&ServerFrame::Notify {
        ctx: 7,
        kind: 1,
        status: 0,
        payload: Some(r#"{"Status":0,"ExitType":"ForcedExit"}"#.into()),
    })
    .expect("encode");
    let mut oversized = ((MAX_FRAME as u32) + 1).to_le_bytes().to_vec();
    oversized.extend_from_slice(&[0, 1, 2]);
    let seed = |step: u8, parts: &[&[u8]]| {
        let mut v = vec![step];
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    };
    vec![
        ("hello", seed(7, &[&hello])),
        ("hello_then_call", seed(3, &[&hello, &create])),
        ("oversized", seed(4, &[&oversized])),
        ("reply_err", seed(1, &[&reply_err])),
        ("reply_process", seed(11, &[&reply_process])),
        ("stats_call", seed(64, &[&stats])),
        ("truncated", seed(2, &[&hello[..hello.len() - 3]])),
        ("welcome_notify", seed(5, &[&welcome, &notify])),
    ]
}

/// The committed `simd_frames` seeds are the frames this build speaks (a protocol change that
/// left them stale would leave the fuzzer starting from bytes the decoder refuses at once).
/// `HCS_FUZZ_WRITE_SEEDS=1 cargo test -p hcs-fuzz --test corpus` rewrites them.
#[cfg(unix)]
#[test]
fn the_simd_frames_seeds_are_frames_of_this_protocol_version() {
    let dir = fuzz_dir().join("corpus").join("simd_frames");
    let write = std::env::var_os("HCS_FUZZ_WRITE_SEEDS").is_some();
    for (name, bytes) in simd_seeds() {
        let path = dir.join(name);
        if write {
            std::fs::write(&path, &bytes).expect("write a seed");
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            committed == bytes,
            "{} is not the frames of this protocol version; rewrite the seeds with HCS_FUZZ_WRITE_SEEDS=1 cargo test -p hcs-fuzz --test corpus",
            path.display()
        );
    }
}
