//! Mounting the root filesystem containerd hands over with an image (`CreateTaskRequest.rootfs`:
//! the snapshotter's mounts, e.g. a bind mount for `native` or an overlay) onto the bundle's
//! `root.path`, and unmounting it at delete. With `ctr run --rootfs DIR` the list is empty and
//! nothing is mounted.
//!
//! The mounts are made by `mount(8)` / `umount(8)` (util-linux), each bounded in time: no
//! `unsafe`, and no fork of this multi-threaded process outside `std::process::Command`.

use containerd_shim::protos::api::Mount;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one `mount`/`umount` may take.
const MOUNT_BOUND: Duration = Duration::from_secs(10);

/// Runs `cmd` to completion within [`MOUNT_BOUND`] (killed after it); its stderr on failure.
fn run(mut cmd: Command) -> Result<(), String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let deadline = Instant::now() + MOUNT_BOUND;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("{what}: {status}: {}", err.trim()));
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: did not finish within {MOUNT_BOUND:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

/// The `mount(8)` command for `m` onto `target`.
fn mount_command(m: &Mount, target: &Path) -> Command {
    let mut cmd = Command::new("mount");
    let bind = m.type_ == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
    if !bind && !m.type_.is_empty() {
        cmd.arg("-t").arg(&m.type_);
    }
    if !m.options.is_empty() {
        cmd.arg("-o").arg(m.options.join(","));
    }
    cmd.arg("--")
        .arg(if m.source.is_empty() { "none" } else { &m.source })
        .arg(target);
    cmd
}

/// Mounts `mounts` in order onto `target`; on a failure, what was mounted is unmounted again.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), String> {
    if mounts.is_empty() {
        return Ok(());
    }
    if !cfg!(target_os = "linux") {
        return Err("rootfs mounts are only supported on Linux".into());
    }
    std::fs::create_dir_all(target).map_err(|e| format!("create {}: {e}", target.display()))?;
    for m in mounts {
        if let Err(e) = run(mount_command(m, target)) {
            unmount_all(target);
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts everything mounted at or below `target` (`umount -R`; best effort, logged).
pub fn unmount_all(target: &Path) {
    let mut cmd = Command::new("umount");
    cmd.arg("-R").arg(target);
    if let Err(e) = run(cmd) {
        log::warn!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_bind_and_overlay_mounts_become_mount_commands() {
        let bind = Mount {
            type_: "bind".into(),
            source: "/snap/1/fs".into(),
            options: vec!["rbind".into(), "rw".into()],
            ..Default::default()
        };
        let c = format!("{:?}", mount_command(&bind, Path::new("/b/rootfs")));
        assert_eq!(c, r#""mount" "-o" "rbind,rw" "--" "/snap/1/fs" "/b/rootfs""#);
        let overlay = Mount {
            type_: "overlay".into(),
            source: "overlay".into(),
            options: vec!["lowerdir=/l".into(), "upperdir=/u".into(), "workdir=/w".into()],
            ..Default::default()
        };
        let c = format!("{:?}", mount_command(&overlay, Path::new("/r")));
        assert_eq!(
            c,
            r#""mount" "-t" "overlay" "-o" "lowerdir=/l,upperdir=/u,workdir=/w" "--" "overlay" "/r""#
        );
    }
}
