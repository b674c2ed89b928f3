//! Files and directories only the daemon's user can read.
//!
//! Keys and the journal are secrets: they are created with their final mode
//! (never chmod-ed after the fact, which leaves a window), and synced, so a
//! crash cannot leave a key that was reported written half on disk.

use std::path::Path;

/// Creates `path` with mode 0600 (failing if it exists), writes `bytes` and
/// syncs both the file and its directory.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Creates the data dir (mode 0700) if needed.
pub fn ensure_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}
