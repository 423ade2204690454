//! What a volume's data takes on the node, and what the base dir's
//! filesystem has free.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bytes allocated to the files under `dir` (as `du` counts them: blocks,
/// so sparse files count what they hold), not crossing into other
/// filesystems mounted below it. A missing `dir` takes nothing.
pub fn allocated(dir: &Path) -> std::io::Result<u64> {
    let top = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let device = top.dev();
    let mut total = top.blocks() * 512;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            // Files come and go while an app runs.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != device {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// Free bytes of the filesystem holding `path`, as an unprivileged user
/// may use them (blocks reserved for root are not counted).
pub fn free(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed out-struct.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_files_hold_not_their_apparent_size() {
        let dir = tempfile::tempdir().unwrap();
        let before = allocated(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/data"), vec![1u8; 1 << 20]).unwrap();
        let sparse = std::fs::File::create(dir.path().join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        let after = allocated(dir.path()).unwrap();
        assert!(after - before >= 1 << 20, "{before} -> {after}");
        assert!(
            after - before < 8 << 20,
            "a sparse GiB counts as nothing: {before} -> {after}"
        );
    }

    #[test]
    fn a_missing_directory_takes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(allocated(&dir.path().join("gone")).unwrap(), 0);
    }

    #[test]
    fn free_space_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free(dir.path()).unwrap() > 0);
        assert!(free(&dir.path().join("gone")).is_err());
    }
}
