//! The file layer the store does all its I/O through: [`RealVfs`] for real
//! files, [`FaultyVfs`] to inject an fsync failure, a short write or a full
//! disk in tests.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// An open file, read and written by position so readers and the writer
/// never share a cursor.
pub trait VfsFile: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes some of `buf` at `offset` and says how much (may be short).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// Makes the data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Starts writing `len_bytes` at `offset` back to the disk without
    /// waiting (durability is still only what `sync_data` gives). Default:
    /// nothing.
    fn start_writeback(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        let _ = (offset, len_bytes);
        Ok(())
    }
    /// Writes `len_bytes` at `offset` back to the disk and waits for it
    /// (not durable: no metadata, no device cache flush; `sync_data` is still
    /// needed). For background writers that must keep little I/O in flight.
    /// Default: nothing.
    fn write_back(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        let _ = (offset, len_bytes);
        Ok(())
    }
    /// Cuts or extends the file to `len_bytes`.
    fn set_len(&self, len_bytes: u64) -> io::Result<()>;
    /// The file's length.
    fn len_bytes(&self) -> io::Result<u64>;
    /// When the file was last modified.
    fn modified(&self) -> io::Result<std::time::SystemTime>;

    /// Writes all of `buf` at `offset`, looping over short writes.
    fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(buf, offset) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
                Ok(written) => {
                    buf = &buf[written..];
                    offset += written as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// File-system operations the store needs.
pub trait Vfs: Send + Sync + 'static {
    /// Opens `path` for reading and writing, creating it when `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VfsFile>>;
    /// Opens `path` for reading only.
    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>>;
    /// Creates `path` and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealVfs;

struct RealFile(File);

impl RealFile {
    fn sync_file_range(&self, offset: u64, len_bytes: u64, flags: libc::c_uint) -> io::Result<()> {
        use std::os::unix::io::AsRawFd;
        let (Ok(offset), Ok(len_bytes)) = (i64::try_from(offset), i64::try_from(len_bytes)) else {
            return Ok(());
        };
        // SAFETY: a valid open descriptor; the call only starts or waits for I/O.
        let rc = unsafe { libc::sync_file_range(self.0.as_raw_fd(), offset, len_bytes, flags) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl VfsFile for RealFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        FileExt::write_at(&self.0, buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn start_writeback(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        self.sync_file_range(offset, len_bytes, libc::SYNC_FILE_RANGE_WRITE)
    }
    fn write_back(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        self.sync_file_range(
            offset,
            len_bytes,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    }
    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.0.set_len(len_bytes)
    }
    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn modified(&self) -> io::Result<std::time::SystemTime> {
        self.0.metadata()?.modified()
    }
}

impl Vfs for RealVfs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VfsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(RealFile(file)))
    }
    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        Ok(Arc::new(RealFile(File::open(path)?)))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for item in fs::read_dir(dir)? {
            if let Some(name) = item?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// What [`FaultyVfs`] is told to break. All switches are one-shot or
/// budget-based and shared by every file it opened.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next `sync_data` (or directory sync) fails with EIO.
    pub fail_next_sync: AtomicBool,
    /// The next write writes half its bytes and then fails with EIO.
    pub short_write_next: AtomicBool,
    /// When not `u64::MAX`: bytes that may still be written before ENOSPC.
    pub space_left_bytes: AtomicU64,
}

/// A [`Vfs`] over the real file system that injects the faults in [`Faults`].
#[derive(Clone)]
pub struct FaultyVfs {
    faults: Arc<Faults>,
}

impl Default for FaultyVfs {
    fn default() -> Self {
        FaultyVfs::new()
    }
}

impl FaultyVfs {
    /// A file system with no faults armed yet.
    pub fn new() -> FaultyVfs {
        let faults = Faults {
            space_left_bytes: AtomicU64::new(u64::MAX),
            ..Faults::default()
        };
        FaultyVfs {
            faults: Arc::new(faults),
        }
    }

    /// The switches, to arm faults while the store runs.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Makes the next sync fail.
    pub fn fail_next_sync(&self) {
        self.faults.fail_next_sync.store(true, Ordering::SeqCst);
    }

    /// Makes the next write stop half way with an error.
    pub fn short_write_next(&self) {
        self.faults.short_write_next.store(true, Ordering::SeqCst);
    }

    /// Lets only `bytes` more bytes be written before ENOSPC (`u64::MAX`: unlimited).
    pub fn set_space_left(&self, bytes: u64) {
        self.faults.space_left_bytes.store(bytes, Ordering::SeqCst);
    }

    fn check_sync(&self) -> io::Result<()> {
        if self.faults.fail_next_sync.swap(false, Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        Ok(())
    }
}

struct FaultyFile {
    inner: Arc<dyn VfsFile>,
    faults: Arc<Faults>,
}

impl VfsFile for FaultyFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        if self.faults.short_write_next.swap(false, Ordering::SeqCst) {
            let half = buf.len() / 2;
            self.inner.write_all_at(&buf[..half], offset)?;
            return Err(io::Error::from_raw_os_error(5)); // EIO after a partial write
        }
        let left = self.faults.space_left_bytes.load(Ordering::SeqCst);
        if left != u64::MAX {
            let allowed = (buf.len() as u64).min(left) as usize;
            self.faults
                .space_left_bytes
                .store(left - allowed as u64, Ordering::SeqCst);
            if allowed == 0 {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            return self.inner.write_at(&buf[..allowed], offset);
        }
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.faults.fail_next_sync.swap(false, Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5));
        }
        self.inner.sync_data()
    }
    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.inner.set_len(len_bytes)
    }
    fn len_bytes(&self) -> io::Result<u64> {
        self.inner.len_bytes()
    }
    fn modified(&self) -> io::Result<std::time::SystemTime> {
        self.inner.modified()
    }
}

impl Vfs for FaultyVfs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VfsFile>> {
        Ok(Arc::new(FaultyFile {
            inner: RealVfs.open(path, create)?,
            faults: self.faults.clone(),
        }))
    }
    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        RealVfs.open_read_only(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        RealVfs.create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        RealVfs.list(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealVfs.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealVfs.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check_sync()?;
        RealVfs.sync_dir(dir)
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync,
/// rename over `path`, fsync of the directory. A crash leaves either the old
/// file or the new one, never a mix.
pub fn write_atomically(vfs: &dyn Vfs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no directory"))?;
    let mut temporary = PathBuf::from(path);
    temporary.as_mut_os_string().push(".tmp");
    let file = vfs.open(&temporary, true)?;
    file.set_len(0)?;
    file.write_all_at(bytes, 0)?;
    file.sync_data()?;
    drop(file);
    vfs.rename(&temporary, path)?;
    vfs.sync_dir(dir)
}
