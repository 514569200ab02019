//! Reading the files an operator names (the config, password files, CA files, the web config
//! and its certificate and key): regular files only, bounded in size, under a deadline.
//!
//! A FIFO nobody writes to, a device or a file on a hung network mount would otherwise block
//! `check-config`, a reload (and, through its lock, every later reload) and shutdown. So a file
//! is opened without blocking (`O_NONBLOCK`: a FIFO opens at once and is then refused) and
//! checked to be a regular file before a byte is read, and the open and read run on a thread of
//! their own that the caller stops waiting for at the deadline. That thread is never joined: a
//! read stuck in the kernel cannot hold up the runtime, a signal or the process's exit.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// How long one file may take to open and read: a local file takes microseconds, a healthy
/// network mount milliseconds.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reader threads alive at once (one per load in progress, and those stuck on a dead mount);
/// past it a read is refused at once rather than leave one more thread behind.
const MAX_READER_THREADS: usize = 64;
/// A reader only opens and reads into the heap.
const READER_STACK: usize = 64 * 1024;

static READER_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Reads files for one load (of a config, of a web config), one after the other on one
/// thread of its own. After one read timed out, the others of the same load are refused at
/// once: they most likely sit on the same dead mount, and each would add its own timeout.
#[derive(Debug)]
pub struct Reader {
    timeout: Duration,
    hung: Option<PathBuf>,
    read: fn(&Path, u64) -> io::Result<Vec<u8>>,
    /// Started on the first read; given up when a read hangs.
    worker: Option<Worker>,
}

/// The thread that reads: it takes jobs until its [`Reader`] drops the sender.
#[derive(Debug)]
struct Worker {
    jobs: mpsc::Sender<(PathBuf, u64)>,
    results: mpsc::Receiver<io::Result<Vec<u8>>>,
}

impl Default for Reader {
    fn default() -> Self {
        Reader::new()
    }
}

impl Reader {
    pub fn new() -> Reader {
        Reader {
            timeout: DEFAULT_READ_TIMEOUT,
            hung: None,
            read: read_regular,
            worker: None,
        }
    }

    /// Reads the whole of `path`, a regular file of at most `limit` bytes.
    pub fn read(&mut self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        if let Some(hung) = &self.hung {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("not read: {hung:?} did not answer earlier in this load"),
            ));
        }
        let worker = match self.worker.take() {
            Some(worker) => worker,
            None => Worker::start(self.read)?,
        };
        if worker.jobs.send((path.to_path_buf(), limit)).is_err() {
            return Err(io::Error::other("the reading thread failed"));
        }
        match worker.results.recv_timeout(self.timeout) {
            Ok(result) => {
                self.worker = Some(worker);
                result
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The worker is left to its stuck read; it ends if the read ever returns.
                self.hung = Some(path.to_path_buf());
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no answer within {} (a hung network mount?)",
                        humantime::format_duration(self.timeout)
                    ),
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(io::Error::other("the reading thread failed"))
            }
        }
    }
}

impl Worker {
    fn start(read: fn(&Path, u64) -> io::Result<Vec<u8>>) -> io::Result<Worker> {
        let slot = ReaderSlot::take()?;
        let (jobs, inbox) = mpsc::channel::<(PathBuf, u64)>();
        let (outbox, results) = mpsc::channel();
        std::thread::Builder::new()
            .name("file-read".into())
            .stack_size(READER_STACK)
            .spawn(move || {
                let _slot = slot;
                for (path, limit) in inbox {
                    if outbox.send(read(&path, limit)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Worker { jobs, results })
    }
}

/// Reads the whole of `path`, a regular file of at most `limit` bytes, within
/// [`DEFAULT_READ_TIMEOUT`].
pub fn read(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    Reader::new().read(path, limit)
}

/// One of the [`MAX_READER_THREADS`], given back when the thread ends.
struct ReaderSlot;

impl ReaderSlot {
    fn take() -> io::Result<ReaderSlot> {
        let before = READER_THREADS.fetch_add(1, Ordering::SeqCst);
        if before >= MAX_READER_THREADS {
            READER_THREADS.fetch_sub(1, Ordering::SeqCst);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("not read: {before} earlier file reads are still hanging"),
            ));
        }
        Ok(ReaderSlot)
    }
}

impl Drop for ReaderSlot {
    fn drop(&mut self) {
        READER_THREADS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Opens without blocking, refuses anything but a regular file, reads at most `limit` bytes.
fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "something else"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({what})"),
        ));
    }
    read_limited(file, limit)
}

fn read_limited(file: File, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    // The length in the metadata may be wrong (procfs says 0) or grow: count what is read.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn fifo(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        let status = Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(status.success());
        path
    }

    #[test]
    fn reads_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "hunter2\n").unwrap();
        assert_eq!(read(&path, 64).unwrap(), b"hunter2\n");
    }

    #[test]
    fn refuses_a_fifo_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo(dir.path(), "pipe");
        let e = read(&path, 64).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(e.to_string(), "not a regular file (a FIFO)");
    }

    #[test]
    fn refuses_devices_and_directories() {
        let e = read(Path::new("/dev/zero"), 64).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a device)");
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path(), 64).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a directory)");
    }

    #[test]
    fn refuses_a_file_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, [b'x'; 65]).unwrap();
        assert_eq!(
            read(&path, 64).unwrap_err().to_string(),
            "larger than 64 bytes"
        );
        assert_eq!(read(&path, 65).unwrap().len(), 65);
    }

    /// A blocking open of a FIFO stands in for a file on a hung mount: it blocks in the kernel
    /// until a writer shows up.
    fn blocking_read(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        read_limited(File::open(path)?, limit)
    }

    #[test]
    fn a_read_that_hangs_times_out_and_the_rest_of_the_load_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hung = fifo(dir.path(), "hung");
        let fine = dir.path().join("fine");
        std::fs::write(&fine, "ok").unwrap();
        let mut reader = Reader {
            timeout: Duration::from_millis(50),
            read: blocking_read,
            ..Reader::new()
        };
        let e = reader.read(&hung, 64).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            e.to_string(),
            "no answer within 50ms (a hung network mount?)"
        );
        let e = reader.read(&fine, 64).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("not read: {hung:?} did not answer earlier in this load")
        );

        // The next load starts afresh.
        let mut next = Reader {
            read: blocking_read,
            ..Reader::new()
        };
        assert_eq!(next.read(&fine, 64).unwrap(), b"ok");

        // Release the stuck thread: a writer lets its open return.
        drop(std::fs::OpenOptions::new().write(true).open(&hung).unwrap());
    }
}
