//! Whole-file replacement that a crash cannot tear: write a temporary file, fsync it, rename it
//! over the target, fsync the directory. A reader sees the old file or the new one, never half.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `contents` atomically and durably.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    fs::create_dir_all(dir)?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    {
        let mut file = File::create(tmp)?;
        file.write_all(contents)?;
        // The data must be on disk before the rename makes it visible, or a crash could leave
        // a renamed but empty file.
        file.sync_all()?;
    }
    fs::rename(tmp, path)?;
    // The rename itself lives in the directory; without this a crash could undo it.
    File::open(dir)?.sync_all()
}

/// Reads `path`, or `None` when it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_reads_back() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config").join("x.json");
        assert_eq!(read_if_exists(&path)?, None);
        write_atomic(&path, b"one")?;
        write_atomic(&path, b"two")?;
        assert_eq!(read_if_exists(&path)?, Some(b"two".to_vec()));
        Ok(())
    }
}
