//! From an OCI runtime spec (`config.json`, or an exec's `Process` spec) to HCS documents:
//! the compute-system document and the `ProcessParameters` of a process.
//!
//! Only what the mapping needs is read, field by field from a `serde_json::Value`, so an
//! unexpected shape is a clear error naming the field, never a panic.

use hcs_schema::cmdline::{join_command_line, JoinError};
use hcs_schema::{ComputeSystem, ProcessParameters};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The owner recorded in every compute system this shim creates.
pub const OWNER: &str = "containerd-shim-hcs-v1";

/// Largest `config.json` (or exec spec) accepted.
pub const MAX_SPEC: u64 = 4 * 1024 * 1024;

/// The process part of an OCI spec, as the shim uses it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessSpec {
    /// `args`: the program and its arguments (at least one).
    pub args: Vec<String>,
    /// `env`: `KEY=VALUE` pairs, in order.
    pub env: Vec<(String, String)>,
    /// `cwd` (default `/`).
    pub cwd: String,
    /// `terminal`.
    pub terminal: bool,
    /// `consoleSize` as (width, height), when given.
    pub console_size: Option<(u16, u16)>,
    /// `user.username`, when given (Windows containers name the user).
    pub user: Option<String>,
}

/// What `Create` needs from a bundle's `config.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BundleSpec {
    /// The init process.
    pub process: ProcessSpec,
    /// `root.path`, resolved against the bundle directory.
    pub root: Option<PathBuf>,
    /// `hostname`, when given.
    pub hostname: Option<String>,
}

/// Why a spec was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub String);

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(msg: impl Into<String>) -> SpecError {
    SpecError(msg.into())
}

/// Reads and parses `bundle/config.json`.
pub fn load_bundle(bundle: &Path) -> Result<BundleSpec, SpecError> {
    use std::io::Read;
    let path = bundle.join("config.json");
    let file = std::fs::File::open(&path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    let mut text = Vec::new();
    file.take(MAX_SPEC + 1)
        .read_to_end(&mut text)
        .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_SPEC {
        return Err(err(format!("{} is larger than 4 MiB", path.display())));
    }
    parse_bundle(&text, bundle)
}

/// Parses a `config.json` document; `root.path` is resolved against `bundle`.
pub fn parse_bundle(text: &[u8], bundle: &Path) -> Result<BundleSpec, SpecError> {
    let v: Value =
        serde_json::from_slice(text).map_err(|e| err(format!("config.json is not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| err("config.json must be a JSON object"))?;
    let process = match obj.get("process") {
        Some(p) => parse_process_value(p, "process")?,
        None => return Err(err("config.json has no `process`")),
    };
    let root = match obj.get("root") {
        None | Some(Value::Null) => None,
        Some(Value::Object(r)) => match r.get("path") {
            Some(Value::String(p)) if !p.is_empty() => Some(bundle.join(p)),
            None | Some(Value::Null) => None,
            Some(_) => return Err(err("`root.path` must be a non-empty string")),
        },
        Some(_) => return Err(err("`root` must be an object")),
    };
    let hostname = match obj.get("hostname") {
        None | Some(Value::Null) => None,
        Some(Value::String(h)) => Some(h.clone()),
        Some(_) => return Err(err("`hostname` must be a string")),
    };
    Ok(BundleSpec {
        process,
        root,
        hostname,
    })
}

/// Parses an exec's process spec (the JSON carried in `ExecProcessRequest.spec`).
pub fn parse_process(text: &[u8]) -> Result<ProcessSpec, SpecError> {
    if text.len() as u64 > MAX_SPEC {
        return Err(err("the exec process spec is larger than 4 MiB"));
    }
    let v: Value = serde_json::from_slice(text)
        .map_err(|e| err(format!("the exec process spec is not valid JSON: {e}")))?;
    parse_process_value(&v, "exec spec")
}

fn parse_process_value(v: &Value, what: &str) -> Result<ProcessSpec, SpecError> {
    let obj = v
        .as_object()
        .ok_or_else(|| err(format!("`{what}` must be a JSON object")))?;
    let strings = |key: &str| -> Result<Vec<String>, SpecError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| err(format!("`{what}.{key}` must be an array of strings"))),
            Some(_) => Err(err(format!("`{what}.{key}` must be an array of strings"))),
        }
    };
    let args = strings("args")?;
    if args.is_empty() {
        // Windows specs may carry `commandLine` instead of `args`.
        if let Some(Value::String(line)) = obj.get("commandLine") {
            if !line.trim().is_empty() {
                return Err(err(format!(
                    "`{what}.commandLine` is not supported; give `{what}.args`"
                )));
            }
        }
        return Err(err(format!("`{what}.args` is empty: nothing to run")));
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(err(format!("`{what}.args` contains a NUL character")));
    }
    let mut env = Vec::new();
    for entry in strings("env")? {
        match entry.split_once('=') {
            Some((k, val)) if !k.is_empty() && !k.contains('\0') && !val.contains('\0') => {
                env.push((k.to_owned(), val.to_owned()))
            }
            _ => return Err(err(format!("`{what}.env` entry {entry:?} is not KEY=VALUE"))),
        }
    }
    let cwd = match obj.get("cwd") {
        None | Some(Value::Null) => "/".to_owned(),
        Some(Value::String(c)) if c.is_empty() => "/".to_owned(),
        Some(Value::String(c)) if !c.contains('\0') => c.clone(),
        Some(_) => return Err(err(format!("`{what}.cwd` must be a string"))),
    };
    let terminal = match obj.get("terminal") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(err(format!("`{what}.terminal` must be a boolean"))),
    };
    let console_size = match obj.get("consoleSize") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => {
            let dim = |k: &str| {
                c.get(k)
                    .and_then(Value::as_u64)
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| err(format!("`{what}.consoleSize.{k}` must be an integer 0..65535")))
            };
            Some((dim("width")?, dim("height")?))
        }
        Some(_) => return Err(err(format!("`{what}.consoleSize` must be an object"))),
    };
    let user = obj
        .get("user")
        .and_then(|u| u.get("username"))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    Ok(ProcessSpec {
        args,
        env,
        cwd,
        terminal,
        console_size,
        user,
    })
}

/// The compute-system document for a container: a process-isolated container owned by this shim
/// (schema 2.1, terminated when its last handle closes).
pub fn system_document(_bundle: &BundleSpec) -> String {
    let doc = ComputeSystem::process_isolated_container(OWNER);
    serde_json::to_string(&doc).unwrap_or_else(|_| "{}".to_owned())
}

/// How a process spec becomes a command line for the driver in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// HCS proper (Windows): the arguments joined with the Windows quoting rules.
    Direct,
    /// The simulator, as root: the shim binary `helper` re-executes itself as
    /// `helper __hcs-exec ROOT CWD KEY=VALUE… -- ARGS…`, which chroots into `ROOT` (its own
    /// process), changes to `CWD`, sets exactly the spec's environment and execs `ARGS`.
    #[cfg_attr(not(unix), allow(dead_code))] // made only where chroot exists
    Chroot {
        /// The shim binary.
        helper: PathBuf,
        /// The container's root filesystem.
        root: PathBuf,
    },
    /// The simulator, not root: no chroot is possible; the command runs on the host, in
    /// `root/cwd` when that directory exists.
    HostInRoot {
        /// The container's root filesystem.
        root: PathBuf,
    },
}

/// The `ProcessParameters` for `spec` with the streams asked for; an error when the arguments
/// have no Windows command-line form (see [`join_command_line`]).
pub fn process_parameters(
    spec: &ProcessSpec,
    launch: &Launch,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<ProcessParameters, JoinError> {
    let environment: BTreeMap<String, String> = spec.env.iter().cloned().collect();
    let (command_line, working_directory) = match launch {
        Launch::Direct => (join_command_line(&spec.args)?, Some(spec.cwd.clone())),
        Launch::Chroot { helper, root } => {
            let mut argv = vec![
                helper.to_string_lossy().into_owned(),
                HELPER_ARG.to_owned(),
                root.to_string_lossy().into_owned(),
                spec.cwd.clone(),
            ];
            argv.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
            argv.push("--".to_owned());
            argv.extend(spec.args.iter().cloned());
            (join_command_line(&argv)?, None)
        }
        Launch::HostInRoot { root } => {
            let dir = root.join(spec.cwd.trim_start_matches('/'));
            let dir = if dir.is_dir() { dir } else { root.clone() };
            (
                join_command_line(&spec.args)?,
                Some(dir.to_string_lossy().into_owned()),
            )
        }
    };
    Ok(ProcessParameters {
        command_line: Some(command_line),
        user: spec.user.clone(),
        working_directory,
        environment: Some(environment),
        emulate_console: spec.terminal.then_some(true),
        console_size: if spec.terminal {
            spec.console_size.map(|(w, h)| [h, w])
        } else {
            None
        },
        create_std_in_pipe: Some(stdin),
        create_std_out_pipe: Some(stdout),
        create_std_err_pipe: Some(stderr && !spec.terminal),
        ..Default::default()
    })
}

/// The first argument that makes the shim binary act as the chroot helper.
pub const HELPER_ARG: &str = "__hcs-exec";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_command_lines_split_back_into_the_same_arguments() {
        let cases: Vec<Vec<&str>> = vec![
            vec!["sh", "-c", "echo hi; exit 3"],
            vec!["a\\b", "c d\\", "\"q\"", "", "x\\\\\"y"],
            vec!["tab\there", "new\nline"],
        ];
        for args in cases {
            let line = join_command_line(&args).unwrap();
            assert_eq!(hcs_sim::cmdline::split_command_line(&line), args, "line {line:?}");
        }
    }

    #[test]
    fn a_program_name_with_a_quote_has_no_command_line() {
        let spec = ProcessSpec {
            args: vec!["say\"hi".to_owned(), "x".to_owned()],
            ..Default::default()
        };
        assert!(matches!(
            process_parameters(&spec, &Launch::Direct, false, true, true),
            Err(JoinError::QuoteInProgram(_))
        ));
    }

    #[test]
    fn a_bundle_config_maps_to_args_env_cwd_root_and_terminal() {
        let text = br#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
            "process":{"args":["/bin/sh","-c","echo hi"],"env":["PATH=/bin","A=b=c"],"cwd":"/tmp",
            "terminal":true,"consoleSize":{"width":80,"height":24},"user":{"uid":0,"gid":0}}}"#;
        let b = parse_bundle(text, Path::new("/b")).unwrap();
        assert_eq!(b.root.as_deref(), Some(Path::new("/b/rootfs")));
        assert_eq!(b.process.args, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(b.process.env[1], ("A".to_owned(), "b=c".to_owned()));
        assert_eq!(b.process.cwd, "/tmp");
        assert!(b.process.terminal);
        let p = process_parameters(&b.process, &Launch::Direct, true, true, true).unwrap();
        assert_eq!(p.command_line.as_deref(), Some("/bin/sh -c \"echo hi\""));
        assert_eq!(p.emulate_console, Some(true));
        assert_eq!(p.console_size, Some([24, 80]));
        assert_eq!(
            p.create_std_err_pipe,
            Some(false),
            "a terminal has no separate stderr"
        );
        assert_eq!(p.working_directory.as_deref(), Some("/tmp"));
        assert_eq!(p.environment.unwrap()["PATH"], "/bin");
    }

    #[test]
    fn the_chroot_launch_wraps_the_command_in_the_helper() {
        let spec = ProcessSpec {
            args: vec!["echo".into(), "a b".into()],
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/".into(),
            ..Default::default()
        };
        let launch = Launch::Chroot {
            helper: "/x/shim".into(),
            root: "/r".into(),
        };
        let p = process_parameters(&spec, &launch, false, true, true).unwrap();
        let argv = hcs_sim::cmdline::split_command_line(p.command_line.as_deref().unwrap());
        assert_eq!(
            argv,
            ["/x/shim", HELPER_ARG, "/r", "/", "PATH=/bin", "--", "echo", "a b"]
        );
    }

    #[test]
    fn bad_configs_are_clear_errors_not_panics() {
        for (text, needle) in [
            (&b"not json"[..], "not valid JSON"),
            (b"[]", "JSON object"),
            (b"{}", "no `process`"),
            (br#"{"process":{"args":[]}}"#, "nothing to run"),
            (br#"{"process":{"args":[1]}}"#, "array of strings"),
            (br#"{"process":{"args":["a"],"env":["NOEQUALS"]}}"#, "KEY=VALUE"),
            (br#"{"process":{"args":["a"],"cwd":5}}"#, "cwd"),
            (br#"{"process":{"args":["a"],"terminal":"yes"}}"#, "terminal"),
            (
                br#"{"process":{"args":["a"],"consoleSize":{"width":-1,"height":2}}}"#,
                "consoleSize",
            ),
            (br#"{"process":{"args":["a"]},"root":{"path":3}}"#, "root.path"),
        ] {
            let e = parse_bundle(text, Path::new("/b")).unwrap_err();
            assert!(e.0.contains(needle), "{e} should mention {needle}");
        }
        assert!(parse_process(b"{\"args\":[\"ls\"]}").is_ok());
        assert!(parse_process(b"{").is_err());
    }
}
