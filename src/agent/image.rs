//! Size enforcement by a filesystem per volume (`image` mode): a volume is
//! a sparse file `<dir>.img` holding an ext4 or XFS filesystem of the
//! volume's size, attached to a loop device and mounted at its directory `<dir>`;
//! the container sees `<dir>/data`. A write past the size fails inside the
//! container with ENOSPC, and nothing else on the node's disk is touched.
//!
//! `data` exists only inside the mounted filesystem: after a reboot, until
//! the agent has mounted the image again, the kubelet finds no path to
//! mount and the pod waits; it never starts on the empty directory below.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::names::ImageFilesystem;
use crate::{Error, Result};

/// The directory the container sees, inside the volume's filesystem.
pub const DATA: &str = "data";

/// The image file of the volume whose directory is `dir`.
pub fn image_path(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".img");
    PathBuf::from(name)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes the volume: a sparse image of `size` bytes, a filesystem in it,
/// mounted at `dir`, with `data` inside. Each step is skipped when done
/// before, so a crash at any point is repaired by running it again.
pub fn create(dir: &Path, size: u64, filesystem: ImageFilesystem) -> Result<()> {
    let image = image_path(dir);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&image)
        .map_err(io(&image))?;
    if file.metadata().map_err(io(&image))?.len() < size {
        file.set_len(size).map_err(io(&image))?;
    }
    if filesystem_of(&image)?.is_none() {
        // No discard (the file is sparse already); ext4's inode tables are
        // initialised lazily by the kernel: the image stays sparse.
        match filesystem {
            ImageFilesystem::Ext4 => run(Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-m", "0", "-b", "4096"])
                .args(["-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1"])
                .arg(&image))?,
            ImageFilesystem::Xfs => run(Command::new("mkfs.xfs")
                .args(["-q", "-f", "-K"])
                .arg(&image))?,
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    ensure_mounted(dir)?;
    let data = dir.join(DATA);
    match std::fs::create_dir(&data) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io(&data)(e)),
        _ => Ok(()),
    }
}

/// The filesystem the image holds, by its superblock's magic: ext2/3/4
/// (`0xEF53` at byte 1080) or XFS (`XFSB` at byte 0); `None` if neither.
fn filesystem_of(image: &Path) -> Result<Option<ImageFilesystem>> {
    let mut file = File::open(image).map_err(io(image))?;
    let mut head = [0u8; 1082];
    match file.read_exact(&mut head) {
        Ok(()) if head[1080..1082] == [0x53, 0xEF] => Ok(Some(ImageFilesystem::Ext4)),
        Ok(()) if head[..4] == *b"XFSB" => Ok(Some(ImageFilesystem::Xfs)),
        Ok(()) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(io(image)(e)),
    }
}

/// Whether a filesystem is mounted at `dir` (it is on another device than
/// its parent).
pub fn is_mounted(dir: &Path) -> Result<bool> {
    let parent = dir.parent().unwrap_or(dir);
    let own = std::fs::metadata(dir).map_err(io(dir))?;
    let above = std::fs::metadata(parent).map_err(io(parent))?;
    Ok(own.dev() != above.dev())
}

/// Mounts the volume's image at `dir` unless it is mounted already.
pub fn ensure_mounted(dir: &Path) -> Result<()> {
    if is_mounted(dir)? {
        return Ok(());
    }
    let image = image_path(dir);
    let kind = match filesystem_of(&image)? {
        Some(ImageFilesystem::Xfs) => c"xfs",
        _ => c"ext4",
    };
    let (device, _held_until_mounted) = attach(&image)?;
    let source = cstring(&device)?;
    let target = cstring(dir)?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        detach(&device);
        return Err(io(dir)(error));
    }
    tracing::info!(image = %image.display(), device = %device.display(), dir = %dir.display(), "volume mounted");
    Ok(())
}

/// Unmounts `dir` if a filesystem is mounted there (its loop device goes
/// with it: attached with autoclear).
pub fn unmount(dir: &Path) -> Result<()> {
    if !dir.exists() || !is_mounted(dir)? {
        return Ok(());
    }
    let target = cstring(dir)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), 0) } != 0 {
        return Err(io(dir)(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Grows the volume mounted at `dir` to `size` bytes: the image file,
/// the loop device's capacity, then the filesystem, online (the kernel
/// asks for CAP_SYS_RESOURCE to grow ext4 and for CAP_SYS_ADMIN to grow
/// XFS; a privileged container has both). Never offline: the kubelet's
/// bind mount of a running instance keeps the filesystem alive after the
/// agent's own mount is gone, and checking or resizing it then would
/// corrupt it. Growing again to the same size changes nothing.
pub fn grow(dir: &Path, size: u64) -> Result<()> {
    let image = image_path(dir);
    let file = File::options()
        .write(true)
        .open(&image)
        .map_err(io(&image))?;
    if file.metadata().map_err(io(&image))?.len() < size {
        file.set_len(size).map_err(io(&image))?;
    }
    let device = mounted_device(dir)?;
    let loop_file = File::open(&device).map_err(io(&device))?;
    // SAFETY: LOOP_SET_CAPACITY takes no argument.
    if unsafe { libc::ioctl(loop_file.as_raw_fd(), LOOP_SET_CAPACITY, 0) } != 0 {
        return Err(io(&device)(std::io::Error::last_os_error()));
    }
    match filesystem_of(&image)? {
        Some(ImageFilesystem::Xfs) => run(Command::new("xfs_growfs").arg(dir))?,
        _ => run(Command::new("resize2fs").arg(&device))?,
    }
    tracing::info!(dir = %dir.display(), size, "volume grown");
    Ok(())
}

/// The image file's size: the volume's size as made or last grown.
pub fn image_size(dir: &Path) -> Result<u64> {
    let image = image_path(dir);
    Ok(std::fs::metadata(&image).map_err(io(&image))?.len())
}

/// Bytes the image takes on the node's disk (its allocated blocks).
pub fn allocated(dir: &Path) -> Result<u64> {
    let image = image_path(dir);
    match std::fs::metadata(&image) {
        Ok(meta) => Ok(meta.blocks() * 512),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(&image)(e)),
    }
}

/// The loop device mounted at `dir`, from the mount table.
fn mounted_device(dir: &Path) -> Result<PathBuf> {
    let table = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(table).map_err(io(table))?;
    let wanted = dir.to_string_lossy();
    text.lines()
        .rev()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some((*fields.get(4)?, *fields.get(dash + 2)?))
        })
        .find(|(mountpoint, _)| unescape(mountpoint) == wanted)
        .map(|(_, source)| PathBuf::from(source))
        .ok_or_else(|| Error::Agent(format!("no filesystem mounted at {wanted}")))
}

/// Mount table paths escape space, tab, newline and backslash in octal.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        match u8::from_str_radix(rest.get(at + 1..at + 4).unwrap_or(""), 8) {
            Ok(byte) => {
                out.push(byte as char);
                rest = &rest[at + 4..];
            }
            Err(_) => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LOOP_MAJOR: u32 = 7;

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>` (Linux 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// One attach at a time in this process: two volumes mounted at once
/// would be handed the same free device.
static ATTACHING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Attaches `image` to a free loop device, with autoclear (it detaches
/// when its filesystem is unmounted); returns the device's path and the
/// open device, to be held until the filesystem is mounted (autoclear acts
/// on the last close).
fn attach(image: &Path) -> Result<(PathBuf, File)> {
    let _one = ATTACHING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let control_path = Path::new("/dev/loop-control");
    let control = File::options()
        .read(true)
        .write(true)
        .open(control_path)
        .map_err(io(control_path))?;
    let backing = File::options()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io(image))?;
    let mut last = None;
    // Another process may take the free device first: try again.
    for _ in 0..32 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(io(control_path)(std::io::Error::last_os_error()));
        }
        let device = PathBuf::from(format!("/dev/loop{number}"));
        // A device made after this container started has no node in its /dev.
        if !device.exists() {
            let path = cstring(&device)?;
            let dev = libc::makedev(LOOP_MAJOR, number as u32);
            // SAFETY: a valid path; a block device node.
            if unsafe { libc::mknod(path.as_ptr(), libc::S_IFBLK | 0o660, dev) } != 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(io(&device)(error));
                }
            }
        }
        let loop_file = File::options()
            .read(true)
            .write(true)
            .open(&device)
            .map_err(io(&device))?;
        // SAFETY: zeroed C structs are valid; the name is NUL-terminated.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = backing.as_raw_fd() as u32;
        config.info.flags = LO_FLAGS_AUTOCLEAR;
        let name = image.as_os_str().as_encoded_bytes();
        let len = name.len().min(63);
        config.info.file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: a valid loop_config.
        if unsafe { libc::ioctl(loop_file.as_raw_fd(), LOOP_CONFIGURE, &config) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EBUSY) {
                last = Some(error);
                continue;
            }
            return Err(io(&device)(error));
        }
        return Ok((device, loop_file));
    }
    Err(Error::Agent(format!(
        "no free loop device for {}: {}",
        image.display(),
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// Detaches a loop device whose filesystem could not be mounted.
fn detach(device: &Path) {
    if let Ok(file) = File::open(device) {
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CLR_FD, 0) };
    }
}

fn cstring(path: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Agent(format!("a NUL byte in {}", path.display())))
}

fn run(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .map_err(|e| Error::Agent(format!("running {command:?}: {e}")))?;
    if !output.status.success() {
        return Err(Error::Agent(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_sits_beside_the_directory() {
        assert_eq!(
            image_path(Path::new("/base/ns/app#data#1")),
            Path::new("/base/ns/app#data#1.img")
        );
    }

    #[test]
    fn mount_table_escapes_are_read() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn an_image_is_formatted_once() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("v.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        assert_eq!(filesystem_of(&image).unwrap(), None);
        run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4"])
            .arg(&image))
        .unwrap();
        assert_eq!(filesystem_of(&image).unwrap(), Some(ImageFilesystem::Ext4));
        assert!(
            allocated(&dir.path().join("v")).unwrap() < 16 << 20,
            "sparse"
        );
    }

    /// Needs root (loop devices, mount): CI runs as root.
    #[test]
    fn a_volume_is_made_mounted_full_at_its_size_and_grown_while_mounted() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("ns").join("app#data#1");
        create(&dir, 32 << 20, ImageFilesystem::Ext4).unwrap();
        assert!(is_mounted(&dir).unwrap());
        create(&dir, 32 << 20, ImageFilesystem::Ext4).unwrap(); // again: nothing to do
        let fill = dir.join(DATA).join("fill");
        let error = std::fs::write(&fill, vec![0u8; 40 << 20]).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
        std::fs::remove_file(&fill).unwrap();
        std::fs::write(dir.join(DATA).join("kept"), "kept").unwrap();
        match grow(&dir, 64 << 20) {
            Ok(()) => {
                assert!(has_capability(CAP_SYS_RESOURCE));
                std::fs::write(&fill, vec![0u8; 40 << 20]).unwrap();
            }
            Err(error) => {
                // Online growth needs CAP_SYS_RESOURCE; without it the
                // volume stays as it was, mounted, its data intact.
                assert!(!has_capability(CAP_SYS_RESOURCE), "{error}");
                assert!(error.to_string().contains("resize2fs"), "{error}");
                assert!(is_mounted(&dir).unwrap());
                std::fs::write(&fill, vec![0u8; 20 << 20]).unwrap();
            }
        }
        assert_eq!(image_size(&dir).unwrap(), 64 << 20);
        let written = std::fs::metadata(&fill).unwrap().len();
        unmount(&dir).unwrap();
        assert!(!is_mounted(&dir).unwrap());
        assert!(!dir.join(DATA).exists(), "data lives only in the image");
        ensure_mounted(&dir).unwrap();
        assert_eq!(std::fs::metadata(&fill).unwrap().len(), written);
        assert_eq!(
            std::fs::read_to_string(dir.join(DATA).join("kept")).unwrap(),
            "kept"
        );
        unmount(&dir).unwrap();
    }

    /// Needs root and `mkfs.xfs`. XFS grows online with CAP_SYS_ADMIN,
    /// which root has where ext4's CAP_SYS_RESOURCE may be missing.
    #[test]
    fn an_xfs_volume_is_full_at_its_size_and_grows_while_mounted() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("ns").join("app#data#2");
        let size = ImageFilesystem::XFS_MINIMUM;
        create(&dir, size, ImageFilesystem::Xfs).unwrap();
        assert_eq!(
            filesystem_of(&image_path(&dir)).unwrap(),
            Some(ImageFilesystem::Xfs)
        );
        assert!(allocated(&dir).unwrap() < size / 4, "sparse");
        let fill = dir.join(DATA).join("fill");
        let error = std::fs::write(&fill, vec![0u8; size as usize]).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
        std::fs::remove_file(&fill).unwrap();
        std::fs::write(dir.join(DATA).join("kept"), "kept").unwrap();
        grow(&dir, 2 * size).unwrap();
        grow(&dir, 2 * size).unwrap(); // again: nothing to do
        std::fs::write(&fill, vec![0u8; size as usize]).unwrap();
        unmount(&dir).unwrap();
        ensure_mounted(&dir).unwrap();
        assert_eq!(std::fs::metadata(&fill).unwrap().len(), size);
        assert_eq!(
            std::fs::read_to_string(dir.join(DATA).join("kept")).unwrap(),
            "kept"
        );
        unmount(&dir).unwrap();
    }

    const CAP_SYS_RESOURCE: u32 = 24;

    fn has_capability(bit: u32) -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let effective = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
            .unwrap();
        effective & (1 << bit) != 0
    }
}
