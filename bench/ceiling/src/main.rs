//! `ceiling`: the leanest three-member replication this machine can run.
//!
//! One thread per member, nothing handed between threads, no consensus. The
//! leader reads whatever client requests have arrived, writes them to its
//! file, sends them to both followers, fdatasyncs, and answers each request
//! once it and one follower hold it durably. A follower reads whatever has
//! arrived, checks every record's CRC, writes them, fdatasyncs once and
//! acknowledges the last index. Files are pre-written with zeros, as the
//! replica's segments are, and written over in a ring.
//!
//! No elections, no heartbeats, no backpressure, no limits: what this reaches
//! is an upper bound for any design with the replica's durability (one
//! fdatasync per batch on each member, a majority before the answer) on the
//! same machine and disk. Issue 17's targets are judged against it.
//!
//! ```text
//! ceiling [--in-flight 64] [--payload-bytes 1024] [--warmup-s 1] [--duration-s 8]
//!         [--no-sync] [--flusher] [--reader-thread] [--dir /tmp/ceiling] [--port 24910] [--json]
//! ceiling prepare [--dir D]      # pre-writes the three 64 MiB files only
//! ```
//!
//! `--flusher` and `--reader-thread` add the replica's two hand-offs (a
//! flusher thread per member; a thread that reads the sockets apart from the
//! one that decides), to measure what the thread structure alone costs.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Each member's file; records are written over it in a ring.
const FILE_BYTES: u64 = 64 << 20;
/// `length u32 | crc32c u32 | index u64`, then the payload.
const RECORD_HEADER_BYTES: usize = 16;
/// Leader to follower: `records length u32 | last index u64`, then records.
const MESSAGE_HEADER_BYTES: usize = 12;

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("leader") => Options::parse(&args[1..]).and_then(|o| leader(&o)),
        Some("follower") => Options::parse(&args[1..]).and_then(|o| follower(&o)),
        Some("prepare") => Options::parse(&args[1..]).and_then(|o| prepare(&o).map(drop)),
        _ => Options::parse(&args).and_then(|o| run(&o)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ceiling: {err}");
            ExitCode::FAILURE
        }
    }
}

struct Options {
    in_flight: usize,
    payload_bytes: usize,
    duration_s: u64,
    warmup_s: u64,
    json: bool,
    sync: bool,
    flusher: bool,
    reader: bool,
    dir: PathBuf,
    port: u16,
    file: PathBuf,
    followers: Vec<u16>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options {
            in_flight: 64,
            payload_bytes: 1024,
            duration_s: 8,
            warmup_s: 1,
            json: false,
            sync: true,
            flusher: false,
            reader: false,
            dir: PathBuf::from("/tmp/ceiling"),
            port: 24_910,
            file: PathBuf::new(),
            followers: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--in-flight" => options.in_flight = number(flag, &value()?, 1)?,
                "--payload-bytes" => options.payload_bytes = number(flag, &value()?, 1)?,
                "--duration-s" => options.duration_s = number(flag, &value()?, 1)?,
                "--warmup-s" => options.warmup_s = number(flag, &value()?, 0)?,
                "--json" => options.json = true,
                "--no-sync" => options.sync = false,
                "--flusher" => options.flusher = true,
                "--reader-thread" => options.reader = true,
                "--dir" => options.dir = PathBuf::from(value()?),
                "--port" => options.port = number(flag, &value()?, 1)?,
                "--file" => options.file = PathBuf::from(value()?),
                "--followers" => {
                    options.followers = value()?
                        .split(',')
                        .map(|port| number(flag, port, 1))
                        .collect::<Result<_>>()?
                }
                other => {
                    return Err(format!(
                        "unknown argument {other} (see the top of src/main.rs)"
                    ))
                }
            }
        }
        Ok(options)
    }
}

/// `value` as a number of at least `least`, or an error naming `flag`.
fn number<T: std::str::FromStr + PartialOrd + From<u8>>(
    flag: &str,
    value: &str,
    least: u8,
) -> Result<T> {
    match value.parse::<T>() {
        Ok(n) if n >= T::from(least) => Ok(n),
        _ => Err(format!(
            "{flag} takes a whole number of at least {least}, not {value:?}"
        )),
    }
}

/// Starts two followers and a leader as processes, drives them from this
/// one, and prints what the client saw.
fn run(options: &Options) -> Result<()> {
    let files = prepare(options)?;
    let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
    let base = options.port;
    let mut sync: Vec<&str> = Vec::new();
    if !options.sync {
        sync.push("--no-sync");
    }
    if options.flusher {
        sync.push("--flusher");
    }
    if options.reader {
        sync.push("--reader-thread");
    }
    let mut children = Children(Vec::new());
    for (i, port) in [(1, base + 1), (2, base + 2)] {
        children
            .0
            .push(spawn(&exe, "follower", port, &files[i], &sync, &[])?);
    }
    let followers = format!("{},{}", base + 1, base + 2);
    children.0.push(spawn(
        &exe,
        "leader",
        base,
        &files[0],
        &sync,
        &["--followers", &followers],
    )?);
    let stream = connect(base)?;
    // Pid files as `bench/compare/run.sh` expects them, for its CPU and
    // memory probe: n0 is the leader.
    for (i, child) in children.0.iter().rev().enumerate() {
        let pid_file = options.dir.join(format!("n{i}.pid"));
        std::fs::write(&pid_file, child.id().to_string())
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
    }
    let (count, mut latencies_us) = client(stream, options)?;
    latencies_us.sort_unstable();
    let at = |q: f64| {
        let i =
            ((latencies_us.len() as f64 * q) as usize).min(latencies_us.len().saturating_sub(1));
        latencies_us.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    let appends_per_s = count as f64 / options.duration_s as f64;
    let durability = if options.sync {
        "fdatasync"
    } else {
        "page cache"
    };
    if options.json {
        // The fields of `dledger-replica bench --json`, so the comparison's
        // report reads both alike.
        println!(
            concat!(
                "{{\"system\":\"ceiling\",\"version\":\"bench/ceiling\",\"durability\":\"{}\",",
                "\"client\":\"ceiling (one thread, pipelined)\",\"payload_bytes\":{},\"in_flight\":{},",
                "\"batch\":1,\"rate\":0,\"duration_s\":{:.1},\"ops\":{},\"throughput_ops\":{:.1},",
                "\"throughput_mb_s\":{:.3},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},",
                "\"max_ms\":{:.3},\"errors\":0}}"
            ),
            durability,
            options.payload_bytes,
            options.in_flight,
            options.duration_s as f64,
            count,
            appends_per_s,
            appends_per_s * options.payload_bytes as f64 / 1e6,
            at(0.50),
            at(0.99),
            at(0.999),
            at(1.0),
        );
    } else {
        println!(
            "ceiling {} B x {} in flight, {}{}{}: {:.0} appends/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            options.payload_bytes,
            options.in_flight,
            durability,
            if options.flusher { ", flusher thread" } else { "" },
            if options.reader { ", reader thread" } else { "" },
            appends_per_s,
            at(0.50),
            at(0.99),
            at(1.0),
        );
    }
    Ok(())
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        // The leader first: its followers then see the end of its stream.
        for child in self.0.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(
    exe: &Path,
    role: &str,
    port: u16,
    file: &Path,
    sync: &[&str],
    extra: &[&str],
) -> Result<Child> {
    Command::new(exe)
        .arg(role)
        .args(["--port", &port.to_string(), "--file"])
        .arg(file)
        .args(sync)
        .args(extra)
        .spawn()
        .map_err(|e| format!("starting the {role}: {e}"))
}

/// Makes the three members' files under `--dir`, once.
fn prepare(options: &Options) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&options.dir).map_err(|e| format!("{}: {e}", options.dir.display()))?;
    let files: Vec<PathBuf> = (0..3)
        .map(|i| options.dir.join(format!("member-{i}")))
        .collect();
    for file in &files {
        prewrite(file)?;
    }
    Ok(files)
}

/// Zero-fills and syncs the file once, so later fdatasyncs write no metadata.
fn prewrite(path: &Path) -> Result<()> {
    if std::fs::metadata(path)
        .map(|m| m.len() == FILE_BYTES)
        .unwrap_or(false)
    {
        return Ok(());
    }
    let mut file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..FILE_BYTES / zeros.len() as u64 {
        file.write_all(&zeros)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    file.sync_all()
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn connect(port: u16) -> Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                return Ok(stream);
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("connecting to {port}: {e}")),
        }
    }
}

fn accept_one(port: u16) -> Result<TcpStream> {
    let listener =
        TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("binding {port}: {e}"))?;
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("accepting on {port}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A member's file, written over in a ring and synced after each write
/// unless `--no-sync`.
struct Ring {
    file: File,
    offset: u64,
    sync: bool,
}

impl Ring {
    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let at = ring_offset(&mut self.offset, bytes.len());
        self.file
            .write_all_at(bytes, at)
            .map_err(|e| format!("write: {e}"))?;
        if self.sync {
            self.file
                .sync_data()
                .map_err(|e| format!("fdatasync: {e}"))?;
        }
        Ok(())
    }
}

/// Where the next `bytes` go in the ring.
fn ring_offset(offset: &mut u64, bytes: usize) -> u64 {
    if *offset + bytes as u64 > FILE_BYTES {
        *offset = 0;
    }
    let at = *offset;
    *offset += bytes as u64;
    at
}

fn leader(options: &Options) -> Result<()> {
    let mut disk = Disk::open(options)?;
    let mut peers = Vec::new();
    for port in &options.followers {
        let peer = connect(*port)?;
        peer.set_nonblocking(true).map_err(|e| e.to_string())?;
        peers.push(peer);
    }
    let mut client = accept_one(options.port)?;
    client.set_nonblocking(true).map_err(|e| e.to_string())?;

    let sockets = std::iter::once(&client)
        .chain(&peers)
        .map(|s| s.try_clone().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>>>()?;
    let mut reads = Reads::new(sockets, options.reader)?;
    let mut requests = Buffer::default();
    let mut acks: Vec<Buffer> = peers.iter().map(|_| Buffer::default()).collect();
    let mut matched = vec![0u64; peers.len()];
    let (mut last, mut answered) = (0u64, 0u64);
    let mut message = Vec::with_capacity(1 << 20);
    let mut answers = Vec::new();
    let mut fds = poll_set(reads.fds().into_iter().chain(disk.completions()));
    loop {
        poll(&mut fds)?;
        reads.take();
        if reads.fill(0, &mut requests)? {
            return Ok(());
        }
        message.clear();
        message.resize(MESSAGE_HEADER_BYTES, 0);
        while let Some(payload) = requests.frame() {
            last += 1;
            let crc = crc32c::crc32c(payload);
            message.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            message.extend_from_slice(&crc.to_le_bytes());
            message.extend_from_slice(&last.to_le_bytes());
            message.extend_from_slice(payload);
        }
        requests.compact();
        if message.len() > MESSAGE_HEADER_BYTES {
            let records = (message.len() - MESSAGE_HEADER_BYTES) as u32;
            message[0..4].copy_from_slice(&records.to_le_bytes());
            message[4..12].copy_from_slice(&last.to_le_bytes());
            for peer in &mut peers {
                write_all(peer, &message)?;
            }
            disk.write(&message[MESSAGE_HEADER_BYTES..], last)?;
        }
        for (i, buffer) in acks.iter_mut().enumerate() {
            reads.fill(1 + i, buffer)?;
        }
        for (buffer, matched) in acks.iter_mut().zip(&mut matched) {
            while let Some(index) = buffer.take_u64() {
                *matched = (*matched).max(index);
            }
            buffer.compact();
        }
        let mut indexes = [disk.durable()?, matched[0], matched[1]];
        indexes.sort_unstable();
        let commit = indexes[1];
        if commit > answered {
            answers.clear();
            for index in answered + 1..=commit {
                answers.extend_from_slice(&index.to_le_bytes());
            }
            write_all(&mut client, &answers)?;
            answered = commit;
        }
    }
}

fn follower(options: &Options) -> Result<()> {
    let mut disk = Disk::open(options)?;
    let mut leader = accept_one(options.port)?;
    leader.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut reads = Reads::new(
        vec![leader.try_clone().map_err(|e| e.to_string())?],
        options.reader,
    )?;
    let mut buffer = Buffer::default();
    let mut acknowledged = 0u64;
    let mut fds = poll_set(reads.fds().into_iter().chain(disk.completions()));
    loop {
        poll(&mut fds)?;
        reads.take();
        if reads.fill(0, &mut buffer)? {
            return Ok(());
        }
        while let Some((last, records)) = buffer.message() {
            check(records)?;
            disk.write(records, last)?;
        }
        buffer.compact();
        let durable = disk.durable()?;
        if durable > acknowledged {
            write_all(&mut leader, &durable.to_le_bytes())?;
            acknowledged = durable;
        }
    }
}

/// The poll set that waits for any of `fds` to be readable.
fn poll_set(fds: impl IntoIterator<Item = i32>) -> Vec<libc::pollfd> {
    fds.into_iter()
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect()
}

fn poll(fds: &mut [libc::pollfd]) -> Result<()> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd.
    if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
        return Err(format!("poll: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Where a member's socket reads happen: on its one thread, or (with
/// `--reader-thread`, the replica's network thread before its raft loop) on
/// a reader thread that hands the bytes over and wakes the member's thread
/// through a pipe.
enum Reads {
    Direct(Vec<TcpStream>),
    Reader {
        inbox: Arc<Mutex<Vec<Vec<u8>>>>,
        wake: File,
        taken: Vec<Vec<u8>>,
    },
}

impl Reads {
    fn new(sockets: Vec<TcpStream>, reader: bool) -> Result<Reads> {
        if !reader {
            return Ok(Reads::Direct(sockets));
        }
        let (wake, mut signal) = pipe()?;
        let sockets_len = sockets.len();
        let inbox = Arc::new(Mutex::new(vec![Vec::new(); sockets_len]));
        let shared = inbox.clone();
        std::thread::spawn(move || {
            let mut sockets = sockets;
            let mut fds = poll_set(sockets.iter().map(|s| s.as_raw_fd()));
            let mut bytes = vec![0u8; 256 << 10];
            loop {
                if poll(&mut fds).is_err() {
                    std::process::exit(1);
                }
                for (i, socket) in sockets.iter_mut().enumerate() {
                    loop {
                        match socket.read(&mut bytes) {
                            Ok(0) => std::process::exit(0),
                            Ok(n) => {
                                let mut inbox = shared.lock().unwrap_or_else(|e| e.into_inner());
                                let was_empty = inbox.iter().all(Vec::is_empty);
                                inbox[i].extend_from_slice(&bytes[..n]);
                                drop(inbox);
                                if was_empty && signal.write_all(&[1]).is_err() {
                                    std::process::exit(1);
                                }
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(_) => std::process::exit(1),
                        }
                    }
                }
            }
        });
        let taken = vec![Vec::new(); sockets_len];
        Ok(Reads::Reader { inbox, wake, taken })
    }

    fn fds(&self) -> Vec<i32> {
        match self {
            Reads::Direct(sockets) => sockets.iter().map(|s| s.as_raw_fd()).collect(),
            Reads::Reader { wake, .. } => vec![wake.as_raw_fd()],
        }
    }

    /// Takes everything the reader thread has handed over, from every
    /// source at once: taking one source at a time could miss a wake-up.
    fn take(&mut self) {
        if let Reads::Reader { inbox, wake, taken } = self {
            let mut drained = [0u8; 256];
            while matches!(wake.read(&mut drained), Ok(n) if n > 0) {}
            let mut inbox = inbox.lock().unwrap_or_else(|e| e.into_inner());
            for (from, to) in inbox.iter_mut().zip(taken.iter_mut()) {
                to.extend_from_slice(from);
                from.clear();
            }
        }
    }

    /// Adds what source `i` has to `buffer`; true at its end of stream.
    fn fill(&mut self, i: usize, buffer: &mut Buffer) -> Result<bool> {
        match self {
            Reads::Direct(sockets) => buffer.fill(&mut sockets[i]),
            Reads::Reader { taken, .. } => {
                buffer.extend(&taken[i]);
                taken[i].clear();
                Ok(false)
            }
        }
    }
}

fn pipe() -> Result<(File, File)> {
    let mut ends = [0; 2];
    // SAFETY: `ends` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 just made both descriptors, and nothing else owns them.
    Ok(unsafe { (File::from_raw_fd(ends[0]), File::from_raw_fd(ends[1])) })
}

/// A member's file: written and synced on the caller's thread, or (with
/// `--flusher`, the replica's structure) handed to a flusher thread that
/// writes and syncs everything queued at once and reports through a pipe.
enum Disk {
    Inline {
        ring: Ring,
        durable: u64,
    },
    Flusher {
        queue: Arc<Queue>,
        done: File,
        durable: u64,
    },
}

#[derive(Default)]
struct Queue {
    pending: Mutex<(Vec<u8>, u64)>,
    ready: Condvar,
}

impl Disk {
    fn open(options: &Options) -> Result<Disk> {
        let mut ring = Ring {
            file: open(&options.file)?,
            offset: 0,
            sync: options.sync,
        };
        if !options.flusher {
            return Ok(Disk::Inline { ring, durable: 0 });
        }
        let (done, mut report) = pipe()?;
        let queue = Arc::new(Queue::default());
        let flusher = queue.clone();
        std::thread::spawn(move || {
            let mut batch = Vec::new();
            loop {
                let last = {
                    let mut pending = flusher.pending.lock().unwrap_or_else(|e| e.into_inner());
                    while pending.0.is_empty() {
                        pending = flusher
                            .ready
                            .wait(pending)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                    std::mem::swap(&mut batch, &mut pending.0);
                    pending.1
                };
                let reported = ring.append(&batch).and_then(|()| {
                    report
                        .write_all(&last.to_le_bytes())
                        .map_err(|e| format!("reporting: {e}"))
                });
                if let Err(e) = reported {
                    eprintln!("ceiling: flusher: {e}");
                    std::process::exit(1);
                }
                batch.clear();
            }
        });
        Ok(Disk::Flusher {
            queue,
            done,
            durable: 0,
        })
    }

    fn completions(&self) -> Option<i32> {
        match self {
            Disk::Inline { .. } => None,
            Disk::Flusher { done, .. } => Some(done.as_raw_fd()),
        }
    }

    fn write(&mut self, records: &[u8], last: u64) -> Result<()> {
        match self {
            Disk::Inline { ring, durable } => {
                ring.append(records)?;
                *durable = last;
            }
            Disk::Flusher { queue, .. } => {
                let mut pending = queue.pending.lock().unwrap_or_else(|e| e.into_inner());
                let was_empty = pending.0.is_empty();
                pending.0.extend_from_slice(records);
                pending.1 = last;
                if was_empty {
                    queue.ready.notify_one();
                }
            }
        }
        Ok(())
    }

    /// The last index written and synced, taking the flusher's reports.
    fn durable(&mut self) -> Result<u64> {
        match self {
            Disk::Inline { durable, .. } => Ok(*durable),
            Disk::Flusher { done, durable, .. } => {
                let mut reports = [0u8; 4096];
                loop {
                    match done.read(&mut reports) {
                        Ok(n) if n > 0 => {
                            // Reports are 8 bytes and a pipe write that small is atomic.
                            if let Some(report) = reports[..n].chunks_exact(8).last() {
                                *durable =
                                    u64::from_le_bytes(report.try_into().unwrap_or_default());
                            }
                        }
                        Ok(_) => return Err("the flusher stopped".into()),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(*durable),
                        Err(e) => return Err(format!("reading the flusher's reports: {e}")),
                    }
                }
            }
        }
    }
}

/// Checks every record's CRC, as the replica's followers decode and check
/// what they are sent.
fn check(mut records: &[u8]) -> Result<()> {
    while !records.is_empty() {
        let length = u32_at(records, 0) as usize;
        let payload = records
            .get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + length)
            .ok_or("a record runs past its message")?;
        if crc32c::crc32c(payload) != u32_at(records, 4) {
            return Err("a record's CRC does not match".into());
        }
        records = &records[RECORD_HEADER_BYTES + length..];
    }
    Ok(())
}

/// Keeps `in_flight` requests outstanding for the warm-up and the measured
/// window; returns the answers counted in the window and their latencies.
fn client(mut stream: TcpStream, options: &Options) -> Result<(u64, Vec<u64>)> {
    let mut request = (options.payload_bytes as u32).to_le_bytes().to_vec();
    request.resize(4 + options.payload_bytes, 0x5a);
    let start = Instant::now() + Duration::from_secs(options.warmup_s);
    let end = start + Duration::from_secs(options.duration_s);
    let mut sent: VecDeque<Instant> = VecDeque::new();
    let mut outgoing = Vec::new();
    let mut answers = Buffer::default();
    let mut latencies_us = Vec::new();
    let mut count = 0u64;
    for _ in 0..options.in_flight {
        outgoing.extend_from_slice(&request);
        sent.push_back(Instant::now());
    }
    stream
        .write_all(&outgoing)
        .map_err(|e| format!("sending: {e}"))?;
    while !sent.is_empty() {
        if answers.fill_blocking(&mut stream)? {
            return Err("the leader closed the connection".into());
        }
        let now = Instant::now();
        outgoing.clear();
        while answers.take_u64().is_some() {
            let sent_at = sent.pop_front().ok_or("an answer nobody asked for")?;
            if sent_at >= start && now < end {
                count += 1;
                latencies_us.push(now.duration_since(sent_at).as_micros() as u64);
            }
            if now < end {
                outgoing.extend_from_slice(&request);
                sent.push_back(now);
            }
        }
        answers.compact();
        if !outgoing.is_empty() {
            stream
                .write_all(&outgoing)
                .map_err(|e| format!("sending: {e}"))?;
        }
    }
    Ok((count, latencies_us))
}

/// Bytes read from one socket and not yet parsed.
struct Buffer {
    bytes: Vec<u8>,
    filled: usize,
    read: usize,
}

impl Default for Buffer {
    fn default() -> Buffer {
        Buffer {
            bytes: vec![0; 4 << 20],
            filled: 0,
            read: 0,
        }
    }
}

impl Buffer {
    /// Reads what the nonblocking socket has; true at end of stream.
    fn fill(&mut self, socket: &mut TcpStream) -> Result<bool> {
        loop {
            match self.read_some(socket) {
                Ok(0) => return Ok(true),
                Ok(_) if self.filled < self.bytes.len() => {}
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(format!("reading: {e}")),
            }
        }
    }

    /// Waits for at least one byte; true at end of stream.
    fn fill_blocking(&mut self, socket: &mut TcpStream) -> Result<bool> {
        self.read_some(socket)
            .map(|n| n == 0)
            .map_err(|e| format!("reading: {e}"))
    }

    fn read_some(&mut self, socket: &mut TcpStream) -> std::io::Result<usize> {
        if self.filled == self.bytes.len() {
            let grown = self.bytes.len() * 2;
            self.bytes.resize(grown, 0);
        }
        let n = socket.read(&mut self.bytes[self.filled..])?;
        self.filled += n;
        Ok(n)
    }

    fn unread(&self) -> &[u8] {
        &self.bytes[self.read..self.filled]
    }

    /// A client request's payload: `length u32`, then the payload.
    fn frame(&mut self) -> Option<&[u8]> {
        let unread = self.unread();
        if unread.len() < 4 || unread.len() < 4 + u32_at(unread, 0) as usize {
            return None;
        }
        let start = self.read + 4;
        self.read = start + u32_at(unread, 0) as usize;
        Some(&self.bytes[start..self.read])
    }

    /// A leader's message: its last index and its records.
    fn message(&mut self) -> Option<(u64, &[u8])> {
        let unread = self.unread();
        if unread.len() < MESSAGE_HEADER_BYTES {
            return None;
        }
        let length = u32_at(unread, 0) as usize;
        if unread.len() < MESSAGE_HEADER_BYTES + length {
            return None;
        }
        let last = u64::from_le_bytes(unread[4..12].try_into().ok()?);
        let start = self.read + MESSAGE_HEADER_BYTES;
        self.read = start + length;
        Some((last, &self.bytes[start..self.read]))
    }

    fn take_u64(&mut self) -> Option<u64> {
        let value = u64::from_le_bytes(self.unread().get(..8)?.try_into().ok()?);
        self.read += 8;
        Some(value)
    }

    fn extend(&mut self, bytes: &[u8]) {
        if self.filled + bytes.len() > self.bytes.len() {
            self.bytes
                .resize((self.filled + bytes.len()).max(self.bytes.len() * 2), 0);
        }
        self.bytes[self.filled..self.filled + bytes.len()].copy_from_slice(bytes);
        self.filled += bytes.len();
    }

    fn compact(&mut self) {
        self.bytes.copy_within(self.read..self.filled, 0);
        self.filled -= self.read;
        self.read = 0;
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Writes all of `bytes` to a nonblocking socket, waiting when it is full.
fn write_all(socket: &mut TcpStream, mut bytes: &[u8]) -> Result<()> {
    while !bytes.is_empty() {
        match socket.write(bytes) {
            Ok(0) => return Err("the peer closed the connection".into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let mut fd = libc::pollfd {
                    fd: socket.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut fd, 1, -1) };
            }
            Err(e) => return Err(format!("writing: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(bytes: &[u8]) -> Buffer {
        let mut buffer = Buffer::default();
        buffer.extend(bytes);
        buffer
    }

    #[test]
    fn a_request_is_taken_only_once_all_of_it_has_arrived() {
        let mut bytes = 3u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"ab");
        let mut requests = buffer(&bytes);
        assert_eq!(requests.frame(), None);
        requests.extend(b"c");
        assert_eq!(requests.frame(), Some(&b"abc"[..]));
        assert_eq!(requests.frame(), None);
        requests.compact();
        assert_eq!(requests.unread(), b"");
    }

    #[test]
    fn a_message_carries_its_last_index_and_records_that_pass_the_check() {
        let payload = b"entry";
        let mut records = (payload.len() as u32).to_le_bytes().to_vec();
        records.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        records.extend_from_slice(&7u64.to_le_bytes());
        records.extend_from_slice(payload);
        let mut message = (records.len() as u32).to_le_bytes().to_vec();
        message.extend_from_slice(&7u64.to_le_bytes());
        message.extend_from_slice(&records);
        let mut incoming = buffer(&message[..message.len() - 1]);
        assert!(incoming.message().is_none());
        incoming.extend(&message[message.len() - 1..]);
        let (last, got) = incoming.message().expect("a whole message");
        assert_eq!(last, 7);
        assert_eq!(got, &records[..]);
        assert_eq!(check(got), Ok(()));
        let mut damaged = records.clone();
        *damaged.last_mut().expect("a payload byte") ^= 1;
        assert!(check(&damaged).is_err());
        assert!(check(&records[..records.len() - 1]).is_err());
    }

    #[test]
    fn acknowledgements_are_read_eight_bytes_at_a_time() {
        let mut acks = buffer(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0]);
        assert_eq!(acks.take_u64(), Some(1));
        assert_eq!(acks.take_u64(), None);
        acks.compact();
        acks.extend(&[0, 0, 0, 0, 0]);
        assert_eq!(acks.take_u64(), Some(2));
    }

    #[test]
    fn bad_arguments_are_refused_naming_the_flag() {
        let parse =
            |args: &[&str]| Options::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        let options =
            parse(&["--in-flight", "16", "--followers", "1,2", "--no-sync"]).expect("valid");
        assert_eq!(
            (options.in_flight, options.followers, options.sync),
            (16, vec![1, 2], false)
        );
        for (args, named) in [
            (&["--in-flight", "0"][..], "--in-flight"),
            (&["--in-flight", "many"][..], "--in-flight"),
            (&["--duration-s"][..], "--duration-s"),
            (&["--followers", "1,x"][..], "--followers"),
            (&["--fast"][..], "--fast"),
        ] {
            let err = parse(args).err().expect("refused");
            assert!(err.contains(named), "{args:?}: {err}");
        }
    }

    #[test]
    fn the_ring_starts_over_when_a_write_would_pass_the_end_of_the_file() {
        let mut offset = FILE_BYTES - 10;
        assert_eq!(ring_offset(&mut offset, 10), FILE_BYTES - 10);
        assert_eq!(offset, FILE_BYTES);
        assert_eq!(ring_offset(&mut offset, 1), 0);
        assert_eq!(offset, 1);
    }
}
