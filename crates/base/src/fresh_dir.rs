//! A directory a program is about to fill for the first time, put back as
//! it was found if the program gives up before it is done.
//!
//! A daemon's first start creates its data dir, keys and database; if the
//! start then fails (a port in use, a refused setting), the half-made dir
//! would look like an existing installation on the next try. A [`FreshDir`]
//! taken before anything is written removes what was created, when it is
//! dropped without [`FreshDir::keep`]. A dir that held anything is never
//! touched.

use std::path::{Path, PathBuf};

/// What was at the path before the first write.
#[derive(Debug)]
enum Found {
    /// Nothing: this directory (the outermost missing one of the path) is
    /// created by us and removed whole on failure.
    Missing(PathBuf),
    /// An empty directory (as systemd's `StateDirectory=` or a container
    /// volume makes): its entries are removed on failure, the dir stays.
    Empty(PathBuf),
    /// A directory with entries, or anything else: left alone.
    InUse,
}

/// See the module documentation.
#[derive(Debug)]
#[must_use = "dropping it at once would undo nothing useful"]
pub struct FreshDir {
    found: Found,
}

impl FreshDir {
    /// Looks at `dir` before anything is written to it.
    pub fn inspect(dir: &Path) -> FreshDir {
        let found = match std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
            Ok(true) => Found::Empty(dir.to_path_buf()),
            Ok(false) => Found::InUse,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // The outermost ancestor that does not exist yet.
                let mut top = dir.to_path_buf();
                while let Some(parent) = top.parent() {
                    if parent.as_os_str().is_empty() || parent.exists() {
                        break;
                    }
                    top = parent.to_path_buf();
                }
                Found::Missing(top)
            }
            Err(_) => Found::InUse,
        };
        FreshDir { found }
    }

    /// Whether the dir was missing or empty.
    pub fn is_fresh(&self) -> bool {
        !matches!(self.found, Found::InUse)
    }

    /// The work succeeded: keep everything.
    pub fn keep(mut self) {
        self.found = Found::InUse;
    }

    /// Removes what was created. Best effort: this runs on a failure path.
    fn undo(&self) {
        match &self.found {
            Found::Missing(top) => {
                let _ = std::fs::remove_dir_all(top);
            }
            Found::Empty(dir) => {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    return;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let _ = match entry.file_type() {
                        Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                        _ => std::fs::remove_file(&path),
                    };
                }
            }
            Found::InUse => {}
        }
    }
}

impl Drop for FreshDir {
    fn drop(&mut self) {
        self.undo();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_dir_is_removed_with_its_new_parents() {
        let root = tempdir();
        let dir = root.join("a/b/data");
        let fresh = FreshDir::inspect(&dir);
        assert!(fresh.is_fresh());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key"), b"x").unwrap();
        drop(fresh);
        assert!(!root.join("a").exists());
        assert!(root.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_empty_dir_is_emptied_and_a_used_one_left_alone() {
        let root = tempdir();
        let fresh = FreshDir::inspect(&root);
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("key"), b"x").unwrap();
        drop(fresh);
        assert!(root.is_dir());
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);

        std::fs::write(root.join("journal"), b"x").unwrap();
        let used = FreshDir::inspect(&root);
        assert!(!used.is_fresh());
        std::fs::write(root.join("key"), b"x").unwrap();
        drop(used);
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 2);

        let kept = FreshDir::inspect(&root.join("new"));
        std::fs::create_dir(root.join("new")).unwrap();
        kept.keep();
        assert!(root.join("new").is_dir());
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "fresh-dir-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }
}
