//! A tmpfs the full-disk tests mount on a directory (as root) and remount
//! larger later; unmounted (lazily, so even a busy mount goes) when
//! dropped, also when the test fails. Where mounting is impossible,
//! [`Tmpfs::mount`] says why and the test skips.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// `None` when mounting is not possible here (not root, no tmpfs).
    pub fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(path)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    pub fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "remounting {} failed",
            self.path.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
